"""Map-style datasets read from annotation files (``{"annotations": [...]}`` JSON)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset, default_collate


class BaseDataset(Dataset):
    """Annotations from JSON files, each entry tagged with an ``instance_id`` (its index)."""

    def __init__(
        self,
        vis_processor: Callable | None = None,
        text_processor: Callable | None = None,
        vis_root: str | None = None,
        ann_paths: Sequence[str] = (),
    ) -> None:
        self.vis_root = vis_root
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.ann_paths = list(ann_paths)
        self.annotation: list[dict[str, Any]] = []
        for ann_path in ann_paths:
            self.annotation.extend(self._read_annotations(ann_path))
        self._add_instance_ids()

    @staticmethod
    def _read_annotations(ann_path: str) -> list[dict[str, Any]]:
        try:
            with open(ann_path, encoding="utf-8") as f:
                content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"Annotation file {ann_path} is not valid JSON: {err}") from err
        if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
            raise ValueError(
                f'Annotation file {ann_path} must hold {{"annotations": [...]}} '
                '(a list of {"image_id": ..., "caption": ...})'
            )
        return content["annotations"]

    def __len__(self) -> int:
        return len(self.annotation)

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(samples)

    def set_processors(self, vis_processor: Callable, text_processor: Callable) -> None:
        self.vis_processor = vis_processor
        self.text_processor = text_processor

    def _add_instance_ids(self, key: str = "instance_id") -> None:
        for idx, ann in enumerate(self.annotation):
            ann[key] = str(idx)

    def image_path(self, image_id: Any) -> str:
        return os.path.join(self.vis_root or "", f"{image_id}.jpg")

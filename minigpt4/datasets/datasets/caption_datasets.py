"""Image-caption map-style datasets: annotations ``{"image_id", "caption"}``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from minigpt4.datasets.datasets.base_dataset import BaseDataset


class CaptionDataset(BaseDataset):
    """Adds ``img_ids``: each distinct ``image_id`` -> its rank of first appearance."""

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_paths: Sequence[str],
    ) -> None:
        super().__init__(vis_processor, text_processor, vis_root, ann_paths)
        self.img_ids: dict[Any, int] = {}
        for index, ann in enumerate(self.annotation):
            if "image_id" not in ann or "caption" not in ann:
                raise ValueError(
                    f"Annotation {index} in {list(ann_paths)} lacks 'image_id' or 'caption': {ann}"
                )
            self.img_ids.setdefault(ann["image_id"], len(self.img_ids))

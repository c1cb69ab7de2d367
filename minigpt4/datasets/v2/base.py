"""What every MiniGPT-v2 training dataset shares: checked records, images read with skips."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, default_collate

from minigpt4.datasets.datasets.readable_images import SkipCounter, first_readable


class RecordError(ValueError):
    """A record of an annotation file that lacks a field or has one of the wrong type."""


def read_json(path: str, dataset: str) -> Any:
    """The content of the JSON file at ``path``; errors name the dataset and the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset '{dataset}': annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"dataset '{dataset}': {path} is not valid JSON: {err}") from err


def check_record(
    record: Any, fields: dict[str, type | tuple[type, ...]], where: str
) -> dict[str, Any]:
    """``record`` itself, once it is a dict holding every field with its type; else a
    :class:`RecordError` that names ``where`` (file and record) and the field."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected an object, got {type(record).__name__}")
    for field, kind in fields.items():
        if field not in record:
            raise RecordError(f"{where}: missing field '{field}' (has {sorted(record)})")
        if not isinstance(record[field], kind):
            raise RecordError(
                f"{where}: field '{field}' is {type(record[field]).__name__} {record[field]!r}, "
                f"expected {_kind_name(kind)}"
            )
    return record


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def check_list(content: Any, path: str, dataset: str, what: str = "a list of records") -> list:
    if not isinstance(content, list):
        raise ValueError(
            f"dataset '{dataset}': {path} must hold {what}, got {type(content).__name__}"
        )
    if not content:
        raise ValueError(f"dataset '{dataset}': {path} holds no records")
    return content


class V2ImageDataset(Dataset):
    """Records with one image each; a subclass says where the image is and what text it makes.

    ``__getitem__`` reads the record's image (an unreadable one is skipped for the next record,
    with a counted warning), then :meth:`texts` draws the text with Python's ``random`` in the
    original's order, so the same random state gives the original's sample.
    """

    def __init__(
        self,
        name: str,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        records: Sequence[Any],
    ) -> None:
        self.name = name
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.vis_root = vis_root
        self.records = list(records)
        self.skips = SkipCounter(name)

    def __len__(self) -> int:
        return len(self.records)

    def image_file(self, record: Any) -> str:
        """The image's path relative to ``vis_root``."""
        raise NotImplementedError

    def texts(self, record: Any, image: Image.Image) -> dict[str, Any]:
        """The sample's text fields (``instruction_input``/``answer`` or ``conv_q``/``conv_a``)."""
        raise NotImplementedError

    def image_path(self, record: Any) -> str:
        return os.path.join(self.vis_root, self.image_file(record))

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, image = first_readable(
            self.records, index, self.image_path, self.skips, where=self.vis_root
        )
        processed = self.vis_processor(image) if self.vis_processor else image
        return {"image": processed, **self.texts(record, image)}

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(samples)

    def process_text(self, text: str) -> str:
        return self.text_processor(text) if self.text_processor else text


class JsonListDataset(V2ImageDataset):
    """Records from one file holding a JSON list (``ann_path``), each checked by :meth:`check`
    (an error names the file and the record)."""

    default_name = ""

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_path: str,
        name: str | None = None,
    ) -> None:
        name = name or self.default_name
        records = check_list(read_json(ann_path, name), ann_path, name)
        for i, record in enumerate(records):
            self.check(record, f"dataset '{name}': {ann_path} record {i}")
        super().__init__(name, vis_processor, text_processor, vis_root, records)

    def check(self, record: Any, where: str) -> None:
        """Raise :class:`RecordError` naming ``where`` unless ``record`` has this layout."""
        raise NotImplementedError

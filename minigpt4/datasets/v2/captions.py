"""Short captions: COCO (Karpathy's train split) and TextCaps, ``[caption] <template>``."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from minigpt4.datasets.v2.base import V2ImageDataset, check_list, check_record, read_json
from minigpt4.datasets.v2.templates import CAPTION_POOL, CAPTION_TAG, image_instruction
from minigpt4.datasets.v2.vqa import read_lavis_annotations


def caption_instruction() -> str:
    return image_instruction(CAPTION_TAG.format(random.choice(CAPTION_POOL)))


class COCOCapDataset(V2ImageDataset):
    """``coco_karpathy_train.json`` (``image``, ``caption``, ``image_id``); only records whose
    ``image`` contains ``train`` are kept, as the original does; images by base name."""

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_paths: Sequence[str],
        name: str = "coco_caption",
    ) -> None:
        records = read_lavis_annotations(ann_paths, name, {"image": str, "caption": str})
        train = [r for r in records if "train" in r["image"]]
        if not train:
            raise ValueError(f"dataset '{name}': no record of {ann_paths} is a train image")
        super().__init__(name, vis_processor, text_processor, vis_root, train)

    def image_file(self, record: dict[str, Any]) -> str:
        return record["image"].split("/")[-1]

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        caption = self.process_text(record["caption"])
        return {"instruction_input": caption_instruction(), "answer": caption}


class TextCapDataset(V2ImageDataset):
    """``TextCaps_0.1_train.json``: ``{"data": [{image_id, caption_str}, ...]}``, images
    ``{image_id}.jpg``."""

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_path: str,
        name: str = "textcaps_caption",
    ) -> None:
        content = read_json(ann_path, name)
        if not isinstance(content, dict) or "data" not in content:
            raise ValueError(f"dataset '{name}': {ann_path} must hold {{\"data\": [...]}}")
        records = check_list(content["data"], ann_path, name)
        for i, record in enumerate(records):
            where = f"dataset '{name}': {ann_path} data {i}"
            check_record(record, {"image_id": str, "caption_str": str}, where)
        super().__init__(name, vis_processor, text_processor, vis_root, records)

    def image_file(self, record: dict[str, Any]) -> str:
        return f"{record['image_id']}.jpg"

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        caption = self.process_text(record["caption_str"])
        return {"instruction_input": caption_instruction(), "answer": caption}

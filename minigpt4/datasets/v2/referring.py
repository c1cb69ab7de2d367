"""Referring expressions both ways: RefCOCO/+/g (``[refer]``, ``[identify]``) and Visual Genome.

A box is written on the 0-100 grid from the record's pixel box and the image's size, truncated
as the original does (:func:`minigpt4.common.boxes.pixels_to_grid`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from PIL import Image

from minigpt4.common.boxes import format_box, pixels_to_grid
from minigpt4.datasets.v2.base import V2ImageDataset, check_list, check_record, read_json
from minigpt4.datasets.v2.refer import read_train_refs
from minigpt4.datasets.v2.templates import IDENTIFY_POOL, REFER_POOL, image_instruction

# Visual Genome regions of this many pixels or more are not used (the original follows OFA).
VG_MAX_REGION_PIXELS = 16384


def grid_box(xywh: list[float], image: Image.Image) -> str:
    """``{<x1><y1><x2><y2>}`` of a COCO-style [x, y, w, h] pixel box of ``image``."""
    x, y, w, h = xywh
    return format_box(pixels_to_grid([x, y, x + w, y + h], *image.size))


class ReferCOCODataset(V2ImageDataset):
    """``[refer] <expression>`` -> the box. Images ``COCO_train2014_{image_id:012}.jpg``."""

    pool = REFER_POOL

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_path: str,
        dataset: str = "refcoco",
        splitBy: str = "unc",  # the original's config key
        name: str = "refcoco",
    ) -> None:
        refs = read_train_refs(ann_path, dataset, splitBy, name)
        super().__init__(name, vis_processor, text_processor, vis_root, refs)

    def image_file(self, record: dict[str, Any]) -> str:
        return f"COCO_train2014_{record['image_id']:0>12}.jpg"

    def expression_and_box(self, record: dict[str, Any], image: Image.Image) -> tuple[str, str]:
        sentence = self.process_text(random.choice(record["sentences"])["raw"])
        return sentence, grid_box(record["bbox"], image)

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        sentence, box = self.expression_and_box(record, image)
        instruction = random.choice(self.pool).format(sentence)
        return {
            "instruction_input": image_instruction(instruction),
            "answer": box,
            "image_id": record["image_id"],
        }


class InvReferCOCODataset(ReferCOCODataset):
    """``[identify] <box>`` -> the expression (through the text processor twice, as the
    original does)."""

    pool = IDENTIFY_POOL

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        sentence, box = self.expression_and_box(record, image)
        instruction = random.choice(self.pool).format(box)
        return {
            "instruction_input": image_instruction(instruction),
            "answer": self.process_text(sentence),
            "image_id": record["image_id"],
        }


class ReferVisualGenomeDataset(V2ImageDataset):
    """Visual Genome's regions under ``VG_MAX_REGION_PIXELS`` as ``[refer]`` samples.

    ``data_dir`` holds ``image_data.json`` (``id``, ``url``), ``region_descriptions.json``
    (``id``, ``regions`` with ``phrase``, ``x``, ``y``, ``width``, ``height``) and the images
    under the last two parts of each url (``VG_100K/1.jpg``).
    """

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        data_dir: str,
        name: str = "refvg",
    ) -> None:
        regions = read_vg_regions(data_dir, name)
        small = [r for r in regions if r["width"] * r["height"] < VG_MAX_REGION_PIXELS]
        if not small:
            raise ValueError(
                f"dataset '{name}': no region in {data_dir} is smaller than "
                f"{VG_MAX_REGION_PIXELS} pixels"
            )
        super().__init__(name, vis_processor, text_processor, data_dir, small)

    def image_file(self, record: dict[str, Any]) -> str:
        return os.path.join(*record["url"].split("/")[-2:])

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        sentence = self.process_text(record["phrase"])
        box = grid_box([record["x"], record["y"], record["width"], record["height"]], image)
        instruction = random.choice(REFER_POOL).format(sentence)
        return {
            "instruction_input": image_instruction(instruction),
            "answer": box,
            "image_id": record["image_id"],
        }


_VG_REGION_FIELDS = {"phrase": str, "x": int, "y": int, "width": int, "height": int}


def read_vg_regions(data_dir: str, name: str) -> list[dict[str, Any]]:
    """Every region of ``region_descriptions.json`` with its image's id and url, in file order."""
    images_file = os.path.join(data_dir, "image_data.json")
    regions_file = os.path.join(data_dir, "region_descriptions.json")
    urls = {}
    for i, image in enumerate(check_list(read_json(images_file, name), images_file, name)):
        check_record(image, {"url": str}, f"dataset '{name}': {images_file} image {i}")
        image_id = image.get("id", image.get("image_id"))
        if not isinstance(image_id, int):
            raise ValueError(f"dataset '{name}': {images_file} image {i} has no integer 'id'")
        urls[image_id] = image["url"]
    regions = []
    for i, entry in enumerate(check_list(read_json(regions_file, name), regions_file, name)):
        where = f"dataset '{name}': {regions_file} entry {i}"
        check_record(entry, {"id": int, "regions": list}, where)
        if entry["id"] not in urls:
            raise ValueError(f"{where}: image id {entry['id']} is not in {images_file}")
        for j, region in enumerate(entry["regions"]):
            check_record(region, _VG_REGION_FIELDS, f"{where} region {j}")
            regions.append({**region, "image_id": entry["id"], "url": urls[entry["id"]]})
    return regions

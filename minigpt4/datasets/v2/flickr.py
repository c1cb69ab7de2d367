"""Flickr30k Entities, filtered as MiniGPT-v2 ships it: grounded captions and detection.

Three JSON lists over one image folder (``{image_id}.jpg``): ``groundedcaption.json``
(``grounded_caption``, already with ``<p>phrase</p> {<x1><y1><x2><y2>}`` on the grid),
``captiontobbox.json`` (``caption`` -> ``output``) and ``phrasetobbox.json`` (``phrase`` ->
``bbox``, a grid box string). Answers are used as written, without the text processor.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from minigpt4.common.boxes import PHRASE_CLOSE, PHRASE_OPEN
from minigpt4.datasets.v2.base import JsonListDataset, check_record
from minigpt4.datasets.v2.templates import (
    DETECTION_POOL,
    GROUNDED_CAPTION_POOL,
    image_instruction,
)


class FlickrDataset(JsonListDataset):
    """A JSON list of records with ``image_id`` and the fields in ``fields``."""

    fields: dict[str, type] = {}

    def check(self, record: Any, where: str) -> None:
        check_record(record, {"image_id": (str, int), **self.fields}, where)

    def image_file(self, record: dict[str, Any]) -> str:
        return f"{record['image_id']}.jpg"


class GroundedDetailDataset(FlickrDataset):
    """``[grounding] describe this image ...`` -> the grounded caption."""

    default_name = "flickr_grounded_caption"

    fields = {"grounded_caption": str}

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        return {
            "instruction_input": image_instruction(random.choice(GROUNDED_CAPTION_POOL)),
            "answer": record["grounded_caption"],
            "image_id": record["image_id"],
        }


class CaptionToObjectDataset(FlickrDataset):
    """``[detection] <caption>`` -> the phrases of the caption with their boxes."""

    default_name = "flickr_CaptionToPhrase"

    fields = {"caption": str, "output": str}

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        return {
            "instruction_input": image_instruction(
                random.choice(DETECTION_POOL).format(record["caption"])
            ),
            "answer": record["output"],
            "image_id": record["image_id"],
        }


class PhraseToObjectDataset(FlickrDataset):
    """``[detection] <phrase>`` -> ``<p>phrase</p> {box}``."""

    default_name = "flickr_ObjectToPhrase"

    fields = {"phrase": str, "bbox": str}

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        phrase = record["phrase"]
        return {
            "instruction_input": image_instruction(random.choice(DETECTION_POOL).format(phrase)),
            "answer": f"{PHRASE_OPEN}{phrase}{PHRASE_CLOSE} {record['bbox']}",
            "image_id": record["image_id"],
        }

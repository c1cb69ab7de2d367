"""Visual question answering: COCO-VQA and OK-VQA, A-OKVQA, GQA, OCR-VQA.

``[vqa] <question>`` (or the longer template) -> a short answer, both through the text
processor. Where a record lists several answers, one is drawn with ``random.choices`` weighted
by how often it occurs, as the original does.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from minigpt4.datasets.v2.base import (
    RecordError,
    V2ImageDataset,
    check_list,
    check_record,
    read_json,
)
from minigpt4.datasets.v2.templates import VQA_POOL, image_instruction

# OCR-VQA's dataset.json marks training records with split 1 (2 validation, 3 test).
OCRVQA_TRAIN_SPLIT = 1


def read_lavis_annotations(
    ann_paths: Sequence[str], name: str, fields: dict[str, type | tuple[type, ...]]
) -> list[dict[str, Any]]:
    """LAVIS annotation files (each a JSON list, or an object with an ``annotations`` list),
    every record checked to hold ``fields`` (:func:`check_record`)."""
    records = []
    for path in ann_paths:
        content = read_json(path, name)
        if isinstance(content, dict) and "annotations" in content:
            content = content["annotations"]
        records.extend(check_list(content, path, name))
    for i, record in enumerate(records):
        check_record(record, fields, record_place(name, i, ann_paths))
    return records


def record_place(name: str, index: int, ann_paths: Sequence[str]) -> str:
    """Where record ``index`` of the LAVIS files ``ann_paths`` is, for error messages."""
    return f"dataset '{name}': record {index} of {', '.join(ann_paths)}"


def draw_answer(answers: list[str]) -> str:
    """One of ``answers``, weighted by frequency (the original's arithmetic, for equal draws)."""
    weights: dict[str, float] = {}
    for answer in answers:
        weights[answer] = weights.get(answer, 0) + 1 / len(answers)
    return random.choices(list(weights), weights=list(weights.values()), k=1)[0]


def vqa_instruction(question: str) -> str:
    return image_instruction(random.choice(VQA_POOL).format(question))


class COCOVQADataset(V2ImageDataset):
    """LAVIS's VQAv2 / OK-VQA files: ``image`` (its base name is looked up in ``vis_root``),
    ``question``, ``answer`` (a list). Records whose image is absent are dropped, as the
    original does."""

    answer_key = "answer"

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_paths: Sequence[str],
        name: str = "coco_vqa",
    ) -> None:
        fields = {"image": str, "question": str, self.answer_key: list}
        records = read_lavis_annotations(ann_paths, name, fields)
        for i, record in enumerate(records):
            if not record[self.answer_key]:
                where = record_place(name, i, ann_paths)
                raise RecordError(f"{where}: '{self.answer_key}' is empty")
        super().__init__(name, vis_processor, text_processor, vis_root, records)
        self.records = [r for r in records if os.path.isfile(self.image_path(r))]
        if not self.records:
            raise FileNotFoundError(
                f"dataset '{name}': none of the {len(records)} records' images is in {vis_root} "
                f"(e.g. {self.image_path(records[0])})"
            )

    def image_file(self, record: dict[str, Any]) -> str:
        return record["image"].split("/")[-1]

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        question = self.process_text(record["question"])
        answer = draw_answer(record[self.answer_key])
        sample = {"instruction_input": vqa_instruction(question)}
        if "question_id" in record:
            sample["question_id"] = record["question_id"]
        return {**sample, "answer": self.process_text(answer)}


class AOKVQADataset(COCOVQADataset):
    """A-OKVQA: the answer is drawn from ``direct_answers``; the question goes through the text
    processor twice, as in the original."""

    answer_key = "direct_answers"

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        question = self.process_text(record["question"])
        answer = draw_answer(record[self.answer_key])
        return {
            "instruction_input": vqa_instruction(self.process_text(question)),
            "answer": self.process_text(answer),
        }


class GQADataset(V2ImageDataset):
    """GQA in LAVIS's layout: ``image`` (a file in ``vis_root``), ``question``, ``answer``."""

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_paths: Sequence[str],
        name: str = "gqa",
    ) -> None:
        records = read_lavis_annotations(
            ann_paths, name, {"image": str, "question": str, "answer": str}
        )
        super().__init__(name, vis_processor, text_processor, vis_root, records)

    def image_file(self, record: dict[str, Any]) -> str:
        return record["image"]

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        question = self.process_text(record["question"])
        return {
            "instruction_input": vqa_instruction(question),
            "answer": self.process_text(record["answer"]),
        }


class OCRVQADataset(V2ImageDataset):
    """OCR-VQA's ``dataset.json``: ``{image id: {imageURL, questions, answers, title, genre,
    split}}``; every question of a training image (split 1) is one record, its image
    ``<id><extension of imageURL>``."""

    _FIELDS = {"imageURL": str, "questions": list, "answers": list, "split": int}

    def __init__(
        self,
        vis_processor: Callable | None,
        text_processor: Callable | None,
        vis_root: str,
        ann_path: str,
        name: str = "ocrvqa",
    ) -> None:
        content = read_json(ann_path, name)
        if not isinstance(content, dict):
            raise ValueError(f"dataset '{name}': {ann_path} must map image ids to records")
        records = []
        for image_id, entry in content.items():
            where = f"dataset '{name}': {ann_path} image {image_id!r}"
            check_record(entry, self._FIELDS, where)
            if len(entry["questions"]) != len(entry["answers"]):
                raise RecordError(f"{where}: {len(entry['questions'])} questions but "
                                  f"{len(entry['answers'])} answers")  # fmt: skip
            if entry["split"] != OCRVQA_TRAIN_SPLIT:
                continue
            image_file = image_id + os.path.splitext(entry["imageURL"])[1]
            for question, answer in zip(entry["questions"], entry["answers"]):
                records.append(
                    {
                        "question": question,
                        "answer": answer,
                        "image_file": image_file,
                        "image_id": image_id,
                    }  # fmt: skip
                )
        if not records:
            raise ValueError(f"dataset '{name}': {ann_path} has no training record (split 1)")
        super().__init__(name, vis_processor, text_processor, vis_root, records)

    def image_file(self, record: dict[str, Any]) -> str:
        return record["image_file"]

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        question = self.process_text(record["question"])
        answer = self.process_text(record["answer"])
        return {
            "instruction_input": vqa_instruction(question),
            "answer": answer,
            "image_id": record["image_id"],
        }

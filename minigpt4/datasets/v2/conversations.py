"""LLaVA's instruction data, MiniGPT-v2's multi-task conversations and unnatural instructions.

LLaVA and multi-task records: ``id`` (image ``COCO_train2014_{id}.jpg``) and ``conversations``,
turns ``{"from", "value"}`` alternating human/gpt, the first with ``<image>``. The first question
loses ``<image>`` and newlines and gets the image; conversations join their questions and
answers with ``!@#`` (``conv_q``/``conv_a``), every later question with a trailing space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from minigpt4.datasets.v2.base import (
    JsonListDataset,
    RecordError,
    check_list,
    check_record,
    read_json,
)
from minigpt4.datasets.v2.templates import CONNECT_SYM, image_instruction

IMAGE_TOKEN = "<image>"


def first_question(conversations: list[dict[str, Any]]) -> str:
    return conversations[0]["value"].replace(IMAGE_TOKEN, "").replace("\n", "").strip()


class LlavaDataset(JsonListDataset):
    """A JSON list of LLaVA records; ``min_turns`` turns at least."""

    min_turns = 2
    default_name = "llava_detail"

    def check(self, record: Any, where: str) -> None:
        check_record(record, {"id": (str, int), "conversations": list}, where)
        turns = record["conversations"]
        if len(turns) < self.min_turns:
            raise RecordError(f"{where}: {len(turns)} turns, need {self.min_turns} at least")
        for j, turn in enumerate(turns):
            check_record(turn, {"value": str}, f"{where} turn {j}")

    def image_file(self, record: dict[str, Any]) -> str:
        return f"COCO_train2014_{record['id']}.jpg"


class LlavaDetailDataset(LlavaDataset):
    """One question (through the text processor) and its answer (raw). ``llava_detail`` and
    ``llava_reason`` are this dataset on different files."""

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        turns = record["conversations"]
        return {
            "instruction_input": image_instruction(self.process_text(first_question(turns))),
            "answer": turns[1]["value"],
            "image_id": record["id"],
        }


LlavaReasonDataset = LlavaDetailDataset


class ConversationDataset(LlavaDataset):
    """Every turn: ``conv_q``/``conv_a`` joined by ``connect_sym``, no text processor."""

    default_name = "multitask_conversation"

    def texts(self, record: dict[str, Any], image: Image.Image) -> dict[str, Any]:
        turns = record["conversations"]
        questions = [image_instruction(first_question(turns))]
        answers = []
        for i, turn in enumerate(turns[1:]):
            if i % 2 == 0:
                answers.append(turn["value"])
            else:
                questions.append(turn["value"] + " ")
        return {
            "conv_q": CONNECT_SYM.join(questions),
            "conv_a": CONNECT_SYM.join(answers),
            "image_id": record["id"],
            "connect_sym": CONNECT_SYM,
        }


# The original has one class per file for these; they read the same layout.
LlavaConversationDataset = ConversationDataset
MultiTaskConversationDataset = ConversationDataset


class UnnaturalDataset:
    """Text only (no image): the first instance of each record, ``instruction_with_input``
    plus `` constraints`` when there are any, both sides through the text processor."""

    _INSTANCE_FIELDS = {"instruction_with_input": str, "output": str}

    def __init__(
        self, text_processor: Callable | None, ann_path: str, name: str = "unnatural_instruction"
    ) -> None:
        self.name = name
        self.text_processor = text_processor
        self.records = check_list(read_json(ann_path, name), ann_path, name)
        for i, record in enumerate(self.records):
            where = f"dataset '{name}': {ann_path} record {i}"
            check_record(record, {"instances": list}, where)
            if not record["instances"]:
                raise RecordError(f"{where}: 'instances' is empty")
            instance = check_record(record["instances"][0], self._INSTANCE_FIELDS, where)
            if instance.get("constraints") is not None:
                check_record(instance, {"constraints": str}, f"{where} instance 0")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, str]:
        instance = self.records[index]["instances"][0]
        instruction = instance["instruction_with_input"]
        if instance.get("constraints") is not None:
            instruction = instruction + " " + instance["constraints"]
        return {
            "instruction_input": self._process(instruction),
            "answer": self._process(instance["output"]),
        }

    def _process(self, text: str) -> str:
        return self.text_processor(text) if self.text_processor else text

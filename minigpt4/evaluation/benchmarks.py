"""The benchmarks ``python -m minigpt4.evaluate`` knows: how each is read, parsed, scored and
printed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minigpt4.evaluation import mme, mme_data, pope, pope_data, tables, vqa, vqa_data
from minigpt4.evaluation.items import Item


@dataclass(frozen=True)
class Benchmark:
    name: str
    read: Callable[[Path, Path | None, int | None], list[Item]]
    parse: Callable[[Item, str], Any]  # the "parsed" field of a result item
    score: Callable[[list[Item], list[str]], dict[str, Any]]
    table: Callable[[dict[str, Any]], str]


BENCHMARKS: dict[str, Benchmark] = {
    "mme": Benchmark(
        "mme", mme_data.read_mme, lambda _, p: mme.parse_answer(p), mme.score, tables.mme_table
    ),
    "pope": Benchmark(
        "pope",
        pope_data.read_pope,
        lambda _, p: pope.parse_answer(p),
        pope.score,
        tables.pope_table,
    ),
    "vqa": Benchmark(
        "vqa",
        vqa_data.read_vqa,
        lambda item, p: vqa.question_accuracy(p, item.answer)[1],
        vqa.score,
        tables.vqa_table,
    ),
}


def result_items(bench: Benchmark, items: list[Item], predictions: list[str]) -> list[dict]:
    """The ``items`` of the results file: what was asked, the truth and the model's answer."""
    return [
        {
            "category": item.category,
            "image": item.image,
            "question": item.question,
            "answer": item.answer,
            "prediction": prediction,
            "parsed": bench.parse(item, prediction),
        }
        for item, prediction in zip(items, predictions, strict=True)
    ]

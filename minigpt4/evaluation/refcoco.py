"""RefCOCO's rules as the original ``eval_scripts/eval_ref.py`` applies them.

An answer is cleaned (``<unk>`` and spaces removed) and kept when it starts with a grid box
``{<x1><y1><x2><y2>}``; its integers, scaled from the 0-100 grid to the image's pixels, are
compared with the truth box, and it is a hit when the IoU (+1 pixel convention) is above 0.5.
Accuracy is hits over all expressions: an answer that is not kept counts as a miss.

With resampling (``--resample``) an answer that is not kept is asked again, up to five more
times, with the original's resample question (the expression formatted as a one-element list,
:func:`minigpt4.common.boxes.ref_resample_question`); the answer of the last round is kept
whatever it is, as the original's loop keeps every answer of its fifth round. The original
collected the answers to ask again over the whole split; here they are asked again batch by
batch (greedy answers do not depend on the other rows), so a killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from minigpt4.common.boxes import (
    clean_ref_answer,
    compute_iou,
    is_ref_box,
    ref_answer_box,
    ref_resample_question,
)
from minigpt4.evaluation.items import Item
from minigpt4.evaluation.runner import Asker

HIT_IOU = 0.5
RESAMPLE_ROUNDS = 5  # eval_ref.py loops 20 times but keeps every answer of round i == 4


def kept(prediction: str) -> bool:
    """Whether eval_ref.py keeps an answer without asking again (it starts with a grid box)."""
    return is_ref_box(clean_ref_answer(prediction))


def predicted_box(item: Item, prediction: str) -> list[float] | None:
    """The answer's box in pixels of the item's image (None: not exactly four integers)."""
    extra = item.extra
    return ref_answer_box(clean_ref_answer(prediction), extra["width"], extra["height"])


def judge(item: Item, prediction: str, resample: bool = False) -> tuple[bool, float | None]:
    """(hit, IoU) of one answer; IoU None when the answer gives no box that is scored."""
    if not resample and not kept(prediction):
        return False, None  # the original drops it (it would have been resampled)
    box = predicted_box(item, prediction)
    if box is None:
        return False, None
    iou = compute_iou(box, item.answer)
    return iou > HIT_IOU, iou


def item_fields(item: Item, prediction: str, resample: bool = False) -> dict[str, Any]:
    """What a result item shows beside the answer: the image size and the answer's IoU."""
    _, iou = judge(item, prediction, resample)
    return {"width": item.extra["width"], "height": item.extra["height"], "iou": iou}


def score(
    items: Sequence[Item], predictions: Sequence[str], resample: bool = False
) -> dict[str, Any]:
    """``accuracy`` (a fraction, over all items and per split file) and the counts."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} RefCOCO items but {len(predictions)} predictions")
    if not items:
        raise ValueError("no RefCOCO items to score")
    hits: dict[str, list[bool]] = {}
    for item, prediction in zip(items, predictions):
        hits.setdefault(item.category, []).append(judge(item, prediction, resample)[0])
    every = [h for split in hits.values() for h in split]
    return {
        "accuracy": sum(every) / len(every),
        "splits": {k: {"accuracy": sum(v) / len(v), "items": len(v)} for k, v in hits.items()},
        "items": len(every),
        "not_a_box": sum(not kept(p) for p in predictions),
    }


def resampling(ask: Asker, rounds: int = RESAMPLE_ROUNDS) -> Asker:
    """``ask`` that asks again, up to ``rounds`` times, the items whose answer is not kept."""

    def ask_again(items: list[Item]) -> list[str]:
        answers = list(ask(items))
        asked = list(items)
        todo = [i for i, a in enumerate(answers) if not kept(a)]
        for _ in range(rounds):
            if not todo:
                break
            for i in todo:
                asked[i] = dataclasses.replace(
                    asked[i], question=ref_resample_question(asked[i].question)
                )
            for i, answer in zip(todo, ask([asked[i] for i in todo]), strict=True):
                answers[i] = answer
            todo = [i for i in todo if not kept(answers[i])]
        return answers

    return ask_again

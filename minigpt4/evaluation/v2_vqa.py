"""Scores of the VQA-style benchmarks as the original's ``eval_scripts/eval_vqa.py`` computes
them; each benchmark's ``scores`` carry ``accuracy`` as a fraction.

- OK-VQA: the official VQA accuracy (:mod:`minigpt4.evaluation.vqa`) of the answer lower-cased,
  ``<unk>`` removed and stripped; ``overall`` etc. x 100 as the official evaluator writes them.
- VizWiz: ``min(1, matches / 3)`` over the human answers, compared lower-cased as they are (no
  normalisation, no leave-one-out). The original joined the answers with ``_`` and split them
  again, so an answer holding ``_`` counts as its pieces: kept.
- GQA: the answer lower-cased equals the label; VSR: lower-cased equals "true"/"false"; Hateful
  Memes: "yes"/"no" (lower-cased, stripped) read as 1/0 equals the label, anything else is a
  miss; IconQA: the best-ranked choice is the right one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from minigpt4.evaluation import vqa
from minigpt4.evaluation.items import Item

HUMANS_PER_MATCH = vqa.HUMANS_PER_MATCH
Judge = Callable[[Item, str], bool]


def vqa_postprocess(answer: str) -> str:
    """eval_vqa.py's cleanup of an OK-VQA / GQA answer."""
    return answer.lower().replace("<unk>", "").strip()


def okvqa_parse(item: Item, prediction: str) -> str:
    return vqa.question_accuracy(vqa_postprocess(prediction), item.answer)[1]


def okvqa_score(items: Sequence[Item], predictions: Sequence[str]) -> dict[str, Any]:
    scores = vqa.score(items, [vqa_postprocess(p) for p in predictions])
    return {"accuracy": scores["overall"] / 100, "items": scores["questions"], **scores}


def vizwiz_accuracy(item: Item, prediction: str) -> float:
    humans = "_".join(item.answer).split("_")
    matches = sum(h.lower() == prediction.lower() for h in humans)
    return min(1.0, matches / HUMANS_PER_MATCH)


def gqa_hit(item: Item, prediction: str) -> bool:
    return prediction.lower() == item.answer


def vsr_hit(item: Item, prediction: str) -> bool:
    return prediction.lower() == item.answer.lower()


def hm_parse(prediction: str) -> int | str:
    """1 for "yes", 0 for "no", else the answer as it is (never equal to a label)."""
    return {"yes": 1, "no": 0}.get(prediction.lower().strip(), prediction)


def hm_hit(item: Item, prediction: str) -> bool:
    return hm_parse(prediction) == item.answer


def iconqa_hit(item: Item, prediction: str) -> bool:
    return prediction == item.extra["choices"][item.answer]


def mean_score(accuracy: Callable[[Item, str], float]) -> Callable[..., dict[str, Any]]:
    """A scorer averaging ``accuracy(item, prediction)`` (a hit counts 1)."""

    def score(items: Sequence[Item], predictions: Sequence[str]) -> dict[str, Any]:
        if len(items) != len(predictions):
            raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
        if not items:
            raise ValueError("no items to score")
        values = [float(accuracy(i, p)) for i, p in zip(items, predictions)]
        return {"accuracy": sum(values) / len(values), "items": len(values)}

    return score

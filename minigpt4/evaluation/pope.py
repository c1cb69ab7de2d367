"""POPE scoring as the benchmark's official ``evaluate.py`` computes it.

An answer is parsed as there: only the text before its first "." counts, commas are removed,
and it is "no" when one of its space-separated words is "No", "no" or "not", otherwise "yes"
(so an empty or off-topic answer counts as "yes"). With "yes" as the positive class:
accuracy, precision, recall, F1 and the yes-ratio (share of answers parsed as "yes").
Where the official script would divide by zero (no "yes" answers at all), 0.0 is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigpt4.evaluation.items import Item

YES, NO = "yes", "no"
NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def parse_answer(prediction: str) -> str:
    """ "yes" or "no", as the official POPE evaluate.py parses an answer."""
    first_sentence = prediction.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return NO if NEGATIVE_WORDS.intersection(words) else YES


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def metrics(labels: Sequence[str], parsed: Sequence[str]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, yes-ratio and the confusion counts."""
    pairs = list(zip(labels, parsed))
    tp = sum(g == YES and p == YES for g, p in pairs)
    fp = sum(g == NO and p == YES for g, p in pairs)
    tn = sum(g == NO and p == NO for g, p in pairs)
    fn = sum(g == YES and p == NO for g, p in pairs)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(sum(p == YES for p in parsed), len(pairs)),
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "questions": len(pairs),
    }


def score(items: Sequence[Item], predictions: Sequence[str]) -> dict[str, Any]:
    """The POPE metrics of ``predictions`` (raw answers aligned with ``items``) over all items,
    and per category (one per question file, e.g. random / popular / adversarial)."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} POPE items but {len(predictions)} predictions")
    if not items:
        raise ValueError("no POPE items to score")
    labels = [str(item.answer).lower() for item in items]
    for item, label in zip(items, labels):
        if label not in (YES, NO):
            raise ValueError(f"POPE item {item.id}: label must be yes or no, not {item.answer!r}")
    parsed = [parse_answer(p) for p in predictions]
    by_category: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_category.setdefault(item.category, []).append(index)
    return {
        **metrics(labels, parsed),
        "categories": {
            name: metrics([labels[i] for i in idx], [parsed[i] for i in idx])
            for name, idx in by_category.items()
        },
    }

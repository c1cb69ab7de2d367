"""MME scoring as the benchmark's official ``eval_tool/calculation.py`` computes it.

Per category: ``acc`` = share of questions answered right x 100, ``acc_plus`` = share of images
whose two questions are both right x 100, ``score`` = acc + acc_plus (at most 200). Perception
is the sum of the scores of the ten perception categories, cognition of the four cognition
categories. An answer is parsed as the official tool does: lower-cased; "yes" or "no" as a
whole, else "yes" if the first four characters contain "yes", else "no" if they contain "no",
else "other" (counted wrong; its rate is reported too). Nothing is stripped first, so
"  yes" is "other" and "Not sure" is "no", exactly as there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigpt4.evaluation.items import Item

PERCEPTION: tuple[str, ...] = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION: tuple[str, ...] = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)
YES, NO, OTHER = "yes", "no", "other"
PREFIX_CHARS = 4  # how much of an answer the official parser looks at
QUESTIONS_PER_IMAGE = 2


def parse_answer(prediction: str) -> str:
    """ "yes", "no" or "other", as the official calculation.py parses an answer."""
    text = prediction.lower()
    if text in (YES, NO):
        return text
    head = text[:PREFIX_CHARS]
    if YES in head:
        return YES
    if NO in head:
        return NO
    return OTHER


def ground_truth(item: Item) -> str:
    truth = str(item.answer).lower()
    if truth not in (YES, NO):
        raise ValueError(
            f"MME item {item.id}: the ground truth must be Yes or No, not {item.answer!r}"
        )
    return truth


def _category_scores(pairs: Sequence[tuple[Item, str]]) -> dict[str, Any]:
    per_image: dict[str, list[bool]] = {}
    other = 0
    for item, prediction in pairs:
        parsed = parse_answer(prediction)
        other += parsed == OTHER
        per_image.setdefault(item.image, []).append(parsed == ground_truth(item))
    for image, results in per_image.items():
        if len(results) != QUESTIONS_PER_IMAGE:
            raise ValueError(
                f"MME pairs two questions per image; image {image!r} of category "
                f"{pairs[0][0].category!r} has {len(results)}"
            )
    correct = sum(sum(r) for r in per_image.values())
    both = sum(all(r) for r in per_image.values())
    acc = 100.0 * correct / len(pairs)
    acc_plus = 100.0 * both / len(per_image)
    return {
        "acc": acc,
        "acc_plus": acc_plus,
        "score": acc + acc_plus,
        "questions": len(pairs),
        "images": len(per_image),
        "other": other,
        "other_rate": other / len(pairs),
    }


def score(items: Sequence[Item], predictions: Sequence[str]) -> dict[str, Any]:
    """The MME scores of ``predictions`` (raw answers, aligned with ``items``).

    ``categories.<name>``: acc, acc_plus, score (x 100 as the official tool), counts and the
    "other" rate; ``perception`` / ``cognition``: sums over the official categories present
    (``missing_categories`` lists those absent); ``total``: sum over every category present
    (also non-official ones, such as the tiny world's); ``acc`` / ``acc_plus`` /
    ``other_rate``: over all questions and images.
    """
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} MME items but {len(predictions)} predictions")
    if not items:
        raise ValueError("no MME items to score")
    by_category: dict[str, list[tuple[Item, str]]] = {}
    for item, prediction in zip(items, predictions):
        by_category.setdefault(item.category, []).append((item, prediction))
    categories = {name: _category_scores(pairs) for name, pairs in by_category.items()}
    questions = sum(c["questions"] for c in categories.values())
    images = sum(c["images"] for c in categories.values())
    return {
        "categories": categories,
        "perception": sum(categories[c]["score"] for c in PERCEPTION if c in categories),
        "cognition": sum(categories[c]["score"] for c in COGNITION if c in categories),
        "total": sum(c["score"] for c in categories.values()),
        "acc": sum(c["acc"] * c["questions"] for c in categories.values()) / questions,
        "acc_plus": sum(c["acc_plus"] * c["images"] for c in categories.values()) / images,
        "other_rate": sum(c["other"] for c in categories.values()) / questions,
        "missing_categories": [c for c in PERCEPTION + COGNITION if c not in categories],
    }

"""Read VQAv2: the official questions file (``{"data_subtype": "val2014", "questions":
[{"image_id", "question", "question_id"}, ...]}``) and annotations file (``{"annotations":
[{"question_id", "image_id", "question_type", "answer_type", "answers": [{"answer", ...} x 10],
...}]}``), found in ``--data`` by name (``*questions*.json``, ``*annotations*.json``).

Images are COCO's ``COCO_<data_subtype>_<image_id:012d>.jpg`` or ``<image_id:012d>.jpg`` (or a
question's own ``image`` field), looked up in ``--image-dir``, ``<data>/<data_subtype>/``,
``<data>/images/`` and ``<data>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minigpt4.evaluation.items import Item, find_image, read_text


def _one(data: Path, pattern: str) -> Path:
    found = sorted(data.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(
            f"--data {data}: expected one VQAv2 file matching {pattern!r}, found "
            f"{[p.name for p in found] or 'none'}"
        )
    return found[0]


def _load(path: Path, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise ValueError(f"{path}: expected a JSON object with a {key!r} list (VQAv2 format)")
    return doc, doc[key]


def image_names(subtype: str, question: dict[str, Any]) -> list[str]:
    """The image file names a question may have: its ``image`` field, else COCO's naming and
    the bare 12-digit one (``000000123456.jpg``, what the original's OK-VQA evaluation reads)."""
    if "image" in question:
        return [str(question["image"])]
    image_id = int(question["image_id"])
    return [f"COCO_{subtype}_{image_id:012d}.jpg", f"{image_id:012d}.jpg"]


def find_question_image(names: list[str], roots: list[Path], what: str) -> tuple[str, Path]:
    """(name, path) of the first of ``names`` found in ``roots``; the error names the first."""
    for name in names:
        for root in roots:
            if (root / name).is_file():
                return name, root / name
    return names[0], find_image(names[0], roots, what)


def read_vqa(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    """Every annotated question of the VQAv2 folder ``data``; ``limit``: the first N."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder (give the VQAv2 folder)")
    q_path, a_path = _one(data, "*questions*.json"), _one(data, "*annotations*.json")
    q_doc, questions = _load(q_path, "questions")
    _, annotations = _load(a_path, "annotations")
    by_id = {a["question_id"]: a for a in annotations}
    subtype = str(q_doc.get("data_subtype", ""))
    roots = [Path(image_dir)] if image_dir is not None else []
    roots += [data / subtype, data / "images", data]
    items: list[Item] = []
    for q in questions[:limit]:
        ann = by_id.get(q["question_id"])
        if ann is None:
            raise ValueError(f"{a_path}: no annotation for question_id {q['question_id']}")
        where = f"{q_path} question {q['question_id']}"
        name, path = find_question_image(image_names(subtype, q), roots, where)
        items.append(
            Item(
                str(q["question_id"]),
                str(ann.get("answer_type", "")),
                name,
                path,
                q["question"],
                [a["answer"] for a in ann["answers"]],
                {
                    "answer_type": str(ann.get("answer_type", "")),
                    "question_type": str(ann.get("question_type", "")),
                },
            )
        )
    return items

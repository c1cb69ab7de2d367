"""Read POPE: JSON-lines question files, one object per line with ``image``, ``text`` (the
question) and ``label`` ("yes"/"no"), and usually ``question_id`` (as the official
``coco_pope_{random,popular,adversarial}.json`` files, which are JSON lines despite the name).

``--data`` is one such file or a folder of them (``*.json``, ``*.jsonl``); each file is a
category (its name without the extension). Images are looked up in ``--image-dir``, the
file's folder and its ``images/`` subfolder.
"""

from __future__ import annotations

import json
from pathlib import Path

from minigpt4.evaluation.items import Item, find_image, read_text

SUFFIXES = (".json", ".jsonl")
REQUIRED = ("image", "text", "label")
JSON_KINDS = {list: "an array", int: "a number", float: "a number", str: "a string"}
JSON_KINDS.update({bool: "true or false", type(None): "null"})


def _read_file(path: Path, roots: list[Path], limit: int | None) -> list[Item]:
    items: list[Item] = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if limit is not None and len(items) >= limit:
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}:{number}: a POPE line is a JSON object with {', '.join(REQUIRED)}; "
                f"this one is {JSON_KINDS.get(type(record), 'something else')}"
            )
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"{path}:{number}: POPE lines need {REQUIRED}; missing {missing}")
        wrong = [k for k in REQUIRED if not isinstance(record[k], str)]
        if wrong:
            raise ValueError(f"{path}:{number}: {', '.join(wrong)} must be text")
        qid = record.get("question_id", number)
        where = f"{path}:{number}"
        items.append(
            Item(
                f"{path.stem}/{qid}",
                path.stem,
                record["image"],
                find_image(record["image"], roots, where),
                record["text"],
                record["label"],
            )
        )
    return items


def read_pope(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    """Every question of the POPE file or folder ``data``; ``limit``: the first N per file."""
    data = Path(data)
    if data.is_file():
        files = [data]
    elif data.is_dir():
        files = sorted(p for p in data.iterdir() if p.suffix in SUFFIXES and p.is_file())
    else:
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"--data {data}: no POPE question files (*.json, *.jsonl)")
    items: list[Item] = []
    for path in files:
        roots = [Path(image_dir)] if image_dir is not None else []
        roots += [path.parent, path.parent / "images"]
        items += _read_file(path, roots, limit)
    return items

"""Read RefCOCO / RefCOCO+ / RefCOCOg in the original MiniGPT-v2's evaluation layout.

Each split is one JSON array (``eval_scripts/eval_data/refcoco_val.json`` in the original), one
record per referring expression::

    {"img_id": "COCO_train2014_000000580957_4", "sents": "white dish in the top right corner",
     "bbox": [468.3, 0.91, 171.7, 116.12], "height": 428, "width": 640}

``bbox`` is COCO's (x, y, width, height) in pixels; the image is ``img_id[:27] + ".jpg"`` (the
COCO train2014 file; the suffix after it numbers the object). ``--data`` is such a file or a
folder holding ``<name>_<split>.json`` (the original's splits: val, testA, testB; RefCOCOg val,
test), directly or under ``<name>/`` (the original's ``eval_file_path`` layout). Images are
looked up in ``--image-dir``, ``<data>/images/`` and ``<data>``.
"""

from __future__ import annotations

from pathlib import Path

from minigpt4.common.boxes import REF_PREFIX, xywh_to_xyxy
from minigpt4.evaluation.items import Item, find_image
from minigpt4.evaluation.records import check_record, load_records

SPLITS = {
    "refcoco": ("val", "testA", "testB"),
    "refcoco+": ("val", "testA", "testB"),
    "refcocog": ("val", "test"),
}
KEYS = ("img_id", "sents", "bbox", "height", "width")
COCO_NAME_LENGTH = 27  # "COCO_train2014_000000580957"


def ref_question(expression: str) -> str:
    """What the original asks about a referring expression."""
    return f"{REF_PREFIX} {expression}"


def split_files(name: str, data: Path) -> list[Path]:
    """The split files of benchmark ``name`` in ``data`` (a file is its own one split)."""
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    found = []
    for split in SPLITS[name]:
        for folder in (data, data / name):
            path = folder / f"{name}_{split}.json"
            if path.is_file():
                found.append(path)
                break
    if not found:
        expected = ", ".join(f"{name}_{s}.json" for s in SPLITS[name])
        raise FileNotFoundError(f"--data {data}: none of {expected} there or in {data / name}")
    return found


def _item(path: Path, index: int, record: dict, roots: list[Path]) -> Item:
    where = f"{path} record {index}"
    check_record(record, KEYS, where)
    bbox, width, height = record["bbox"], record["width"], record["height"]
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ValueError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (width, height)):
        raise ValueError(f"{where}: width and height must be positive numbers")
    img_id = str(record["img_id"])
    image = f"{img_id[:COCO_NAME_LENGTH]}.jpg"
    return Item(
        f"{path.stem}/{index}",
        path.stem,
        image,
        find_image(image, roots, where),
        ref_question(str(record["sents"])),
        xywh_to_xyxy(bbox),
        {"img_id": img_id, "width": width, "height": height},
    )


def reader(name: str):
    """The reader of ``name`` (refcoco, refcoco+ or refcocog): every expression of every split
    found, in file order; ``limit``: the first N per split."""

    def read(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
        data = Path(data)
        roots = [Path(image_dir)] if image_dir is not None else []
        base = data.parent if data.is_file() else data
        roots += [base / "images", base]
        items: list[Item] = []
        for path in split_files(name, data):
            records = load_records(path)[:limit]
            items += [_item(path, i, r, roots) for i, r in enumerate(records)]
        return items

    return read

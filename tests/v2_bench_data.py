"""Tiny data sets in the published layouts of the MiniGPT-v2 benchmarks (a few records and
images each), for the evaluator's tests. Every writer returns the records it wrote."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(220, 30, 30), (30, 160, 40), (40, 60, 220), (230, 200, 20)]


def write_image(path: Path, index: int, size: tuple[int, int] = (64, 48)) -> tuple[int, int]:
    """A plain image with one coloured rectangle; returns its (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (250, 250, 250))
    w, h = size
    box = (w // 8 * (index % 3), h // 6, w // 8 * (index % 3) + w // 3, h // 6 + h // 2)
    ImageDraw.Draw(image).rectangle(box, fill=COLOURS[index % len(COLOURS)])
    image.save(path)
    return size


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _lines(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_refcoco(root: Path, name: str = "refcoco", splits=("val",), n: int = 3) -> list:
    """``<name>_<split>.json`` (the original's eval layout) and ``images/COCO_train2014_*.jpg``;
    two expressions share each object (``img_id`` with ``_<object>``)."""
    records = []
    for split in splits:
        rows = []
        for i in range(n):
            coco = f"COCO_train2014_{i + 1:012d}"
            width, height = write_image(root / "images" / f"{coco}.jpg", i, (80 + 8 * i, 60))
            bbox = [8.0 + i, 10.0, 30.5, 25.25]
            rows.append({"img_id": f"{coco}_{i % 2}", "sents": f"the shape number {i}",
                         "bbox": bbox, "height": height, "width": width})  # fmt: skip
        _dump(root / f"{name}_{split}.json", rows)
        records += rows
    return records


def write_okvqa(root: Path, n: int = 3) -> list:
    """OK-VQA's published VQA-format files and ``<image_id:012d>.jpg`` images."""
    questions, annotations = [], []
    for i in range(n):
        image_id = 1000 + i
        write_image(root / f"{image_id:012d}.jpg", i)
        qid = 10 * image_id + 1
        questions.append({"image_id": image_id, "question": f"what colour is shape {i}?",
                          "question_id": qid})  # fmt: skip
        words = ["red", "red", "green", "Red.", "two", "red", "red", "2", "red", "red"]
        answers = [{"answer": a, "raw_answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                   for k, a in enumerate(words)]  # fmt: skip
        annotations.append({"image_id": image_id, "question_id": qid, "answers": answers,
                            "question_type": "eight", "answer_type": "other"})  # fmt: skip
    _dump(root / "OpenEnded_mscoco_val2014_questions.json",
          {"data_subtype": "val2014", "questions": questions})  # fmt: skip
    _dump(root / "mscoco_val2014_annotations.json", {"annotations": annotations})
    return questions


def write_vizwiz(root: Path, n: int = 3) -> list:
    """VizWiz-VQA's ``val.json`` and ``val/VizWiz_val_*.jpg``."""
    records = []
    for i in range(n):
        image = f"VizWiz_val_{i:08d}.jpg"
        write_image(root / "val" / image, i)
        answers = [{"answer": a, "answer_confidence": "yes"}
                   for a in ["unanswerable"] * 6 + ["red"] * 4]  # fmt: skip
        records.append({"image": image, "question": f"what is this {i}?", "answers": answers,
                        "answer_type": "other", "answerable": 1})  # fmt: skip
    _dump(root / "val.json", records)
    return records


def write_iconqa(root: Path, n: int = 3, published: bool = False) -> list | dict:
    """IconQA multiple choice: the original's list with ``<image_id>/image.png``, or the
    published ``problems.json`` with ``test/choose_txt/<pid>/image.png`` (plus one question of
    another type and one of another split, which are not read)."""
    rows = []
    for i in range(n):
        choices = ["red", "green", "blue"][: 2 + i % 2]
        rows.append({"question": f"which colour is shape {i}?", "choices": choices,
                     "answer": i % len(choices)})  # fmt: skip
    if not published:
        for i, row in enumerate(rows):
            row["image_id"] = str(100 + i)
            write_image(root / str(100 + i) / "image.png", i)
        _dump(root / "iconqa_val.json", rows)
        return rows
    problems = {}
    for i, row in enumerate(rows):
        pid = str(200 + i)
        problems[pid] = {**row, "ques_type": "choose_txt", "split": "test"}
        write_image(root / "iconqa" / "test" / "choose_txt" / pid / "image.png", i)
    problems["900"] = {**rows[0], "ques_type": "fill_in_blank", "split": "test"}
    problems["901"] = {**rows[0], "ques_type": "choose_txt", "split": "train"}
    _dump(root / "problems.json", problems)
    return problems


def write_gqa(root: Path, n: int = 3, published: bool = False) -> list | dict:
    """GQA: the original's list (``image``, ``question``, ``answer``) or the published
    questions object keyed by question id (``imageId``); images in ``images/``."""
    rows = []
    for i in range(n):
        write_image(root / "images" / f"n{i}.jpg", i)
        rows.append({"image": f"n{i}.jpg", "question": f"is shape {i} red?", "answer": "yes"})
    if published:
        doc = {f"q{i}": {"imageId": f"n{i}", "question": r["question"], "answer": r["answer"]}
               for i, r in enumerate(rows)}  # fmt: skip
        _dump(root / "testdev_balanced_questions.json", doc)
        return doc
    _dump(root / "gqa_testdev.json", rows)
    return rows


def write_vsr(root: Path, n: int = 3) -> list:
    """VSR's ``test.jsonl`` (``image``, ``caption``, ``label``) and ``images/``."""
    records = []
    for i in range(n):
        image = f"{i + 1:012d}.jpg"
        write_image(root / "images" / image, i)
        records.append({"image": image, "caption": f"The shape {i} is left of the edge.",
                        "label": i % 2, "relation": "left of"})  # fmt: skip
    _lines(root / "test.jsonl", records)
    return records


def write_hm(root: Path, n: int = 3) -> list:
    """Hateful Memes' ``dev.jsonl`` (``id``, ``img``, ``text``, ``label``) and ``img/``."""
    records = []
    for i in range(n):
        img = f"img/{42950 + i}.png"
        write_image(root / img, i)
        records.append({"id": 42950 + i, "img": img, "label": i % 2, "text": f"meme {i}"})
    _lines(root / "dev.jsonl", records)
    return records

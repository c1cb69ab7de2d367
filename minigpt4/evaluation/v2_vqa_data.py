"""Read the VQA-style benchmarks of the original's ``eval_scripts/eval_vqa.py``, each question
worded as the original asks it.

- ``okvqa``: OK-VQA's published files (the VQA format: ``*questions*.json`` and
  ``*annotations*.json`` in ``--data``); images ``<image_id:012d>.jpg`` or COCO's naming.
- ``vizwiz``: VizWiz-VQA's ``val.json`` (a list of ``{"image", "question", "answers": [{"answer"},
  ...]}``); images in its folder or ``val/``.
- ``iconvqa``: IconQA multiple choice as the original reads it (a list of ``{"image_id",
  "question", "choices", "answer"}``, the image ``<image_id>/image.png``) or IconQA's published
  ``problems.json`` (``{pid: {"question", "choices", "answer", "ques_type", "split"}}``: the
  ``choose_txt`` questions of the test split, images ``test/choose_txt/<pid>/image.png`` under
  the file's folder or its ``iconqa/``). ``answer`` is the index of the right choice.
- ``gqa``: a list of ``{"image", "question", "answer"}`` (the original's) or GQA's published
  questions file (``{qid: {"imageId", "question", "answer"}}``, images ``<imageId>.jpg``).
- ``vsr``: VSR's JSON lines (``{"image", "caption", "label"}``, label 1 = true).
- ``hm``: Hateful Memes' JSON lines (``{"id", "img", "text", "label"}``, ``img`` like
  ``img/42953.png`` relative to the file's folder).

``--data`` is the benchmark's file (a folder works when it holds the usual file name); images
are also looked up in ``--image-dir``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from minigpt4.evaluation import vqa_data
from minigpt4.evaluation.items import Item, find_image
from minigpt4.evaluation.records import check_record, load_json, load_records

SHORT_ANSWER = "[vqa] Based on the image, respond to this question with a short answer: {}"
VIZWIZ = (
    "[vqa] The question is '{}' Based on the image, answer the question with a single word or "
    "phrase. and reply 'unanswerable' when the provided information is insufficient"
)
VSR = "[vqa] Based on the image, is this statement true or false? {}"
HM = "This is an image writting '{}'. Is this image hateful? Answer yes or no. Answer:"
ICONQA_SPLIT, ICONQA_TYPE = "test", "choose_txt"


def _data_file(data: Path, names: tuple[str, ...], what: str) -> Path:
    if data.is_file():
        return data
    for name in names:
        if (data / name).is_file():
            return data / name
    if data.is_dir():
        raise FileNotFoundError(f"--data {data}: no {what} file ({', '.join(names)}) there")
    raise FileNotFoundError(f"--data {data}: no such file or folder (give the {what} file)")


def _roots(image_dir: Path | None, folder: Path, *subfolders: str) -> list[Path]:
    roots = [Path(image_dir)] if image_dir is not None else []
    return roots + [folder / s for s in subfolders] + [folder]


def read_okvqa(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    """OK-VQA's questions (VQA format), asked with the original's short-answer prompt."""
    items = vqa_data.read_vqa(data, image_dir, limit)
    return [_ask(item, SHORT_ANSWER) for item in items]


def _ask(item: Item, prompt: str) -> Item:
    return dataclasses.replace(item, question=prompt.format(item.question))


def read_vizwiz(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    path = _data_file(Path(data), ("val.json",), "VizWiz annotation")
    roots = _roots(image_dir, path.parent, "val", "images")
    items = []
    for i, rec in enumerate(load_records(path)[:limit]):
        where = f"{path} record {i}"
        check_record(rec, ("image", "question", "answers"), where)
        if not isinstance(rec["answers"], list):
            raise ValueError(f"{where}: answers must be a list of {{'answer': ...}} objects")
        answers = [check_record(a, ("answer",), where)["answer"] for a in rec["answers"]]
        image = str(rec["image"])
        items.append(
            Item(str(i), str(rec.get("answer_type", "vizwiz")), image,
                 find_image(image, roots, where), VIZWIZ.format(rec["question"]), answers)
        )  # fmt: skip
    return items


def _iconqa_records(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, image, record) of each multiple-choice question, in either layout."""
    doc = load_json(path)
    if isinstance(doc, list):
        keys = ("image_id", "question", "choices", "answer")
        checked = [check_record(r, keys, f"{path} record {i}") for i, r in enumerate(doc)]
        return [(str(i), f"{r['image_id']}/image.png", r) for i, r in enumerate(checked)]
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected IconQA's problems.json (an object) or a list")
    return [
        (pid, f"{ICONQA_SPLIT}/{ICONQA_TYPE}/{pid}/image.png", r)
        for pid, r in doc.items()
        if isinstance(r, dict) and r.get("ques_type") == ICONQA_TYPE
        and r.get("split") == ICONQA_SPLIT
    ]  # fmt: skip


def read_iconqa(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    path = _data_file(Path(data), ("problems.json",), "IconQA")
    roots = _roots(image_dir, path.parent, "iconqa")
    items = []
    for qid, image, rec in _iconqa_records(path)[:limit]:
        where = f"{path} question {qid}"
        check_record(rec, ("question", "choices", "answer"), where)
        choices, answer = rec["choices"], rec["answer"]
        if not isinstance(choices, list) or not isinstance(answer, int):
            raise ValueError(f"{where}: needs a choices list and an answer index")
        if not 0 <= answer < len(choices):
            raise ValueError(f"{where}: answer {answer} is not an index of {choices}")
        items.append(
            Item(qid, "iconqa", image, find_image(image, roots, where),
                 SHORT_ANSWER.format(rec["question"]), answer, {"choices": list(choices)})
        )  # fmt: skip
    return items


def read_gqa(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    path = _data_file(Path(data), ("testdev_balanced_questions.json",), "GQA questions")
    doc = load_json(path)
    if isinstance(doc, dict):  # GQA's published questions file
        records = [(qid, f"{r.get('imageId')}.jpg", r) for qid, r in doc.items()]
    elif isinstance(doc, list):
        records = [(str(i), str(r.get("image")), r) for i, r in enumerate(doc)]
    else:
        raise ValueError(f"{path}: expected a list of questions or GQA's questions object")
    roots = _roots(image_dir, path.parent, "images")
    items = []
    for qid, image, rec in records[:limit]:
        where = f"{path} question {qid}"
        check_record(rec, ("question", "answer"), where)
        items.append(
            Item(qid, "gqa", image, find_image(image, roots, where),
                 SHORT_ANSWER.format(rec["question"]), str(rec["answer"]))
        )  # fmt: skip
    return items


def read_vsr(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    path = _data_file(Path(data), ("test.jsonl", "test.json"), "VSR")
    roots = _roots(image_dir, path.parent, "images")
    items = []
    for i, rec in enumerate(load_records(path)[:limit]):
        where = f"{path} record {i}"
        check_record(rec, ("image", "caption", "label"), where)
        image, label = str(rec["image"]), "true" if rec["label"] == 1 else "false"
        items.append(
            Item(str(i), str(rec.get("relation", "vsr")), image,
                 find_image(image, roots, where), VSR.format(rec["caption"]), label)
        )  # fmt: skip
    return items


def read_hm(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    path = _data_file(Path(data), ("dev.jsonl", "dev_seen.jsonl", "test_seen.jsonl"), "HM")
    roots = _roots(image_dir, path.parent)
    items = []
    for i, rec in enumerate(load_records(path)[:limit]):
        where = f"{path} record {i}"
        check_record(rec, ("img", "text", "label"), where)
        if rec["label"] not in (0, 1):
            raise ValueError(f"{where}: label must be 0 or 1, got {rec['label']!r}")
        image = str(rec["img"])
        items.append(
            Item(str(rec.get("id", i)), "hm", image, find_image(image, roots, where),
                 HM.format(rec["text"]), int(rec["label"]))
        )  # fmt: skip
    return items

"""The multi-shape world (``scenes.py``) written in the layouts MiniGPT-v2's datasets read.

One writer per layout; each writes ``count`` scenes of ``seed`` under ``out`` and returns the
``build_info`` a config needs (``{dataset name: {key: path}}``). Files go through ``save(path,
data)`` (``dataset/make_synthetic.py`` passes its atomic writer), so a killed run never leaves
half a file. Scene ``i`` of a seed is the same in every layout and for every ``count``.

- ``refcoco``: the REFER layout the ``refcoco``/``invrefcoco`` datasets train on,
  ``out/refcoco/refs(unc).p`` (every ref in split ``train``) and ``out/refcoco/instances.json``,
  images ``out/images/COCO_train2014_{id:012}.jpg``; and the same refs as the evaluation layout
  ``out/refcoco/refcoco_val.json`` that ``python -m minigpt4.evaluate --benchmark refcoco --data
  out`` reads. One ref per thing; its sentences are the expression ("red circle") and "the red
  circle"; the evaluation asks the first.
- ``flickr``: Flickr30k Entities as MiniGPT-v2 filters it: ``out/groundedcaption.json``
  (``grounded_caption`` with ``<p>`` phrases and grid boxes), ``out/phrasetobbox.json`` (one
  record per thing) and ``out/images/{image_id}.jpg``.
- ``coco-caption``: LAVIS's ``out/coco_karpathy_train.json`` (``image``, ``caption``,
  ``image_id``), images under ``out/images/train/``.
- ``coco-vqa``: LAVIS's ``out/vqa_train.json`` (``question_id``, ``image``, ``question``,
  ``answer`` list) from each scene's ``vqa_pairs``, images under ``out/images/train/``.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from typing import Any

from tiny_world.scenes import (
    MultiSample,
    caption,
    expression,
    grid_box,
    grounded_caption,
    make_multi_sample,
    ref_sentences,
    vqa_pairs,
)
from tiny_world.world import to_jpeg_bytes

Save = Callable[[str, bytes], None]
FORMATS = ("refcoco", "flickr", "coco-caption", "coco-vqa")
REFER_SPLIT_BY = "unc"
_FIRST_IMAGE_ID = 1  # COCO ids count from 1


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")


def coco_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:0>12}"


def _samples(out: str, folder: str, seed: int, count: int, size: int, save: Save):
    """Yield ``(image_id, sample)`` for scenes 0..count-1, each image saved under
    ``out/folder/COCO_train2014_{id:012}.jpg``."""
    for index in range(count):
        sample = make_multi_sample(seed, index, size)
        image_id = _FIRST_IMAGE_ID + index
        save(os.path.join(out, folder, coco_name(image_id) + ".jpg"), to_jpeg_bytes(sample.image))
        yield image_id, sample


def _xywh(box: tuple[int, int, int, int]) -> list[int]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def _refer_records(image_id: int, sample: MultiSample, first_id: int):
    """The COCO annotation, the REFER ref and the evaluation record of each thing."""
    width, height = sample.image.size
    for k, (thing, box) in enumerate(zip(sample.scene.things, sample.boxes, strict=True)):
        ann_id = first_id + k
        raws = ref_sentences(thing)
        sentences = [
            {"raw": raw, "sent": raw, "tokens": raw.split(), "sent_id": 2 * ann_id + j}
            for j, raw in enumerate(raws)
        ]
        ann = {"id": ann_id, "image_id": image_id, "bbox": _xywh(box), "category_id": 1,
               "area": float((box[2] - box[0]) * (box[3] - box[1])), "iscrowd": 0}  # fmt: skip
        ref = {"ref_id": ann_id, "ann_id": ann_id, "image_id": image_id, "split": "train",
               "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences],
               "category_id": 1, "file_name": f"{coco_name(image_id)}_{ann_id}.jpg"}  # fmt: skip
        record = {"img_id": f"{coco_name(image_id)}_{k}", "sents": raws[0], "bbox": _xywh(box),
                  "height": height, "width": width}  # fmt: skip
        yield ann, ref, record


def write_refcoco(out: str, seed: int, count: int, size: int, save: Save) -> dict[str, dict]:
    """The REFER layout and the evaluation file (see the module docstring)."""
    images, anns, refs, records = [], [], [], []
    for image_id, sample in _samples(out, "images", seed, count, size, save):
        width, height = sample.image.size
        images.append({"id": image_id, "file_name": coco_name(image_id) + ".jpg",
                       "width": width, "height": height})  # fmt: skip
        for ann, ref, record in _refer_records(image_id, sample, 10 * image_id):
            anns.append(ann)
            refs.append(ref)
            records.append(record)
    folder = os.path.join(out, "refcoco")
    categories = [{"id": 1, "name": "shape", "supercategory": "shape"}]
    instances = {"images": images, "annotations": anns, "categories": categories}
    save(os.path.join(folder, "instances.json"), _json(instances))
    save(os.path.join(folder, f"refs({REFER_SPLIT_BY}).p"), pickle.dumps(refs, protocol=2))
    save(os.path.join(folder, "refcoco_val.json"), _json(records))
    info = {"image_path": os.path.join(out, "images"), "ann_path": out, "splitBy": REFER_SPLIT_BY}
    return {
        "refcoco": {**info, "dataset": "refcoco"},
        "invrefcoco": {**info, "dataset": "invrefcoco"},
    }


def write_flickr(out: str, seed: int, count: int, size: int, save: Save) -> dict[str, dict]:
    """Grounded captions and phrase-to-box records (see the module docstring)."""
    grounded, phrases = [], []
    for index in range(count):
        sample = make_multi_sample(seed, index, size)
        image_id = str(_FIRST_IMAGE_ID + index)
        save(os.path.join(out, "images", f"{image_id}.jpg"), to_jpeg_bytes(sample.image))
        grounded.append({"image_id": image_id, "grounded_caption": grounded_caption(sample)})
        width, height = sample.image.size
        for thing, box in zip(sample.scene.things, sample.boxes, strict=True):
            phrases.append({"image_id": image_id, "phrase": expression(thing),
                            "bbox": grid_box(box, width, height)})  # fmt: skip
    grounded_file = os.path.join(out, "groundedcaption.json")
    phrase_file = os.path.join(out, "phrasetobbox.json")
    save(grounded_file, _json(grounded))
    save(phrase_file, _json(phrases))
    images = os.path.join(out, "images")
    return {
        "flickr_grounded_caption": {"image_path": images, "ann_path": grounded_file},
        "flickr_ObjectToPhrase": {"image_path": images, "ann_path": phrase_file},
    }


def _lavis_info(out: str, ann_file: str) -> dict:
    return {
        "annotations": {"train": {"storage": ann_file}},
        "images": {"storage": os.path.join(out, "images")},
    }


def write_coco_caption(out: str, seed: int, count: int, size: int, save: Save) -> dict[str, dict]:
    """LAVIS's COCO caption file (see the module docstring)."""
    records = [
        {
            "image": f"train2014/{coco_name(image_id)}.jpg",
            "caption": caption(sample.scene),
            "image_id": f"coco_{image_id}",
        }  # fmt: skip
        for image_id, sample in _samples(out, "images/train", seed, count, size, save)
    ]
    ann_file = os.path.join(out, "coco_karpathy_train.json")
    save(ann_file, _json(records))
    return {"coco_caption": _lavis_info(out, ann_file)}


def write_coco_vqa(out: str, seed: int, count: int, size: int, save: Save) -> dict[str, dict]:
    """LAVIS's VQAv2 file (see the module docstring)."""
    records = []
    for image_id, sample in _samples(out, "images/train", seed, count, size, save):
        for question, answer in vqa_pairs(sample.scene):
            records.append({"question_id": len(records), "question": question, "answer": [answer],
                            "image": f"train2014/{coco_name(image_id)}.jpg"})  # fmt: skip
    ann_file = os.path.join(out, "vqa_train.json")
    save(ann_file, _json(records))
    return {"coco_vqa": _lavis_info(out, ann_file)}


WRITERS: dict[str, Callable[..., dict[str, dict]]] = {
    "refcoco": write_refcoco,
    "flickr": write_flickr,
    "coco-caption": write_coco_caption,
    "coco-vqa": write_coco_vqa,
}


def config_options(info: dict[str, dict]) -> list[str]:
    """``datasets.<name>.build_info.<key>=<value>`` options that point a config at ``info``."""

    def flat(prefix: str, value: Any) -> list[str]:
        if isinstance(value, dict):
            return [o for k, v in value.items() for o in flat(f"{prefix}.{k}", v)]
        return [f"{prefix}={value}"]

    return [o for name, build in info.items() for o in flat(f"datasets.{name}.build_info", build)]

"""The REFER layout of RefCOCO, RefCOCO+ and RefCOCOg, read without running code.

``ann_path/<dataset>/refs(<splitBy>).p`` (a pickled list of refs: ``ref_id``, ``ann_id``,
``image_id``, ``split``, ``sentences`` with ``raw``) and ``ann_path/<dataset>/instances.json``
(COCO's ``annotations`` with ``id`` and ``bbox`` [x, y, w, h]). The ``inv`` datasets read the same
folder as their plain counterparts (``invrefcoco+`` -> ``refcoco+``).
"""

from __future__ import annotations

import os
from typing import Any

from minigpt4.datasets.v2.base import check_list, check_record, read_json
from minigpt4.datasets.v2.safe_pickle import load_data_pickle

REFER_DATASETS = ("refcoco", "refcoco+", "refcocog")

_REF_FIELDS = {"ref_id": int, "ann_id": int, "image_id": int, "split": str, "sentences": list}
_ANN_FIELDS = {"id": int, "bbox": list}


def refer_folder(ann_path: str, dataset: str) -> str:
    """``ann_path/<dataset without inv>``, the folder REFER reads."""
    base = dataset.split("inv")[-1]
    if base not in REFER_DATASETS:
        raise ValueError(
            f"build_info.dataset is {dataset!r}; REFER knows {', '.join(REFER_DATASETS)} "
            "(and their inv variants)"
        )
    return os.path.join(ann_path, base)


def read_train_refs(ann_path: str, dataset: str, split_by: str, name: str) -> list[dict[str, Any]]:
    """The ``train`` refs in file order, each with its annotation's ``bbox`` added."""
    folder = refer_folder(ann_path, dataset)
    refs_file = os.path.join(folder, f"refs({split_by}).p")
    instances_file = os.path.join(folder, "instances.json")
    for needed in (refs_file, instances_file):
        if not os.path.isfile(needed):
            raise FileNotFoundError(
                f"dataset '{name}': {needed} does not exist; the REFER layout is "
                f"{ann_path}/<refcoco|refcoco+|refcocog>/refs(<splitBy>).p and instances.json"
            )
    refs = check_list(load_data_pickle(refs_file), refs_file, name, "a list of refs")
    boxes = _boxes_by_annotation(instances_file, name)
    train = []
    for i, ref in enumerate(refs):
        where = f"dataset '{name}': {refs_file} ref {i}"
        check_record(ref, _REF_FIELDS, where)
        if ref["ann_id"] not in boxes:
            raise ValueError(f"{where}: ann_id {ref['ann_id']} is not in {instances_file}")
        for j, sentence in enumerate(ref["sentences"]):
            check_record(sentence, {"raw": str}, f"{where} sentence {j}")
        if ref["split"] == "train":
            if not ref["sentences"]:
                raise ValueError(f"{where}: a train ref has no sentences")
            train.append({**ref, "bbox": boxes[ref["ann_id"]]})
    if not train:
        raise ValueError(f"dataset '{name}': {refs_file} has no ref of split 'train'")
    return train


def _boxes_by_annotation(instances_file: str, name: str) -> dict[int, list[float]]:
    instances = read_json(instances_file, name)
    if not isinstance(instances, dict) or not isinstance(instances.get("annotations"), list):
        raise ValueError(f"dataset '{name}': {instances_file} must hold COCO's 'annotations' list")
    boxes = {}
    for i, ann in enumerate(instances["annotations"]):
        where = f"dataset '{name}': {instances_file} annotation {i}"
        check_record(ann, _ANN_FIELDS, where)
        if len(ann["bbox"]) != 4 or not all(isinstance(v, (int, float)) for v in ann["bbox"]):
            raise ValueError(f"{where}: bbox must be [x, y, width, height], got {ann['bbox']}")
        boxes[ann["id"]] = ann["bbox"]
    return boxes

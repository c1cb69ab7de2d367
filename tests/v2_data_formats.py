"""A few records of every MiniGPT-v2 finetune dataset, written in the original's layouts with
shapes-world images, for the v2 dataset tests and the recording of the original's samples
(tests/fixtures/v2_original_samples/record_original.py).

``write_all(root)`` writes every format under ``root`` and returns ``{dataset name:
build_info}`` for the config (paths under ``root``). Everything depends on nothing but the
fixed seed: the same files every time. The records exercise what the datasets must get right:
upper case and punctuation (the text processor), several sentences/answers (random draws),
non-train records (dropped), non-square images (box scaling and truncation).

Uses the standard library, PIL and tiny_world/world.py only (loaded by path), so the
recording script can run it beside the original's package.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import random
import sys
from pathlib import Path
from typing import Any

SEED = 7
COUNT = 3  # images per format (the recorded samples); write_all(count=) writes more
_WORLD_FILE = Path(__file__).resolve().parents[1] / "tiny_world" / "world.py"


def _world() -> Any:
    if "_v2_formats_world" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_v2_formats_world", _WORLD_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["_v2_formats_world"]


def _image(path: Path, index: int) -> tuple[Any, tuple[int, int]]:
    """Shapes-world image ``index`` resized to a non-square size; returns (scene, size)."""
    world = _world()
    sample = world.make_sample(SEED, index, size=96)
    size = (96 + 37 * (index % 3), 80 + 11 * index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(world.to_jpeg_bytes(sample.image.resize(size)))
    return sample.scene, size


def _dump(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def _words(scene: Any) -> str:
    return f"the {scene.size} {scene.colour} {scene.shape}"


def _pixel_box(rng: random.Random, size: tuple[int, int]) -> list[float]:
    """COCO [x, y, w, h] inside the image, with fractional pixels as COCO has."""
    w, h = size
    x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
    return [
        round(x, 2),
        round(y, 2),
        round(rng.uniform(5, w - x), 2),
        round(rng.uniform(5, h - y), 2),
    ]


def _grid_box(rng: random.Random) -> str:
    x1, y1 = rng.randint(0, 50), rng.randint(0, 50)
    return f"{{<{x1}><{y1}><{x1 + rng.randint(1, 49)}><{y1 + rng.randint(1, 49)}>}}"


def _sentence(raw: str, sent_id: int) -> dict[str, Any]:
    """A REFER sentence: ``raw`` as written, ``sent`` and ``tokens`` normalised."""
    sent = raw.lower().replace(",", "").replace("!", "")
    return {"raw": raw, "sent": sent, "tokens": sent.split(), "sent_id": sent_id}


def coco_image_id(index: int) -> int:
    return 1000 + index


def write_coco_images(root: Path, count: int) -> list[tuple[int, Any, tuple[int, int]]]:
    """``coco/images/COCO_train2014_{id:012}.jpg`` and the same under ``coco/images/train/``
    (where LAVIS's builders look)."""
    out = []
    for i in range(count):
        name = f"COCO_train2014_{coco_image_id(i):0>12}.jpg"
        scene, size = _image(root / "coco" / "images" / name, i)
        _image(root / "coco" / "images" / "train" / name, i)
        out.append((coco_image_id(i), scene, size))
    return out


def write_refer(root: Path, count: int) -> dict[str, dict[str, Any]]:
    """``refcoco_annotations/<set>/refs(<splitBy>).p`` + ``instances.json`` for the three sets."""
    rng = random.Random(f"{SEED}:refer")
    images = write_coco_images(root, count)
    ann_root = root / "refcoco_annotations"
    anns, refs = [], []
    for n, (image_id, scene, size) in enumerate(images * 2):
        anns.append(
            {
                "id": 500 + n,
                "image_id": image_id,
                "bbox": _pixel_box(rng, size),
                "category_id": 1,
                "area": 10.0,
                "iscrowd": 0,
                "segmentation": [[]],
            }
        )
        raws = [
            f"The {scene.colour.upper()} {scene.shape}, on the left!",
            f"{_words(scene)} (near)",
        ]
        sentences = [_sentence(raw, 3 * n + k) for k, raw in enumerate(raws)]
        refs.append(
            {
                "ref_id": 900 + n,
                "ann_id": 500 + n,
                "image_id": image_id,
                "split": "train" if n != 1 else "val",
                "sentences": sentences,
                "category_id": 1,
                "sent_ids": [3 * n, 3 * n + 1],
                "file_name": "x.jpg",
            }
        )
    instances = {
        "images": [{"id": i, "width": s[0], "height": s[1]} for i, _, s in images],
        "annotations": anns,
        "categories": [{"id": 1, "name": "shape"}],
    }
    info = {}
    for name, folder, split_by in (
        ("refcoco", "refcoco", "unc"),
        ("refcocop", "refcoco+", "unc"),
        ("refcocog", "refcocog", "umd"),
        ("invrefcoco", "invrefcoco", "unc"),
        ("invrefcocop", "invrefcoco+", "unc"),
        ("invrefcocog", "invrefcocog", "umd"),
    ):
        base = folder.split("inv")[-1]
        _dump(ann_root / base / "instances.json", instances)
        with open(ann_root / base / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
        info[name] = {
            "image_path": str(root / "coco" / "images"),
            "ann_path": str(ann_root),
            "dataset": folder,
            "splitBy": split_by,
        }
    return info


def write_visual_genome(root: Path, count: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(f"{SEED}:vg")
    data_dir = root / "visual_genome"
    image_data, regions = [], []
    for i in range(count):
        scene, (w, h) = _image(data_dir / "VG_100K" / f"{i + 1}.jpg", i)
        url = f"https://cs.stanford.edu/people/rak248/VG_100K/{i + 1}.jpg"
        image_data.append(
            {
                "image_id": i + 1,
                "url": url,
                "width": w,
                "height": h,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        boxes = [
            (
                rng.randint(0, w // 2),
                rng.randint(0, h // 2),
                rng.randint(4, w // 2),
                rng.randint(4, h // 2),
            )
            for _ in range(2)
        ] + [(0, 0, 200, 100)]
        regions.append(
            {
                "id": i + 1,
                "regions": [
                    {
                        "region_id": 10 * i + k,
                        "image_id": i + 1,
                        "phrase": f"{_words(scene)}. Part {k}",
                        "x": x,
                        "y": y,
                        "width": bw,
                        "height": bh,
                    }
                    for k, (x, y, bw, bh) in enumerate(boxes)
                ],
            }
        )
    _dump(data_dir / "image_data.json", image_data)
    _dump(data_dir / "region_descriptions.json", regions)
    return {"refvg": {"data_dir": str(data_dir)}}


def write_flickr(root: Path, count: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(f"{SEED}:flickr")
    folder = root / "filtered_flickr"
    grounded, caption_to, phrase_to = [], [], []
    for i in range(count):
        image_id = str(36979 + i)
        scene, _ = _image(folder / "images" / f"{image_id}.jpg", i)
        box = _grid_box(rng)
        grounded.append(
            {
                "image_id": image_id,
                "grounded_caption": f"A <p>{scene.colour} {scene.shape}</p> {box} "
                f"on a {scene.background} background.",
            }
        )
        caption_to.append(
            {
                "image_id": image_id,
                "caption": f"A {scene.colour} {scene.shape}.",
                "output": f"<p>{scene.shape}</p> {box}<delim>{_grid_box(rng)}",
            }
        )
        phrase_to.append(
            {"image_id": image_id, "phrase": f"{scene.colour} {scene.shape}", "bbox": box}
        )
    image_path = str(folder / "images")
    return {
        "flickr_grounded_caption": {
            "image_path": image_path,
            "ann_path": str(_dump(folder / "groundedcaption.json", grounded)),
        },
        "flickr_CaptionToPhrase": {
            "image_path": image_path,
            "ann_path": str(_dump(folder / "captiontobbox.json", caption_to)),
        },
        "flickr_ObjectToPhrase": {
            "image_path": image_path,
            "ann_path": str(_dump(folder / "phrasetobbox.json", phrase_to)),
        },
    }


def _llava_record(image_id: int, scene: Any, turns: int) -> dict[str, Any]:
    conversations = [{"from": "human", "value": f"<image>\nWhat colour is the {scene.shape}?"}]
    for t in range(turns):
        conversations.append({"from": "gpt", "value": f"It is {scene.colour.capitalize()}. ({t})"})
        if t + 1 < turns:
            conversations.append({"from": "human", "value": f"And its size, part {t}?"})
    return {
        "id": f"{image_id:0>12}",
        "image": f"{image_id:0>12}.jpg",
        "conversations": conversations,
    }


def write_conversations(root: Path, count: int) -> dict[str, dict[str, Any]]:
    images = write_coco_images(root, count)
    image_path = str(root / "coco" / "images")
    info = {}
    for name, file, turns in (
        ("llava_detail", "llava/detail_23k.json", 1),
        ("llava_reason", "llava/complex_reasoning_77k.json", 1),
        ("llava_conversation", "llava/conversation_58k.json", 3),
        ("multitask_conversation", "multitask_conversation/multi_task_conversation.json", 2),
    ):
        records = [_llava_record(i, scene, turns) for i, scene, _ in images]
        info[name] = {"image_path": image_path, "ann_path": str(_dump(root / file, records))}
    words = ("circle", "square", "Star")
    unnatural = [
        {
            "instances": [
                {
                    "instruction_with_input": f"Write the word '{w}' backwards.",
                    "constraints": None if k % 2 else "Answer IN CAPITALS.",
                    "output": w[::-1].upper(),
                    "input": w,
                }
            ]
        }
        for k, w in enumerate(words[i % len(words)] for i in range(count))
    ]
    path = _dump(root / "unnatural_instructions" / "filtered_unnatural_instruction.json", unnatural)
    info["unnatural_instruction"] = {"ann_path": str(path)}
    return info


def write_vqa(root: Path, count: int) -> dict[str, dict[str, Any]]:
    images = write_coco_images(root, count)
    coco_storage = str(root / "coco" / "images")
    vqa, aok = [], []
    for n, (image_id, scene, _) in enumerate(images):
        image = f"train2014/COCO_train2014_{image_id:0>12}.jpg"
        vqa.append(
            {
                "question_id": 10 * n,
                "image": image,
                "question": "What Shape is it?",
                "answer": [scene.shape, scene.shape, f"a {scene.shape}", "Blob!"],
            }
        )
        aok.append(
            {
                "question_id": f"q{n}",
                "image": image,
                "question": "Which COLOUR?",
                "direct_answers": [scene.colour] * 3 + ["Dark", "light"],
                "choices": ["a", "b"],
                "correct_choice_idx": 0,
            }
        )
    vqa.append(
        {
            "question_id": 99,
            "image": "val2014/COCO_val2014_000000000042.jpg",
            "question": "absent image?",
            "answer": ["yes"],
        }
    )
    info = {}
    for name, file, records in (
        ("coco_vqa", "vqav2/vqa_train.json", vqa),
        ("ok_vqa", "okvqa/okvqa_train.json", vqa[::-1]),
        ("aok_vqa", "aokvqa/aokvqa_v1p0_train.json", aok),
    ):
        info[name] = {
            "annotations": {"train": {"storage": [str(_dump(root / file, records))]}},
            "images": {"storage": coco_storage},
        }
    gqa = []
    for i in range(count):
        scene, _ = _image(root / "gqa" / "images" / "train" / f"n{i}.jpg", i)
        gqa.append(
            {
                "image": f"n{i}.jpg",
                "question": f"Is the {scene.shape} {scene.colour}?",
                "answer": "Yes.",
                "question_id": str(i),
            }
        )
    info["gqa"] = {
        "annotations": {
            "train": {"storage": [str(_dump(root / "gqa" / "train_balanced_questions.json", gqa))]}
        },
        "images": {"storage": str(root / "gqa" / "images")},
    }
    return info


def write_ocrvqa_textcaps_captions(root: Path, count: int) -> dict[str, dict[str, Any]]:
    ocr, textcaps, karpathy = {}, {"data": []}, []
    for i in range(count):
        key = f"B000{i}"
        scene, _ = _image(root / "ocrvqa" / "images" / f"{key}.jpg", i)
        ocr[key] = {
            "imageURL": f"http://x/{key}.jpg",
            "title": "Shapes",
            "genre": "Art",
            "authorName": "x",
            "split": 1 if i < count - 1 else 3,
            "questions": ["Who wrote this book?", f"Is this a {scene.shape} book?"],
            "answers": ["X Y.", "Yes"],
        }
        _image(root / "textcaps" / "train_images" / f"tc{i}.jpg", i)
        textcaps["data"].append({"image_id": f"tc{i}", "caption_str": f"A sign: {_words(scene)}!"})
        karpathy.append(
            {
                "image": f"train2014/COCO_train2014_{coco_image_id(i):0>12}.jpg",
                "caption": f"{_words(scene).capitalize()} on {scene.background}.",
                "image_id": f"coco_{coco_image_id(i)}",
            }
        )
    karpathy.append(
        {"image": "val2014/COCO_val2014_000000000042.jpg", "caption": "Val.", "image_id": "coco_42"}
    )
    write_coco_images(root, count)
    return {
        "ocrvqa": {
            "image_path": str(root / "ocrvqa" / "images"),
            "ann_path": str(_dump(root / "ocrvqa" / "dataset.json", ocr)),
        },
        "textcaps_caption": {
            "image_path": str(root / "textcaps" / "train_images"),
            "ann_path": str(_dump(root / "textcaps" / "TextCaps_0.1_train.json", textcaps)),
        },
        "coco_caption": {
            "annotations": {
                "train": {
                    "storage": str(
                        _dump(root / "coco_caption" / "coco_karpathy_train.json", karpathy)
                    )
                }
            },
            "images": {"storage": str(root / "coco" / "images")},
        },
    }


def write_all(root: str | Path, count: int = COUNT) -> dict[str, dict[str, Any]]:
    """Every format under ``root``; ``{dataset name: build_info}``."""
    root = Path(root)
    info = {}
    for writer in (
        write_refer,
        write_visual_genome,
        write_flickr,
        write_conversations,
        write_vqa,
        write_ocrvqa_textcaps_captions,
    ):
        info.update(writer(root, count))
    return info


def config_options(info: dict[str, dict[str, Any]]) -> list[str]:
    """``--options`` that point a config's datasets at ``info`` (``datasets.<name>.build_info.
    <key>=<value>``; a list of annotation files is given as its one file)."""

    def flat(prefix: str, value: Any) -> list[str]:
        if isinstance(value, dict):
            return [o for k, v in value.items() for o in flat(f"{prefix}.{k}", v)]
        if isinstance(value, list):
            (value,) = value
        return [f"{prefix}={value}"]

    return [o for name, build in info.items() for o in flat(f"datasets.{name}.build_info", build)]

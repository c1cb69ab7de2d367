"""The multi-shape world (tiny_world/scenes.py) and its MiniGPT-v2 layouts written by
``dataset/make_synthetic.py --format refcoco|flickr|coco-caption|coco-vqa``: the boxes are where
the pixels are, and the project's own v2 datasets and RefCOCO evaluation reader read the files
back into the texts of each scene."""

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import minigpt4  # noqa: F401 (registers the builders)
from minigpt4.common.boxes import compute_iou, format_box, pixels_to_grid
from minigpt4.common.registry import registry
from minigpt4.evaluation import refcoco_data
from tiny_world import scenes
from tiny_world.world import BACKGROUND_RGB

REPO = Path(__file__).resolve().parents[1]
MAKE_SYNTHETIC = REPO / "dataset" / "make_synthetic.py"
SEED, COUNT, SIZE = 11, 12, 96


def make(fmt: str, out: Path, seed: int = SEED, count: int = COUNT) -> str:
    result = subprocess.run(
        [sys.executable, str(MAKE_SYNTHETIC), "--format", fmt, "--seed", str(seed),
         "--count", str(count), "--image-size", str(SIZE), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout


def options(stdout: str) -> dict[str, dict]:
    """The ``build_info`` of each dataset from the ``--options`` line the script prints."""
    (line,) = [x for x in stdout.splitlines() if "--options" in x]
    info: dict[str, dict] = {}
    for option in line.split("--options ")[1].split():
        key, value = option.split("=", 1)
        _, name, _, *path = key.split(".")
        node = info.setdefault(name, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return info


def build(name: str, build_info: dict):
    cfg = OmegaConf.create(
        {
            "build_info": build_info,
            "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}},
            "text_processor": {"train": {"name": "blip_caption"}},
        }
    )
    return registry.get_builder_class(name)(cfg, name=name).build_datasets()["train"]


def test_boxes_hold_exactly_the_drawn_shapes():
    counts = {1: 0, 2: 0, 3: 0}
    for index in range(40):
        sample = scenes.make_multi_sample(3, index, SIZE)
        things = sample.scene.things
        counts[len(things)] += 1
        assert len({(t.colour, t.shape) for t in things}) == len(things)
        assert [b[0] for b in sample.boxes] == sorted(b[0] for b in sample.boxes)
        pixels = np.asarray(sample.image).astype(int)
        background = np.array(BACKGROUND_RGB[sample.scene.background])
        drawn = np.abs(pixels - background).sum(-1) > 90
        covered = np.zeros_like(drawn)
        for x1, y1, x2, y2 in sample.boxes:
            covered[y1:y2, x1:x2] = True
            inside = drawn[y1:y2, x1:x2]
            # the shape touches every side of its box (within the anti-aliased edge)
            assert inside[:2].any() and inside[-2:].any()
            assert inside[:, :2].any() and inside[:, -2:].any()
        assert not (drawn & ~covered).any()  # nothing drawn outside the boxes
        for a in range(len(things)):
            for b in range(a):
                assert compute_iou(sample.boxes[a], sample.boxes[b]) == 0
    assert all(counts.values())  # one, two and three shapes all occur


def test_same_seed_same_bytes_and_scenes_do_not_depend_on_count(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    make("refcoco", tmp_path / "a")
    make("refcoco", tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    make("refcoco", tmp_path / "c", count=3)
    first = sorted((tmp_path / "c" / "images").iterdir())
    assert [p.read_bytes() for p in first] == [
        (tmp_path / "a" / "images" / p.name).read_bytes() for p in first
    ]


def test_refcoco_layout_trains_refer_and_identify_and_evaluates(tmp_path):
    info = options(make("refcoco", tmp_path))
    samples = [scenes.make_multi_sample(SEED, i, SIZE) for i in range(COUNT)]
    expected = [
        (scenes.expression(t), format_box(pixels_to_grid(box, SIZE, SIZE)))
        for s in samples
        for t, box in zip(s.scene.things, s.boxes, strict=True)
    ]
    refer, identify = build("refcoco", info["refcoco"]), build("invrefcoco", info["invrefcoco"])
    assert len(refer) == len(identify) == len(expected)
    random.seed(0)
    for k, (words, box) in enumerate(expected):
        asked = refer[k]
        assert asked["answer"] == box
        assert words in asked["instruction_input"]
        assert asked["instruction_input"].startswith("<Img><ImageHere></Img> [refer]")
        told = identify[k]
        assert told["answer"] in (words, f"the {words}")
        assert box in told["instruction_input"]
    items = refcoco_data.reader("refcoco")(tmp_path, None)
    assert [item.question for item in items] == [
        refcoco_data.ref_question(words) for words, _ in expected
    ]
    pixel_boxes = [list(box) for s in samples for box in s.boxes]
    assert [list(item.answer) for item in items] == pixel_boxes


def test_flickr_caption_and_vqa_layouts_give_each_scenes_texts(tmp_path):
    samples = [scenes.make_multi_sample(SEED, i, SIZE) for i in range(COUNT)]
    info = options(make("flickr", tmp_path / "f"))
    grounded = build("flickr_grounded_caption", info["flickr_grounded_caption"])
    assert [grounded[i]["answer"] for i in range(COUNT)] == [
        scenes.grounded_caption(s) for s in samples
    ]
    phrases = build("flickr_ObjectToPhrase", info["flickr_ObjectToPhrase"])
    assert len(phrases) == sum(len(s.scene.things) for s in samples)
    info = options(make("coco-caption", tmp_path / "c"))
    captions = build("coco_caption", info["coco_caption"])
    assert [captions[i]["answer"] for i in range(COUNT)] == [
        scenes.caption(s.scene) for s in samples
    ]
    info = options(make("coco-vqa", tmp_path / "v"))
    vqa = build("coco_vqa", info["coco_vqa"])
    pairs = [pair for s in samples for pair in scenes.vqa_pairs(s.scene)]
    assert len(vqa) == len(pairs)
    for k, (question, answer) in enumerate(pairs):
        assert question in vqa[k]["instruction_input"]
        assert vqa[k]["answer"] == answer


def test_styled_is_refused_for_the_v2_layouts(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as failed:
        subprocess.run(
            [sys.executable, str(MAKE_SYNTHETIC), "--format", "refcoco", "--count", "1",
             "--styled", "--out", str(tmp_path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    assert "--styled is for the one-shape world" in failed.value.stderr

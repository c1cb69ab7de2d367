"""Batch inference (``python -m minigpt4.inference``) on the tiny reference model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from minigpt4.conversation import Chat
from minigpt4.inference import answer_images, collect_images, main
from tests.model_fixtures import tiny_model_config

PROMPT = "What is in the picture?"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (240, 240, 240)]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    for i, colour in enumerate(COLOURS):
        pixels = np.full((64 + 8 * i, 96, 3), colour, dtype=np.uint8)
        pixels[10:30, 20 : 40 + 5 * i] = 255 - np.array(colour, dtype=np.uint8)
        folder = root / "sub" if i == 4 else root
        Image.fromarray(pixels).save(folder / f"img{i}.{'jpg' if i % 2 else 'png'}")
    (root / "notes.md").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def chat():
    import minigpt4  # noqa: F401
    from minigpt4.common.registry import registry

    model = registry.get_model_class("mini_gpt4").from_config(tiny_model_config(stage=2)).eval()
    proc = registry.get_processor_class("blip2_image_eval").from_config(None)
    return Chat(model, proc, device="cpu")


def test_collect_images_from_folders_lists_and_files(image_dir, tmp_path):
    found = collect_images([str(image_dir)])
    names = [Path(p).relative_to(image_dir).as_posix() for p in found]
    assert names == ["img0.png", "img1.jpg", "img2.png", "img3.jpg", "sub/img4.png"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{image_dir / 'img1.jpg'}\n\nrel.png\n")
    assert collect_images([str(listing), str(image_dir / "img0.png")]) == [
        str(image_dir / "img1.jpg"),
        str(tmp_path / "rel.png"),
        str(image_dir / "img0.png"),
    ]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        collect_images([str(tmp_path / "missing")])


def test_batched_answers_equal_the_chat(chat, image_dir):
    paths = collect_images([str(image_dir)])
    greedy = chat.settings(max_new_tokens=10, do_sample=False)
    records = answer_images(chat, paths, PROMPT, greedy, batch_size=2, progress=False)
    assert [r["image"] for r in records] == paths
    for record, path in zip(records, paths):
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(path, conv, img_list)
        chat.ask(PROMPT, conv)
        expected, _ = chat.answer(conv, img_list, max_new_tokens=10, do_sample=False)
        assert record == {"image": path, "prompt": PROMPT, "answer": expected}


def test_seeded_sampling_is_reproducible(chat, image_dir):
    """Same seed, same answers, whatever the batch size; another seed, other answers."""
    paths = collect_images([str(image_dir)])[:3]

    def run(seed, batch_size):
        settings = chat.settings(seed=seed, max_new_tokens=8)
        return answer_images(chat, paths, PROMPT, settings, batch_size=batch_size, progress=False)

    assert run(1, 3) == run(1, 3) == run(1, 1)
    assert run(1, 3) != run(2, 3)


def test_command_writes_one_json_line_per_image(image_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    cfg = OmegaConf.create(
        {
            "model": tiny_model_config(stage=2, low_resource=True),
            "datasets": {
                "cc_sbu_align": {
                    "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 224}}
                }
            },
            "run": {"task": "image_text_pretrain"},
        }
    )
    cfg_path = tmp_path / "tiny_eval.yaml"
    OmegaConf.save(cfg, cfg_path)
    out = tmp_path / "out" / "answers.jsonl"
    out.parent.mkdir()
    out.write_text("old content\n")

    main(
        [
            "--cfg-path",
            str(cfg_path),
            "--images",
            str(image_dir),
            str(broken),
            "--prompt",
            PROMPT,
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "6",
        ]
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    expected_paths = collect_images([str(image_dir)]) + [str(broken)]
    assert [r["image"] for r in records] == expected_paths
    assert all(r["prompt"] == PROMPT for r in records)
    assert all(isinstance(r["answer"], str) for r in records[:-1])
    assert records[-1]["answer"] is None and "cannot read image" in records[-1]["error"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["answers.jsonl"]  # no temp file left


def test_help_says_answers_are_sampled_unless_greedy(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Answers are sampled with the chat template's settings" in text
    assert "--greedy" in text and "no sampling (which is the default)" in text

"""Measure the tiny MiniGPT-v2 on unseen scenes: ``[identify]``, ``[caption]`` and ``[refer]``.

    python -m tiny_world.evaluate_v2 --cfg-path eval_configs/minigptv2_tiny_eval.yaml \\
        --seed 7777 --count 200 [--options model.ckpt=PATH] [--untrained]

Draws ``--count`` scenes of ``--seed`` (one no training step uses) at 224 px, stores and decodes
them as JPEG as the datasets do, and asks through the chat's batched answering (each question in
a fresh ``CONV_VISION_minigptv2`` conversation, greedy):

- identify: for each thing, "[identify] what object is in this location {box}" with its grid
  box; right when the answer's first colour and first shape word are the thing's;
- caption: "[caption] Briefly describe this image."; right when the colour+shape pairs the
  answer names are exactly the scene's things (each named, nothing extra);
- refer: for each thing, RefCOCO's question "[refer] give me the location of <expression>";
  right when the answer's box has IoU > 0.5 with the thing's (the rule of ``python -m
  minigpt4.evaluate --benchmark refcoco``, which is the real measure of this task).

``--untrained`` resets ``llama_proj`` to a fresh ``nn.Linear`` (the control).
"""

from __future__ import annotations

import argparse
import io
import logging
import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from minigpt4.common.boxes import (
    REF_PREFIX,
    clean_ref_answer,
    compute_iou,
    format_box,
    ref_answer_box,
)
from minigpt4.evaluation.refcoco import HIT_IOU
from tiny_world import scenes, v2_layouts, world
from tiny_world.evaluate import build_chat

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 7777
DEFAULT_COUNT = 200
MAX_NEW_TOKENS = 60
IDENTIFY_QUESTION = "[identify] what object is in this location {}"
CAPTION_QUESTION = "[caption] Briefly describe this image."
_PAIR = re.compile(rf"\b({'|'.join(world.COLOURS)}) ({'|'.join(world.SHAPES)})\b")


def held_out(seed: int, count: int) -> list[tuple[scenes.MultiSample, Image.Image]]:
    """Scenes with their images stored and decoded as JPEG, as the datasets hold them."""
    out = []
    for i in range(count):
        sample = scenes.make_multi_sample(seed, i)
        image = Image.open(io.BytesIO(world.to_jpeg_bytes(sample.image))).convert("RGB")
        out.append((sample, image))
    return out


def named_pairs(answer: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs an answer names, in order."""
    return _PAIR.findall(answer.lower())


def ask(chat: Any, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
    """Greedy answers, 25 rows a batch."""
    answers: list[str] = []
    for start in range(0, len(images), 25):
        batch = torch.stack([chat.vis_processor(im) for im in images[start : start + 25]])
        answers += chat.answer_batch(
            batch,
            list(questions[start : start + 25]),
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
        )
    return answers


def evaluate_chat(chat: Any, seed: int = HELD_OUT_SEED, count: int = DEFAULT_COUNT) -> dict:
    """Accuracies of identify, caption and refer, with every question and answer."""
    data = held_out(seed, count)
    per_thing = [
        (sample, image, thing, box)
        for sample, image in data
        for thing, box in zip(sample.scene.things, v2_layouts.grid_boxes(sample), strict=True)
    ]
    images = [image for _, image, _, _ in per_thing]
    identify = ask(chat, images, [IDENTIFY_QUESTION.format(format_box(b)) for *_, b in per_thing])
    refer_questions = [f"{REF_PREFIX} {scenes.expression(t)}" for _, _, t, _ in per_thing]
    refer = ask(chat, images, refer_questions)
    caption = ask(chat, [image for _, image in data], [CAPTION_QUESTION] * len(data))
    identify_ok = [
        named_pairs(a)[:1] == [(t.colour, t.shape)]
        for (_, _, t, _), a in zip(per_thing, identify, strict=True)
    ]
    refer_ok = [
        _refer_right(sample, k, answer)
        for (sample, k), answer in zip(_thing_indices(data), refer, strict=True)
    ]
    caption_ok = [
        sorted(named_pairs(a)) == sorted((t.colour, t.shape) for t in s.scene.things)
        for (s, _), a in zip(data, caption, strict=True)
    ]
    return {
        "identify": sum(identify_ok) / len(identify_ok),
        "caption": sum(caption_ok) / len(caption_ok),
        "refer": sum(refer_ok) / len(refer_ok),
        "things": len(per_thing),
        "images": len(data),
        "examples": {
            "identify": list(zip(identify[:5], identify_ok[:5], strict=True)),
            "caption": list(zip(caption[:5], caption_ok[:5], strict=True)),
            "refer": list(zip(refer[:5], refer_ok[:5], strict=True)),
        },
    }


def _thing_indices(data):
    return [(sample, k) for sample, _ in data for k in range(len(sample.scene.things))]


def _refer_right(sample: scenes.MultiSample, k: int, answer: str) -> bool:
    width, height = sample.image.size
    got = ref_answer_box(clean_ref_answer(answer), width, height)
    if got is None:
        return False
    # the ground truth as the refcoco benchmark reads it: [x, y, x + w, y + h] of the bbox
    return compute_iou(got, list(sample.boxes[k])) > HIT_IOU


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg-path", default="eval_configs/minigptv2_tiny_eval.yaml")
    parser.add_argument("--options", nargs="+", default=[])
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--untrained", action="store_true", help="fresh random llama_proj")
    parser.add_argument("--torch-seed", type=int, default=0, help="seeds --untrained's init")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    logger.setLevel(logging.INFO)
    torch.manual_seed(args.torch_seed)
    chat = build_chat(args.cfg_path, args.options, args.untrained)
    result = evaluate_chat(chat, args.seed, args.count)
    for task, examples in result["examples"].items():
        for answer, ok in examples:
            logger.info("[%s %s] %s", task, "ok" if ok else "WRONG", answer)
    logger.info(
        "seed %d, %d images (%d things): identify %.3f  caption %.3f  refer %.3f",
        args.seed,
        result["images"],
        result["things"],
        result["identify"],
        result["caption"],
        result["refer"],
    )
    return result


if __name__ == "__main__":
    from minigpt4.common.cli import run_command

    run_command(main, "python -m tiny_world.evaluate_v2")

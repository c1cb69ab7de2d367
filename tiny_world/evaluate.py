"""Measure how often the tiny MiniGPT-4 names the right colour and shape of unseen images.

    python -m tiny_world.evaluate --cfg-path eval_configs/minigpt4_tiny_eval.yaml \\
        --seed 7777 --count 200 [--options model.ckpt=path/to/checkpoint.pth] [--styled]

Renders ``--count`` images of the world from ``--seed`` (a seed no training step used), stores
and decodes them as JPEG like the datasets do, and asks each one "Describe this image." in the
demo's conversation (the Chat's template, prompt assembly, stop words and answer
post-processing), greedily. An answer counts when its first colour word and first shape word
are the image's (``world.scene_matches``). Logs the accuracy and a few answers.
``--untrained`` replaces ``llama_proj`` by a freshly initialised one (the chance baseline);
``--styled`` draws each image in a style sampled for it (``world.sample_style``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from minigpt4.common.atomic_write import atomic_write
from tiny_world import text, world

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 7777  # never used by any training step of the tiny world
# The shipped model's yes/no claim on the MME layout (accuracy, accuracy+, x 100; chance 50, 25)
MME_ACC_TARGET, MME_ACC_PLUS_TARGET = 85.0, 70.0
DEFAULT_COUNT = 200
MAX_NEW_TOKENS = 60  # the longest description is ~40 tokens


@dataclass
class Result:
    accuracy: float
    colour_accuracy: float
    shape_accuracy: float
    answers: list[dict[str, Any]]


def held_out_images(
    seed: int, count: int, styled: bool = False
) -> list[tuple[world.Scene, Image.Image]]:
    """World samples stored and decoded as 224 px JPEG, as the datasets hold them (``styled``:
    each drawn in a sampled style, ``world.make_sample``)."""
    out = []
    for i in range(count):
        sample = world.make_sample(seed, i, styled=styled)
        image = Image.open(io.BytesIO(world.to_jpeg_bytes(sample.image))).convert("RGB")
        out.append((sample.scene, image))
    return out


def describe(chat: Any, images: Sequence[Image.Image], batch_size: int = 25) -> list[str]:
    """The chat's greedy answers to "Describe this image." for each image, in the demo's
    conversation (batched)."""
    answers: list[str] = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([chat.vis_processor(im) for im in images[start : start + batch_size]])
        answers += chat.answer_batch(
            batch, text.DEMO_QUESTION, max_new_tokens=MAX_NEW_TOKENS, do_sample=False
        )
    return answers


def score(samples: Sequence[tuple[world.Scene, Image.Image]], answers: Sequence[str]) -> Result:
    records, hits, colour_hits, shape_hits = [], 0, 0, 0
    for (scene, _), answer in zip(samples, answers, strict=True):
        parsed = world.parse_answer(answer)
        ok = world.scene_matches(scene, answer)
        hits += ok
        colour_hits += parsed["colour"] == scene.colour
        shape_hits += parsed["shape"] == scene.shape
        records.append({"scene": scene.__dict__, "answer": answer, "correct": ok})
    n = len(samples)
    return Result(hits / n, colour_hits / n, shape_hits / n, records)


def evaluate_chat(
    chat: Any, seed: int = HELD_OUT_SEED, count: int = DEFAULT_COUNT, styled: bool = False
) -> Result:
    samples = held_out_images(seed, count, styled)
    return score(samples, describe(chat, [im for _, im in samples]))


def build_chat(cfg_path: str, options: Sequence[str] | None = None, untrained: bool = False) -> Any:
    """A CPU Chat on the model of an eval config (``untrained``: fresh ``llama_proj``)."""
    from minigpt4.common.config import Config
    from minigpt4.conversation.loading import build_chat

    cfg = Config(argparse.Namespace(cfg_path=cfg_path, options=list(options or [])))
    chat = build_chat(cfg, "cpu")
    if untrained:
        chat.model.llama_proj.reset_parameters()  # nn.Linear's own random init, as before stage 1
    return chat


def main(argv: Sequence[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg-path", default="eval_configs/minigpt4_tiny_eval.yaml")
    parser.add_argument("--options", nargs="+", default=[])
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--untrained", action="store_true", help="fresh random llama_proj")
    parser.add_argument(
        "--styled", action="store_true", help="images drawn in sampled styles (named shades...)"
    )
    parser.add_argument("--torch-seed", type=int, default=0, help="seeds --untrained's init")
    parser.add_argument("--show", type=int, default=5, help="answers to print")
    parser.add_argument("--json", help="write every answer to this file")
    args = parser.parse_args(argv)
    # Only this tool's report on the console, not the model's loading messages.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    logger.setLevel(logging.INFO)
    torch.manual_seed(args.torch_seed)
    chat = build_chat(args.cfg_path, args.options, args.untrained)
    result = evaluate_chat(chat, args.seed, args.count, args.styled)
    for record in result.answers[: args.show]:
        s = record["scene"]
        mark = "ok" if record["correct"] else "WRONG"
        logger.info("[%s] %s %s: %s", mark, s["colour"], s["shape"], record["answer"])
    logger.info(
        "accuracy (colour and shape right) %.3f on %d images of seed %d; colour %.3f, shape %.3f",
        result.accuracy,
        args.count,
        args.seed,
        result.colour_accuracy,
        result.shape_accuracy,
    )
    if args.json:
        with atomic_write(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"accuracy": result.accuracy, "answers": result.answers}, f, indent=1)
    return result


if __name__ == "__main__":
    from minigpt4.common.cli import run_command

    run_command(main, "python -m tiny_world.evaluate")

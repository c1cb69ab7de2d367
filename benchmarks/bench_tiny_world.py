"""Time the shipped tiny-world model on this machine and print the numbers (no assertions).

python benchmarks/bench_tiny_world.py             # load, encode_img, an answer, 200-image eval
python benchmarks/bench_tiny_world.py --count 50  # fewer held-out images

The tiny model is what runs when there is no GPU and no real weights: these are the seconds a user
waits for the demo to start and answer, and what the held-out evaluation costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from benchmarks.roofline import this_machine
from tiny_world import evaluate, text

EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=evaluate.DEFAULT_COUNT)
    args = parser.parse_args()
    torch.manual_seed(0)

    t0 = time.perf_counter()
    chat = evaluate.build_chat(EVAL_CONFIG)
    load_s = time.perf_counter() - t0
    samples = evaluate.held_out_images(evaluate.HELD_OUT_SEED, args.count)
    image = samples[0][1]

    with torch.no_grad():
        pixels = chat.vis_processor(image)[None]
        chat.model.encode_img(pixels)
        t0 = time.perf_counter()
        for _ in range(20):
            chat.model.encode_img(pixels)
        encode_ms = (time.perf_counter() - t0) / 20 * 1000

    conv, img_list = chat.new_conversation(), []
    chat.upload_img(image, conv, img_list)
    chat.ask(text.DEMO_QUESTION, conv)
    t0 = time.perf_counter()
    answer, tokens = chat.answer(conv, img_list, do_sample=False)
    answer_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = evaluate.evaluate_chat(chat, evaluate.HELD_OUT_SEED, args.count)
    eval_s = time.perf_counter() - t0

    print(f"machine              {this_machine().describe()}")
    print(f"load model           {load_s:6.2f} s")
    print(f"encode_img (1 image) {encode_ms:6.2f} ms")
    print(
        f"one demo answer      {answer_s:6.2f} s  ({len(tokens)} tokens, "
        f"{len(tokens) / answer_s:.0f} tokens/s)  {answer!r}"
    )
    print(
        f"held-out eval        {eval_s:6.2f} s for {args.count} images "
        f"(accuracy {result.accuracy:.3f})"
    )


if __name__ == "__main__":
    main()

"""Time the shipped tiny-world model on this machine and print the numbers (no assertions).

python benchmarks/bench_tiny_world.py             # load, encode_img, an answer, 200-image eval
python benchmarks/bench_tiny_world.py --count 50  # fewer held-out images

The tiny model is what runs when there is no GPU and no real weights: these are the seconds a user
waits for the demo to start and answer, and what the held-out evaluation costs.

Each phase is printed beside its share of its bound on this machine (``roofline.py``, measured
at the model's own Linear shapes, a few seconds): the image encode against the matmul peak of
its dtype (its FLOPs counted by torch's FLOP counter); the answer and the evaluation (an encode
and an answer per image) against the larger of their FLOPs over that peak and the LLM weights
they read over the read bandwidth (every LLM call reads them once: ``work.py``). The tiny LLM's
weights fit in the cache, and stay there from one token to the next, so that bandwidth is
measured over as many bytes as they hold: the cache's. The work of the answer and of the
evaluation is counted on a second, untimed run of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import roofline  # noqa: E402
import torch  # noqa: E402
import work  # noqa: E402
from bench_real_size import matmul_dtypes  # noqa: E402

from tiny_world import evaluate, text  # noqa: E402

EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"


def demo_answer(chat, image):
    """The demo's upload and question; the answer is the call returned."""
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(image, conv, img_list)
    chat.ask(text.DEMO_QUESTION, conv)
    return lambda: chat.answer(conv, img_list, do_sample=False)


def share(seconds: float, run, chat, roof: roofline.Roofline) -> str:
    """``seconds``' share of the bound of what ``run()`` does (run again, counted)."""
    done = work.count(run, chat.model, chat.model.llama_model)
    dtypes = tuple(sorted(set(matmul_dtypes(chat.model).values())))
    return roofline.format_percent(roofline.percent_of_bound(seconds, done.bound_s(roof, dtypes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=evaluate.DEFAULT_COUNT)
    args = parser.parse_args()
    torch.manual_seed(0)

    t0 = time.perf_counter()
    chat = evaluate.build_chat(EVAL_CONFIG)
    load_s = time.perf_counter() - t0
    roof = work.measure_at(chat.model, "cpu")
    samples = evaluate.held_out_images(evaluate.HELD_OUT_SEED, args.count)
    image = samples[0][1]

    with torch.no_grad():
        pixels = chat.vis_processor(image)[None]
        chat.model.encode_img(pixels)
        t0 = time.perf_counter()
        for _ in range(20):
            chat.model.encode_img(pixels)
        encode_s = (time.perf_counter() - t0) / 20
        encode_share = share(encode_s, lambda: chat.model.encode_img(pixels), chat, roof)

    t0 = time.perf_counter()
    answer, tokens = demo_answer(chat, image)()
    answer_s = time.perf_counter() - t0
    answer_share = share(answer_s, demo_answer(chat, image), chat, roof)

    def run_eval():
        return evaluate.evaluate_chat(chat, evaluate.HELD_OUT_SEED, args.count)

    t0 = time.perf_counter()
    result = run_eval()
    eval_s = time.perf_counter() - t0
    eval_share = share(eval_s, run_eval, chat, roof)

    print(f"machine              {roof.machine.describe()}")
    print(f"roofline             {roof.summary()} (over the tiny model's weights)")
    print(f"load model           {load_s:6.2f} s")
    print(f"encode_img (1 image) {encode_s * 1000:6.2f} ms  ({encode_share} of its bound)")
    print(
        f"one demo answer      {answer_s:6.2f} s  ({len(tokens)} tokens, "
        f"{len(tokens) / answer_s:.0f} tokens/s; {answer_share} of its bound)  {answer!r}"
    )
    print(
        f"held-out eval        {eval_s:6.2f} s for {args.count} images "
        f"(accuracy {result.accuracy:.3f}; {eval_share} of its bound)"
    )


if __name__ == "__main__":
    main()

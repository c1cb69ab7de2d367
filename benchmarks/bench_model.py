"""Time the model's hot paths and print the numbers (no assertions).

python benchmarks/bench_model.py                # tiny model: encode_img, forward+backward
python benchmarks/bench_model.py --full-vit     # + one real-size EVA ViT-g forward
                                                #   (random weights, ~4 GB RAM in fp32)
python benchmarks/bench_model.py --device cuda  # on a GPU (fp16 autocast, as the original)
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
from minigpt4.models.eva_vit import EvaVitConfig, convert_weights_to_fp16, create_eva_vit_g
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import load_reference, tiny_model_config


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-vit", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    ref = load_reference()
    print(f"on {this_machine(args.device).describe()}")

    start = time.perf_counter()
    model = MiniGPT4.from_config(tiny_model_config(stage=2, device=args.device)).to(args.device)
    print(f"tiny model from_config: {time.perf_counter() - start:.2f} s")
    images = ref["images_eval_processed"].to(args.device)
    samples = {"image": images, "text_input": list(ref["stage2"]["text"])}

    def encode():
        with torch.no_grad():
            model.encode_img(images)

    def train_step():
        model.zero_grad(set_to_none=True)
        model(samples)["loss"].backward()

    print(f"tiny encode_img, batch 2: {timed(encode, args.repeats, args.device) * 1e3:.1f} ms")
    step_ms = timed(train_step, args.repeats, args.device) * 1e3
    print(f"tiny forward+backward, batch 2: {step_ms:.1f} ms")

    if args.full_vit:
        vit = create_eva_vit_g(EvaVitConfig()).eval()
        if args.device == "cuda":
            convert_weights_to_fp16(vit)
        vit.to(args.device)
        image = torch.randn(1, 3, 224, 224, device=args.device)

        def vit_forward():
            with torch.no_grad(), torch.autocast(args.device, enabled=args.device == "cuda"):
                vit(image)

        seconds = timed(vit_forward, max(1, args.repeats // 2), args.device)
        print(f"EVA ViT-g (39 blocks) forward, 1 image 224x224: {seconds:.2f} s")


if __name__ == "__main__":
    main()

"""Time the model's hot paths and print the numbers (no assertions).

python benchmarks/bench_model.py                # tiny model: encode_img, forward+backward
python benchmarks/bench_model.py --full-vit     # + one real-size EVA ViT-g forward
                                                #   (random weights, ~4 GB RAM in fp32)
python benchmarks/bench_model.py --device cuda  # on a GPU (fp16 autocast, as the original)

Each time is printed beside its share of this machine's compute bound (``roofline.py``, measured
at the shapes of the model's own Linear layers, a few seconds for the tiny model): the FLOPs of
the call (torch's FLOP counter, forward and backward; ``work.py``) over the matmul peak of the
dtype its products run in. The tiny model's shares are small: its products are too small to keep
a core busy, and the Python between them costs more than they do.
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

from minigpt4.models.eva_vit import EvaVitConfig, convert_weights_to_fp16, create_eva_vit_g  # noqa: E402
from minigpt4.models.mini_gpt4 import MiniGPT4  # noqa: E402
from tests.model_fixtures import load_reference, tiny_model_config  # noqa: E402

DTYPES = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds per call after one warm-up call."""
    times = roofline.repeat_times(fn, repeats, device)
    return sorted(times)[len(times) // 2]


def report(name: str, fn, model, dtypes, roof: roofline.Roofline, args) -> None:
    """One line: ``fn``'s median time and its share of its compute bound."""
    seconds = timed(fn, args.repeats, args.device)
    bound = work.count(fn, model).bound_s(roof, dtypes)
    share = roofline.format_percent(roofline.percent_of_bound(seconds, bound))
    shown = f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
    print(f"{name}: {shown} ({share} of its {'/'.join(dtypes)} compute bound)")


def tiny(args: argparse.Namespace) -> None:
    ref = load_reference()
    start = time.perf_counter()
    model = MiniGPT4.from_config(tiny_model_config(stage=2, device=args.device)).to(args.device)
    print(f"tiny model from_config: {time.perf_counter() - start:.2f} s")
    roof = work.measure_at(model, args.device, DTYPES[args.device])
    print(f"tiny model's roofline: {roof.summary()}")
    images = ref["images_eval_processed"].to(args.device)
    samples = {"image": images, "text_input": list(ref["stage2"]["text"])}
    dtypes = matmul_dtypes(model)

    def encode():
        with torch.no_grad():
            model.encode_img(images)

    def train_step():
        model.zero_grad(set_to_none=True)
        model(samples)["loss"].backward()

    report("tiny encode_img, batch 2", encode, model, (dtypes["encode_dtype"],), roof, args)
    report("tiny forward+backward, batch 2", train_step, model, tuple(sorted(set(dtypes.values()))),
           roof, args)  # fmt: skip


def full_vit(args: argparse.Namespace) -> None:
    vit = create_eva_vit_g(EvaVitConfig()).eval()
    if args.device == "cuda":
        convert_weights_to_fp16(vit)
    vit.to(args.device)
    roof = work.measure_at(vit, args.device, DTYPES[args.device])
    print(f"EVA ViT-g's roofline: {roof.summary()}")
    image = torch.randn(1, 3, 224, 224, device=args.device)

    def vit_forward():
        with torch.no_grad(), torch.autocast(args.device, enabled=args.device == "cuda"):
            vit(image)

    dtype = "fp16" if args.device == "cuda" else "fp32"  # cuda's autocast default
    args.repeats = max(1, args.repeats // 2)
    report("EVA ViT-g (39 blocks) forward, 1 image 224x224", vit_forward, vit, (dtype,), roof,
           args)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-vit", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"on {roofline.this_machine(args.device).describe()}")
    tiny(args)
    if args.full_vit:
        full_vit(args)


if __name__ == "__main__":
    main()

"""8-bit and 4-bit matrix products on the CPU at the 7B's Linear shapes: bitsandbytes' paths
against torch's int8 and int4 CPU kernels.

python benchmarks/bench_quantized_cpu.py [--threads 1] [--repeats 5] [--shapes 4096x4096 ...]

8-bit (bitsandbytes' int8 rows and row absmax, as a loaded 8-bit LLM holds them):
- ``bnb LLM.int8``: bitsandbytes' inference path (activations quantized to int8 too, outlier
  columns split off): what an 8-bit LLM ran on CPU before :mod:`minigpt4.models.int8_linear`;
- ``torch int8``: ``aten._weight_int8pack_mm`` (weight-only, bf16 activations): that module's
  path for fewer than ``DEQUANTIZE_MIN_ROWS`` rows;
- ``int8 dequantized, fp32``: the int8 weight converted into a reused fp32 buffer, one fp32
  product, its output scaled per row: its path from there on where bf16 products are emulated.

4-bit (NF4, blocks of 64, as the project's 4-bit mode loads it):
- ``bnb generic``: what bitsandbytes does for a 4-bit layer on a CPU without AVX512_BF16:
  dequantize the whole weight and multiply in the activations' dtype (bf16);
- ``bnb generic, fp32``: the same, multiplied in fp32;
- ``bnb packed (AVX512_BF16)``, on CPUs with AVX512_BF16 only: bitsandbytes' fused kernel on
  its repacked weight (what the 4-bit mode runs there);
- ``torch int4``: ``aten._weight_int4pack_mm_for_cpu`` (groups of 32 with scale and zero point,
  the weight packed once), bf16 activations: :mod:`minigpt4.models.int4_linear`'s path for
  fewer than its ``DEQUANTIZE_MIN_ROWS`` rows on CPUs without AVX512_BF16;
- ``int4 dequantized, fp32``: its packed weight dequantized into the reused fp32 buffer, then
  an fp32 product: that module's path from there on (and its backward pass).

Best of ``--repeats`` ms per product, one thread by default, beside its share of this machine's
bound (``roofline.py``, measured first): the larger of the weight's stored bytes over the read
bandwidth and the FLOPs over the best matmul peak (fp32 or bf16); and each path's largest error
against the fp32 product with the weight it dequantizes to (relative to the largest output).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import roofline  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minigpt4.models import int4_linear  # noqa: E402
from minigpt4.models.int8_linear import scaled_product  # noqa: E402

SHAPES = ("4096x4096", "11008x4096")  # N x K: q/k/v/o and gate/up
ROWS = (1, 16, 32, 64, 128)
NF4_BLOCK = 64  # the 4-bit mode's NF4 blocks
GROUP = int4_linear.GROUP_SIZE


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def int8_paths(weight: torch.Tensor) -> tuple[dict, torch.Tensor, int]:
    import bitsandbytes as bnb

    # LLM.int8() logs a note on its fp16 cast at every call (bf16 inputs, as the LLM's)
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    n, k = weight.shape
    layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False)
    layer = layer.to("cpu").eval()
    rows, scales = layer.weight.data, layer.weight.SCB / 127

    def torch_int8(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, rows, scales.to(x.dtype))

    def fp32(x: torch.Tensor) -> torch.Tensor:
        return scaled_product(x, rows, scales, None, torch.float32).to(x.dtype)

    fns = {"bnb LLM.int8": layer, "torch int8": torch_int8, "int8 dequantized, fp32": fp32}
    full = rows.float() * scales.float()[:, None]
    return fns, full, _bytes(rows, scales)


def nf4_paths(weight: torch.Tensor) -> tuple[dict, torch.Tensor, int]:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(weight, blocksize=NF4_BLOCK, quant_type="nf4")

    def generic(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, bnbf.dequantize_4bit(packed, state).to(x.dtype))

    def generic_fp32(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), bnbf.dequantize_4bit(packed, state).float()).to(x.dtype)

    full = bnbf.dequantize_4bit(packed, state).float()
    fns = {"bnb generic": generic, "bnb generic, fp32": generic_fp32}
    if bnbf.has_avx512bf16():  # its fused kernel: the layer repacks itself on its first call
        n, k = weight.shape
        layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16)
        layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4",
                                         blocksize=NF4_BLOCK)  # fmt: skip
        layer = layer.to("cpu").eval()
        fns["bnb packed (AVX512_BF16)"] = layer
    return fns, full, _bytes(packed, state.absmax)


def torch_int4_path(weight: torch.Tensor) -> tuple[dict, torch.Tensor, int]:
    n, k = weight.shape
    values, scales = int4_linear.quantize(weight)
    packed = int4_linear.pack(values)

    def int4(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, scales)

    def fp32(x: torch.Tensor) -> torch.Tensor:
        full_t = int4_linear.dequantize_transposed(packed, scales, k, torch.float32)
        return (x.float() @ full_t).to(x.dtype)

    full = int4_linear.dequantize_transposed(packed, scales, k, torch.float32).t().clone()
    fns = {"torch int4": int4, "int4 dequantized, fp32": fp32}
    return fns, full, _bytes(packed, scales)


def measure(shapes, repeats: int, roof: roofline.Roofline) -> list[list[str]]:
    rows = []
    for n, k in shapes:
        weight = torch.randn(n, k, dtype=torch.bfloat16) * 0.02
        paths = []
        for build in (int8_paths, nf4_paths, torch_int4_path):
            fns, full, stored = build(weight)
            paths += [(name, fn, full, stored) for name, fn in fns.items()]
        for m in ROWS:
            x = torch.randn(m, k, dtype=torch.bfloat16)
            for name, fn, full, stored in paths:
                with torch.no_grad():
                    best = min(roofline.repeat_times(lambda fn=fn, x=x: fn(x), repeats, "cpu"))
                    out = fn(x).float()
                bound = roof.bound_s(2 * m * k * n, ("fp32", "bf16"), stored)
                exact = x.float() @ full.t()
                error = (out - exact).abs().max() / exact.abs().max()
                rows.append([f"{k} x {n}", str(m), name, f"{best * 1e3:.2f}",
                             roofline.format_percent(roofline.percent_of_bound(best, bound)),
                             f"{error:.1e}"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="N x K of each weight")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in text.split("x")) for text in args.shapes]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(roofline.this_machine().describe())
    for key in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        print(f"{key}={os.environ.get(key, '(unset)')}")
    kn = tuple((k, n) for n, k in shapes)
    roof = roofline.measure("cpu", ("fp32", "bf16"), roofline.ROWS, kn, args.repeats)
    print(roof.summary())
    print("| K x N | M | path | ms | of bound | max error / max output |")
    print("|---|---|---|---|---|---|")
    for row in measure(shapes, args.repeats, roof):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

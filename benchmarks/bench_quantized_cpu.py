"""4-bit matrix products on the CPU at the 7B's Linear shapes: bitsandbytes' generic path
against torch's int4 CPU kernel.

python benchmarks/bench_int4_cpu.py
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_int4_cpu.py   # AVX2

- ``bnb generic``: what bitsandbytes does for a 4-bit (NF4) layer on a CPU without AVX512_BF16:
  dequantize the whole weight (its CPU kernel) and multiply in the activations' dtype (bf16);
- ``bnb generic, fp32``: the same, multiplied in fp32 (what ``model.cpu_matmul`` would pick for
  many rows where bf16 is emulated);
- ``torch int4``: ``aten._weight_int4pack_mm_for_cpu`` (groups of 64 with scale and zero point,
  the weight packed once), bf16 activations.

Best of ``--repeats`` ms per product, one thread by default, beside its share of this machine's
bound (``roofline.py``, measured first): one row reads the packed weight (its bytes, scales
included, over the read bandwidth), 64 rows are compute-bound at the peak of the dtype the
product runs in; and each path's largest error against the fp32 product with the weight it
dequantizes to (relative to the largest output).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]

import roofline  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SHAPES = ((4096, 4096), (11008, 4096))  # (N, K): q/k/v/o and gate/up
ROWS = (1, 64)
GROUP = 64  # torch int4 group size (bitsandbytes' NF4 blocks are 64 too)


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def bnb_paths(weight: torch.Tensor) -> tuple[dict, torch.Tensor]:
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(weight, blocksize=GROUP, quant_type="nf4")

    def generic(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, bnbf.dequantize_4bit(packed, state).to(x.dtype))

    def generic_fp32(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), bnbf.dequantize_4bit(packed, state).float()).to(x.dtype)

    dequantized = bnbf.dequantize_4bit(packed, state).float()
    stored = _bytes(packed, state.absmax)
    return {"bnb generic": generic, "bnb generic, fp32": generic_fp32}, dequantized, stored


def torch_int4_path(weight: torch.Tensor) -> tuple[dict, torch.Tensor]:
    n, k = weight.shape
    groups = weight.float().reshape(n, k // GROUP, GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-8)
    q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
    # torch's kernel computes (q - 8) * scale + zero: zero is the group's middle value
    zero = low + 8 * scale
    scales = torch.stack([scale.squeeze(-1).t(), zero.squeeze(-1).t()], -1)
    scales = scales.to(torch.bfloat16).contiguous()

    def int4(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, scales)

    dequantized = (q.reshape(n, k // GROUP, GROUP) * scale + low).reshape(n, k)
    return {"torch int4": int4}, dequantized, _bytes(packed, scales)


def bound_s(roof: roofline.Roofline, path: str, m: int, k: int, n: int, stored: int) -> float:
    """One row reads the packed weight; more rows are compute-bound in the product's dtype."""
    if m == 1:
        return roof.memory_bound_s(stored)
    return roof.compute_bound_s(2 * m * k * n, "fp32" if "fp32" in path else "bf16")


def measure(repeats: int, roof: roofline.Roofline) -> list[list[str]]:
    rows = []
    for n, k in SHAPES:
        weight = torch.randn(n, k, dtype=torch.bfloat16) * 0.02
        paths = []
        for build in (bnb_paths, torch_int4_path):
            fns, dequantized, stored = build(weight)
            paths += [(name, fn, dequantized, stored) for name, fn in fns.items()]
        for m in ROWS:
            x = torch.randn(m, k, dtype=torch.bfloat16)
            for name, fn, dequantized, stored in paths:
                best = min(roofline.repeat_times(lambda fn=fn, x=x: fn(x), repeats, "cpu"))
                share = roofline.percent_of_bound(best, bound_s(roof, name, m, k, n, stored))
                exact = x.float() @ dequantized.t()
                error = (fn(x).float() - exact).abs().max() / exact.abs().max()
                rows.append([f"{k} x {n}", str(m), name, f"{best * 1e3:.2f}",
                             roofline.format_percent(share), f"{error:.1e}"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(roofline.this_machine().describe())
    for key in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        print(f"{key}={os.environ.get(key, '(unset)')}")
    kn = tuple((k, n) for n, k in SHAPES)
    roof = roofline.measure("cpu", ("fp32", "bf16"), ROWS, kn, args.repeats)
    print(roof.summary())
    print("| K x N | M | path | ms | of bound | max error / max output |")
    print("|---|---|---|---|---|---|")
    for row in measure(args.repeats, roof):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

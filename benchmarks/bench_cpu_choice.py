"""The CPU's matmul dtype choice (``model.cpu_dtype: auto``) at the 7B's real layer sizes.

python benchmarks/bench_cpu_choice.py                       # this CPU as it is
ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_cpu_choice.py   # as an AVX2-only CPU

One layer of each phase, random weights of the real sizes, in four ways: bf16 weights and
products, fp32 weights and products, bf16 weights with fp32 products of the large ones
(:mod:`minigpt4.models.upcast_linear`), and *auto*: what ``model.cpu_dtype: auto`` runs on this
machine, its layers routed as loading routes them (one of the two bf16 ways, with one-row
products out of oneDNN where that is faster: :mod:`minigpt4.models.one_row_linear`):

- encode: one of EVA ViT-g's 39 blocks on one 224 px image's 257 tokens;
- prefill: one LLaMA-7B decoder layer on 64 and on 300 tokens;
- decode: the same layer on one token (no KV cache: the seven weight products, which read the
  whole layer, are what the time is).

It prints each one's best time of ``--repeats`` (after a warm-up call) beside its share of this
machine's bound (``roofline.py``, measured first: encode and prefill against the matmul peak of
the dtype the products run in, their FLOPs counted as ``work.py`` counts them; decode against
the bytes of the layer's weights over the read bandwidth), what ``auto`` chooses on this machine
and why, and auto's time against bf16's (today's default).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import roofline  # noqa: E402
import torch  # noqa: E402
import work  # noqa: E402
from torch import nn  # noqa: E402

from minigpt4.models import cpu_choice  # noqa: E402
from minigpt4.models.eva_vit import EvaVitConfig, create_eva_vit_g  # noqa: E402
from minigpt4.models.loading.model import route_cpu_products  # noqa: E402

WAYS = ("bf16", "fp32", "upcast", "auto")
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32}
PREFILL_ROWS = (64, 300)
VIT_G_KN = ((1408, 4224), (1408, 6144))  # EVA ViT-g's qkv and MLP weights


def _vit_block() -> tuple[nn.Module, Callable[[torch.dtype], tuple]]:
    config = EvaVitConfig(depth=1)
    vit = create_eva_vit_g(config)
    tokens = config.num_patches + 1
    return vit.blocks[0], lambda dtype: (torch.randn(1, tokens, config.embed_dim, dtype=dtype),)


def _llama_layer(rows: int) -> tuple[nn.Module, Callable[[torch.dtype], tuple]]:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(**LLAMA_7B, num_hidden_layers=1, attn_implementation="sdpa")
    layer = LlamaDecoderLayer(config, layer_idx=0)
    rotary = LlamaRotaryEmbedding(config)

    def inputs(dtype: torch.dtype) -> tuple:
        x = torch.randn(1, rows, config.hidden_size, dtype=dtype)
        positions = torch.arange(rows)[None]
        return (x,), {"position_embeddings": rotary(x, positions), "position_ids": positions}

    return layer, inputs


def _prepare(module: nn.Module, make_inputs, way: str) -> tuple[tuple, dict]:
    """``module`` computed ``way`` (in place) and its inputs."""
    dtype = torch.float32 if way == "fp32" else torch.bfloat16
    module.to(dtype).requires_grad_(False).eval()
    if way == "upcast":
        route_cpu_products(module, cpu_choice.choose("auto", "fp32"))
    elif way == "auto":
        route_cpu_products(module, cpu_choice.choose("auto", "auto"))
    made = make_inputs(dtype)
    return made if isinstance(made[-1], dict) else (made, {})


def _run(module: nn.Module, make_inputs, way: str, repeats: int) -> dict:
    """Best seconds of one forward of ``module`` computed ``way``, its matmul FLOPs and the
    bytes of its weights."""
    args, kwargs = _prepare(module, make_inputs, way)
    with torch.no_grad():
        times = roofline.repeat_times(lambda: module(*args, **kwargs), repeats, "cpu")
        flops = work.count(lambda: module(*args, **kwargs), module).flops
    return {"s": min(times), "flops": flops, "bytes": work.weight_bytes(module)}


def bound_s(roof: roofline.Roofline, run: dict, way: str, tokens: int) -> float | None:
    """The least time this machine could take: one token reads the weights (memory-bound),
    more are compute-bound at the peak of the dtype their products run in."""
    if tokens == 1:
        return roof.memory_bound_s(run["bytes"])
    upcasts = way == "upcast" or (way == "auto" and cpu_choice.choose("auto", "auto").upcast)
    fp32_products = way == "fp32" or (upcasts and tokens >= cpu_choice.UPCAST_MIN_ROWS)
    return roof.compute_bound_s(run["flops"], "fp32" if fp32_products else "bf16")


def phases() -> list[tuple[str, int, Callable]]:
    rows = [("encode: ViT-g block, 257 tokens", 257, _vit_block)]
    rows += [(f"prefill: LLaMA-7B layer, {m} tokens", m, lambda m=m: _llama_layer(m))
             for m in PREFILL_ROWS]  # fmt: skip
    rows.append(("decode: LLaMA-7B layer, 1 token", 1, lambda: _llama_layer(1)))
    return rows


def measure(repeats: int, roof: roofline.Roofline) -> list[dict]:
    choice = cpu_choice.choose("auto", "auto")
    results = []
    for name, tokens, build in phases():
        runs = {}
        for way in WAYS:
            module, make_inputs = build()
            run = _run(module, make_inputs, way, repeats)
            run["percent"] = roofline.percent_of_bound(run["s"], bound_s(roof, run, way, tokens))
            runs[way] = run
            del module
        upcasts = choice.upcast and tokens >= choice.min_rows
        one_row = choice.one_row_aten and tokens == 1
        picks = "fp32 products" if upcasts else "bf16, oneDNN off" if one_row else "bf16"
        results.append({"phase": name, "tokens": tokens, **runs, "picks": picks})
    return results


def table(results: list[dict]) -> str:
    """Markdown: each way's ms (its share of the bound), auto's pick and its time against bf16."""
    lines = ["| phase | bf16 ms | fp32 ms | bf16 weights, fp32 products ms | auto ms | "
             "auto runs | auto / bf16 time |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        ms = {way: f"{r[way]['s'] * 1e3:.1f} ({roofline.format_percent(r[way]['percent'])})"
              for way in WAYS}  # fmt: skip
        ratio = r["auto"]["s"] / r["bf16"]["s"]
        lines.append(f"| {r['phase']} | {ms['bf16']} | {ms['fp32']} | {ms['upcast']} | "
                     f"{ms['auto']} | {r['picks']} | {ratio:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(roofline.this_machine().describe())
    for key in (cpu_choice.ONEDNN_ISA_ENV, "ATEN_CPU_CAPABILITY"):
        print(f"{key}={os.environ.get(key, '(unset)')}")
    print(cpu_choice.choose("auto", "auto").describe())
    kn = roofline.LLAMA_7B_KN + VIT_G_KN
    roof = roofline.measure("cpu", ("fp32", "bf16"), (1, *PREFILL_ROWS, 257), kn, args.repeats)
    print(roof.summary() + " (ms below: best time, and in brackets its share of this bound)")
    results = measure(args.repeats, roof)
    print(table(results))
    return results


if __name__ == "__main__":
    main()

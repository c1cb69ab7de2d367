"""benchmarks/bench_real_size.py --size tiny: random weights in the real formats, every CPU mode
through the normal loading path in its own process, one table; MiniGPT-4 and MiniGPT-v2."""

from __future__ import annotations

import filecmp
import itertools
import json
import re
import subprocess
import sys

import pytest
import torch

from benchmarks.real_size_weights import SIZES, ensure_weights, v2_checkpoint_state
from tests.model_fixtures import REPO_ROOT, V2_DIR

SCRIPT = REPO_ROOT / "benchmarks" / "bench_real_size.py"
CPU_MODES = ["fp32", "bf16", "8bit", "4bit"]
V2_CPU_MODES = ["bf16", "8bit", "4bit"]


def run_benchmark(
    weights, device: str, modes: list[str], variant: str = "minigpt4"
) -> tuple[list[dict], str]:
    """The first table's rows as dicts (column -> cell) and the whole output."""
    cmd = [sys.executable, str(SCRIPT), "--size", "tiny", "--variant", variant, "--weights",
           str(weights), "--device", device, "--modes", *modes, "--new-tokens", "6",
           "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:]
    ]
    return rows, proc.stdout + proc.stderr


def _check_rows(rows: list[dict], modes: list[str]) -> None:
    assert [r["mode"] for r in rows] == modes
    for r in rows:
        assert float(r["load s"]) > 0 and float(r["tok/s"]) > 0 and float(r["bound tok/s"]) > 0
        assert float(r["steady anon GB"]) > 0.1
        assert float(r["load peak anon GB"]) >= float(r["steady anon GB"]) - 0.01
        assert float(r["run peak anon GB"]) >= float(r["steady anon GB"]) - 0.01
        assert float(r["encode s"]) > 0 and float(r["train s/it (batch 1)"]) > 0
        assert float(r["answer s"]) >= float(r["1st token s"]) >= float(r["prefill s"]) > 0
        # each phase beside its bound on this machine (a share printed, never asserted)
        for share in ("encode of bound", "prefill of bound", "of bound"):
            assert r[share].endswith(" %") and float(r[share][:-2]) > 0
    # every mode's training checkpoint holds llama_proj only: the same size
    assert len({r["ckpt MB"] for r in rows}) == 1


def assert_4bit_path_of_this_cpu(output: str) -> None:
    """The 4-bit mode logs the kernel path this CPU takes, by bitsandbytes' own check."""
    from bitsandbytes.functional import has_avx512bf16

    if has_avx512bf16():
        assert "4-bit LLM on CPU: bitsandbytes' packed AVX512-BF16 kernel for" in output
        assert "4-bit LLM: repacking" in output
    else:
        assert "4-bit LLM on CPU: torch's int4 kernel for" in output
        assert "4-bit LLM: repacking" not in output


@pytest.mark.slow
def test_tiny_benchmark_on_cpu(tmp_path):
    rows, output = run_benchmark(tmp_path / "weights", "cpu", CPU_MODES)
    _check_rows(rows, CPU_MODES)
    marker = json.loads((tmp_path / "weights" / "bench_weights.json").read_text())
    assert marker["size"] == "tiny"
    for name in ("eva_vit_g.pth", "blip2_pretrained_flant5xxl.pth", "pretrained_minigpt4.pth"):
        assert (tmp_path / "weights" / name).is_file()
    blip2 = torch.load(tmp_path / "weights" / "blip2_pretrained_flant5xxl.pth", weights_only=True)
    assert set(blip2) == {"model"} and "Qformer.bert.embeddings.position_ids" in blip2["model"]
    assert (tmp_path / "weights" / "vicuna" / "tokenizer.model").is_file()
    # the modes' own log lines (each worker's stderr passes through)
    assert "Running on cpu: ViT and Q-Former fp32, LLM fp32" in output
    assert "low_resource: True on CPU: the LLM is loaded in 8-bit" in output
    assert_4bit_path_of_this_cpu(output)
    assert "pip install kernels" not in output
    # the roofline the bounds come from: the machine, its peaks and bandwidth
    assert "torch CPU capability" in output and "read bandwidth" in output
    assert "| fp32 | 512 | 64 x 256 |" in output
    # a second run reuses the weights
    _, again = run_benchmark(tmp_path / "weights", "cpu", ["bf16"])
    assert "reusing the tiny weights" in again


def _layer_pattern(keys) -> set[str]:
    return {re.sub(r"\.layers\.\d+\.", ".layers.N.", k) for k in keys}


def test_v2_checkpoint_has_the_released_layout_at_7b():
    """The original's own tiny checkpoint gives the key names; the brief's released sizes the
    shapes (built on the meta device: no memory)."""
    original = torch.load(V2_DIR / "minigptv2_tiny_checkpoint.pth", weights_only=True)["model"]
    with torch.device("meta"):
        state = v2_checkpoint_state(SIZES["7b"], lora_r=64)
    assert _layer_pattern(state) == _layer_pattern(original)
    assert len(state) == 2 + 32 * 5
    assert state["llama_proj.weight"].shape == (4096, 5632)
    layer = "llama_model.base_model.model.model.layers.31.self_attn."
    assert state[layer + "q_proj.lora_A.weight"].shape == (64, 4096)
    assert state[layer + "v_proj.lora_B.weight"].shape == (4096, 64)
    assert state[layer + "rotary_emb.inv_freq"].shape == (64,)
    assert {t.dtype for t in state.values()} == {torch.float32}


@pytest.mark.slow
def test_tiny_v2_benchmark_on_cpu(tmp_path):
    weights = tmp_path / "weights"
    rows, output = run_benchmark(weights, "cpu", V2_CPU_MODES, variant="minigptv2")
    _check_rows(rows, V2_CPU_MODES)
    assert "MiniGPT-v2 tiny, random weights" in output
    # through minigptv2_eval.yaml: the 112-px ViT file read at 224 px, the v2 checkpoint
    assert "Position interpolate from 8x8 to 16x16" in output
    assert f"Load Minigpt-4-LLM Checkpoint: {weights / 'minigptv2_checkpoint.pth'}" in output
    assert "low_resource: True on CPU: the LLM is loaded in 8-bit" in output
    assert_4bit_path_of_this_cpu(output)
    # the LLaMA-2 folder: Vicuna's shards (the same shapes; hard links where possible), its
    # own config
    shard = "model.safetensors"
    assert filecmp.cmp(weights / "llama2-chat" / shard, weights / "vicuna" / shard, shallow=False)
    config = json.loads((weights / "llama2-chat" / "config.json").read_text())
    assert (config["max_position_embeddings"], config["rms_norm_eps"]) == (4096, 1e-5)
    checkpoint = torch.load(weights / "minigptv2_checkpoint.pth", weights_only=True)
    assert _layer_pattern(checkpoint["model"]) == _layer_pattern(
        torch.load(V2_DIR / "minigptv2_tiny_checkpoint.pth", weights_only=True)["model"]
    )
    logged = []
    ensure_weights("tiny", str(weights), log=logged.append, variant="minigptv2")
    assert [m.split(" in ")[0] for m in logged] == [
        "reusing the tiny weights",
        "reusing the tiny MiniGPT-v2 weights",
    ]


@pytest.mark.gpu
def test_tiny_benchmark_on_cuda(tmp_path):
    modes = ["fp16", "bf16", "8bit", "4bit"]
    rows, _ = run_benchmark(tmp_path / "weights", "cuda", modes)
    assert [r["mode"] for r in rows] == modes
    for r in rows:
        assert float(r["CUDA steady GB"]) > 0 and float(r["tok/s"]) > 0
        assert float(r["CUDA run peak GB"]) >= float(r["CUDA steady GB"])
    assert len({r["ckpt MB"] for r in rows}) == 1

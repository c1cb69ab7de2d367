"""benchmarks/bench_train.py --size tiny: stage-2 training steps through train.py's path, each in
its own process, one table of s/it, peak memory and the estimate beside it."""

from __future__ import annotations

import subprocess
import sys

from tests.model_fixtures import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_train.py"


def test_tiny_benchmark_prints_a_row_per_run(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--size", "tiny", "--weights", str(tmp_path), "--modes",
           "bf16", "--batches", "1", "2", "--steps", "1", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]
    ]
    assert [(r["batch"], r["LLM grad ckpt"]) for r in rows] == [
        ("1", "off"), ("1", "on"), ("2", "off"), ("2", "on")
    ]  # fmt: skip
    for r in rows:
        assert float(r["s/it"]) > 0 and float(r["CPU s/it"]) > 0
        assert float(r["load peak RSS GB"]) > 0.1 and float(r["train peak RSS GB"]) > 0.1
        assert float(r["peak anon GB"]) > 0.1
        assert float(r["estimate GB"]) > 0 and r["cuda peak GB"] == "-"
        # the step beside its compute bound on this machine (a share printed, never asserted)
        assert float(r["GFLOP/it"]) > 0 and float(r["bound s/it"]) > 0
        assert r["of bound"].endswith(" %") and float(r["of bound"][:-2]) > 0
        assert r["FLOPs counted by"].startswith("torch's FLOP counter")
    assert "on CPU " in proc.stdout  # the machine is named
    assert "matmul peak GFLOP/s: fp32" in proc.stdout  # and its roofline


def test_tiny_minigptv2_finetune_step(tmp_path):
    """``--variant minigptv2``: the original's v2 fine-tuning config (LoRA + llama_proj, 448 px
    at real size), an instruction in the chat template and an answer of ``max_txt_len``. With
    ``--warmup 0`` the one timed step is the one whose FLOPs are counted."""
    cmd = [sys.executable, str(SCRIPT), "--size", "tiny", "--variant", "minigptv2", "--weights",
           str(tmp_path), "--modes", "bf16", "--batches", "1", "--grad-checkpoint", "off",
           "--steps", "1", "--warmup", "0", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MiniGPT-v2 tiny finetune, random weights" in proc.stdout
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("| bf16")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["bf16", "1", "off"] and float(cells[3]) > 0
    shares = [c for c in cells if c.endswith(" %")]
    assert len(shares) == 1 and float(shares[0][:-2]) > 0
    assert (tmp_path / "minigptv2_checkpoint.pth").exists()  # v2's weights were written

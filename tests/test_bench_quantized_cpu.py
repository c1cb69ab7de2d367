"""benchmarks/bench_quantized_cpu.py runs end to end at a small shape and prints, per path and
row count, a time, a share of this machine's bound and an error that says each path computes
the product of the weight it dequantizes to."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.model_fixtures import REPO_ROOT

pytest.importorskip("bitsandbytes")

PATHS = ("bnb LLM.int8", "torch int8", "int8 dequantized, fp32", "bnb generic",
         "bnb generic, fp32", "torch int4", "int4 dequantized, fp32")  # fmt: skip


def test_every_path_is_timed_against_the_bound_and_checked():
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_quantized_cpu.py", "--shapes", "256x128",
         "--repeats", "1"],  # fmt: skip
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "read bandwidth" in out.stdout and "CPU capability" in out.stdout
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| 128")]
    seen = {(cells[1].strip(), cells[2].strip()) for cells in rows}
    from bitsandbytes.functional import has_avx512bf16

    paths = PATHS + (("bnb packed (AVX512_BF16)",) if has_avx512bf16() else ())
    assert seen == {(m, p) for m in ("1", "16", "32", "64", "128") for p in paths}
    for cells in rows:
        ms, share, error = (c.strip() for c in (cells[3], cells[4], cells[5]))
        assert float(ms) > 0
        assert re.fullmatch(r"[0-9.]+ %", share), share
        # LLM.int8 quantizes the activations too; the other paths only round their output
        assert float(error) < (0.05 if cells[2].strip() == "bnb LLM.int8" else 0.02), cells

"""benchmarks/bench_model.py on the tiny model: each time printed beside its share of this
machine's compute bound (a share printed, never asserted beyond being one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.model_fixtures import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_model.py"
LINE = re.compile(r"^(tiny [^:]+): ([\d.]+) ms \(([\d.]+) % of its fp32 compute bound\)$")


def test_tiny_times_beside_their_bound():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "2"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {m[1]: (float(m[2]), float(m[3])) for m in map(LINE.match, proc.stdout.splitlines())
             if m}  # fmt: skip
    assert set(found) == {"tiny encode_img, batch 2", "tiny forward+backward, batch 2"}
    assert all(ms > 0 and share > 0 for ms, share in found.values())
    assert "tiny model's roofline: matmul peak GFLOP/s: fp32" in proc.stdout
    assert proc.stdout.startswith("on CPU ")

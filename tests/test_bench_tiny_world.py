"""benchmarks/bench_tiny_world.py on a few held-out images: each phase printed beside its share
of this machine's bound (a share printed, never asserted beyond being one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.model_fixtures import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_tiny_world.py"
SHARE = re.compile(r"([\d.]+) % of its bound\)")


def test_each_phase_beside_its_bound():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--count", "4"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line[:21].strip(): line[21:] for line in proc.stdout.splitlines()}
    assert lines["machine"].startswith("CPU ") and "matmul peak" in lines["roofline"]
    for phase in ("encode_img (1 image)", "one demo answer", "held-out eval"):
        shares = SHARE.findall(lines[phase])
        assert len(shares) == 1 and float(shares[0]) > 0, lines[phase]
    assert "for 4 images (accuracy" in lines["held-out eval"]

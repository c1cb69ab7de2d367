"""benchmarks/bench_tiny_world.py on a few held-out images: each phase printed beside its share
of this machine's bound (a share printed, never asserted beyond being one)."""

from __future__ import annotations

import re

from tests.bench_helpers import run_benchmark

SHARE = re.compile(r"([\d.]+) % of its bound\)")


def test_each_phase_beside_its_bound():
    out = run_benchmark("bench_tiny_world.py", "--count", "4")
    lines = {line[:21].strip(): line[21:] for line in out.splitlines()}
    assert lines["machine"].startswith("CPU ") and "matmul peak" in lines["roofline"]
    for phase in ("encode_img (1 image)", "one demo answer", "held-out eval"):
        shares = SHARE.findall(lines[phase])
        assert len(shares) == 1 and float(shares[0]) > 0, lines[phase]
    assert "for 4 images (accuracy" in lines["held-out eval"]

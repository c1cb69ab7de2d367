"""benchmarks/bench_model.py on the tiny model: each time printed beside its share of this
machine's compute bound (a share printed, never asserted beyond being one)."""

from __future__ import annotations

import re

from tests.bench_helpers import run_benchmark

LINE = re.compile(r"^(tiny [^:]+): ([\d.]+) ms \(([\d.]+) % of its fp32 compute bound\)$")


def test_tiny_times_beside_their_bound():
    out = run_benchmark("bench_model.py", "--repeats", "2")
    found = {m[1]: (float(m[2]), float(m[3])) for m in map(LINE.match, out.splitlines())
             if m}  # fmt: skip
    assert set(found) == {"tiny encode_img, batch 2", "tiny forward+backward, batch 2"}
    assert all(ms > 0 and share > 0 for ms, share in found.values())
    assert "tiny model's roofline: matmul peak GFLOP/s: fp32" in out
    assert out.startswith("on CPU ")

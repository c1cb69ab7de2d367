"""benchmarks/bench_serve.py, a short run (two servers on the tiny-world model, 4 requests per
level, one round): every level's rate printed beside its share of the decoding's bound, and the
generation-only rates beside theirs (shares printed, never asserted beyond being ones)."""

from __future__ import annotations

import re

import pytest

from tests.bench_helpers import run_benchmark


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_rates_beside_their_bounds():
    out = run_benchmark("bench_serve.py", "--requests", "4", "--rounds", "1", timeout=600)
    table = [line for line in out.splitlines() if line.startswith("|")]
    header, rows = cells(table[0]), [cells(r) for r in table[2:]]
    columns = [i for i, name in enumerate(header) if name == "of bound"]
    assert len(columns) == 2 and [r[0] for r in rows] == ["1", "4", "8", "16"]
    for row in rows:
        shares = [row[i] for i in columns]
        assert all(s.endswith(" %") and float(s[:-2]) > 0 for s in shares), row
    alone = re.search(r"alone \(no HTTP, no images\), answers/s: (.*)$", out, re.M)
    shares = re.findall(r"batches of (\d+): [\d.]+ \(([\d.]+) %\)", alone[1])
    assert [s[0] for s in shares] == ["1", "8", "16"] and all(float(s[1]) > 0 for s in shares)
    assert "a decode step's bound" in out

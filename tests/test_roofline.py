"""benchmarks/roofline.py at tiny shapes (seconds): it names the machine, measures positive
peaks and a read bandwidth, and holds phases to bounds consistently with what it measured.
Timings are printed by the benchmarks, never asserted here."""

from __future__ import annotations

import pytest
import torch

from benchmarks import roofline

TINY = {"rows": (1, 8), "kn": ((64, 64), (64, 128)), "repeats": 3, "read_bytes": 64 << 20}


@pytest.fixture(scope="module")
def roof() -> roofline.Roofline:
    return roofline.measure("cpu", **TINY)


def test_the_machine_is_named_as_torch_sees_it(roof):
    machine = roof.machine
    assert machine.cpu.strip()
    assert machine.capability == torch.backends.cpu.get_cpu_capability()
    assert machine.threads == torch.get_num_threads()
    assert set(machine.flags) <= set(roofline.KEY_FLAGS)
    if machine.flags:  # /proc/cpuinfo read: its flags agree with the kernels torch picked
        assert machine.capability != "AVX512" or "avx512f" in machine.flags
        assert machine.capability != "AVX2" or "avx2" in machine.flags
    assert machine.cpu in machine.describe() and machine.capability in machine.describe()


def test_peaks_and_bandwidth_are_positive_or_explained(roof):
    assert roof.peak("fp32") > 0 and roof.peak("bf16") > 0
    note = roofline.int8_note("cpu")
    assert (roof.peak("int8") is None) == (note is not None)
    assert note is None or note in roof.notes
    assert all(len(t.times) == 3 and min(t.times) > 0 for t in roof.matmuls)
    assert roof.read_bytes == 64 << 20 and roof.read_bytes_per_s > 0


def test_synthetic_phases_of_known_flops_are_within_their_bound(roof):
    """Each measured product is a phase of known FLOPs (2 M K N): held to its dtype's peak,
    every repeat is at most 100 % of its bound, and the dtype's best product exactly 100 %."""
    for timing in roof.matmuls:
        bound = roof.compute_bound_s(timing.flops, timing.dtype)
        shares = [roofline.percent_of_bound(s, bound) for s in timing.times]
        assert all(0 < share <= 100 * (1 + 1e-9) for share in shares)
    best = max(roof.matmuls, key=lambda t: t.best_flops_per_s)
    bound = roof.compute_bound_s(best.flops, best.dtype)
    assert roofline.percent_of_bound(min(best.times), bound) == pytest.approx(100)


def test_shares_of_bounds(roof):
    """Twice the least time is 50 %; four times the least read time is 25 %."""
    flops, nbytes = 3e9, 2e9
    seconds = 2 * flops / roof.peak("bf16")
    assert roofline.percent_of_bound(seconds, roof.compute_bound_s(flops, "bf16")) == (
        pytest.approx(50)
    )
    seconds = 4 * nbytes / roof.read_bytes_per_s
    assert roofline.percent_of_bound(seconds, roof.memory_bound_s(nbytes)) == pytest.approx(25)
    assert roof.compute_bound_s(flops, "fp16") is None  # not measured on CPU: no bound
    assert roofline.format_percent(None) == "-"
    assert roofline.format_percent(72.4) == "72 %" and roofline.format_percent(0.456) == "0.46 %"


def test_without_avx512_int8_is_not_measured_and_says_why(monkeypatch):
    """An AVX2-only CPU: torch._int_mm has no vectorized kernel there (and bitsandbytes does not
    use it), so int8 is skipped with a note instead of timing a scalar loop."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    timings, notes = roofline.measure_matmuls(["int8", "fp32"], (1,), ((64, 64),), "cpu", 1)
    assert [t.dtype for t in timings] == ["fp32"]
    assert len(notes) == 1 and "without AVX-512" in notes[0]


def test_the_command_prints_the_machine_and_each_dtype(capsys):
    roof = roofline.main(
        ["--rows", "1", "4", "--kn", "32x64", "--repeats", "2", "--read-mib", "64"]
    )
    out = capsys.readouterr().out
    assert roof.machine.describe() in out and "read bandwidth" in out
    for dtype in ("fp32", "bf16"):
        assert f"| {dtype} | 4 | 32 x 64 |" in out
    assert "matmul peak GFLOP/s: fp32" in out

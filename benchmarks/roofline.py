"""This machine's roofline: which CPU it is, its matmul peak per dtype and its memory read
bandwidth, so that a benchmark can print each phase's time beside the least time this machine
could take for it.

python benchmarks/roofline.py                     # 7B LLaMA shapes, torch's threads
python benchmarks/roofline.py --threads 2 --device cuda

A phase's bound is its work at the machine's measured limit: FLOPs / matmul peak for a
compute-bound phase (image encode, prompt prefill), bytes read / read bandwidth for a
memory-bound one (decoding reads every LLM weight once per token). The phase's share of its
bound (bound / measured time) can only exceed 100 % when the limit was measured too low or the
work counted too high: the bound is then wrong, not the phase fast.

Peaks are the best of a few repeats of ``F.linear`` (``torch._int_mm`` for int8, as
bitsandbytes calls it) at a 7B LLaMA's shapes: rows M = 1 (a decoded token), 64 (a prompt), 512
(a long prompt); K x N = 4096 x 4096 (attention), 4096 x 11008 (MLP). A dtype's peak is its
best over these shapes, so that a bound never assumes less than the machine showed. Read
bandwidth is the faster of summing a tensor a few times the size of the last-level cache and a
one-row bf16 product over the same bytes (read-only passes, as decoding reads weights), in 2 MB
pages where the kernel gives them (4 kB pages read up to ~30 % slower here: TLB misses). A
copy (``dst.copy_(src)``) moves every byte twice, so its "bytes copied per second" is half the
traffic or less, and no bound on reading.
"""

from __future__ import annotations

import argparse
import itertools
import mmap
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minigpt4.models.one_row_linear import one_row_product

GB = 1e9
ROWS = (1, 64, 512)
LLAMA_7B_KN = ((4096, 4096), (4096, 11008))
# The CPU flags (as /proc/cpuinfo spells them) that decide which matmul kernels apply.
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
DEVICE_DTYPES = {"cpu": ("fp32", "bf16", "int8"), "cuda": ("fp32", "fp16", "bf16", "int8")}
REPEATS = 5  # timed calls of each product, after a warm-up one
MIN_READ_BYTES = 1 << 30
# A read pass over 1 GiB takes tens of ms, and a neighbour's burst on a shared machine halves it:
# the best of many passes is cheap and steadier than the best of a few.
READ_REPEATS = 10
MAX_WEIGHT_COPIES = 64
GEMV_WIDTH = 4096  # the row width of the one-row product that reads the bandwidth's buffer


@dataclass(frozen=True)
class Machine:
    """What ran the measurements: the kernels a library picks depend on all of it."""

    cpu: str
    flags: tuple[str, ...]  # those of KEY_FLAGS this CPU has
    capability: str  # torch.backends.cpu.get_cpu_capability(): the ATen kernels torch runs
    threads: int
    cpus: int | None
    accelerator: str | None = None  # the CUDA device's name when measuring on it

    def describe(self) -> str:
        flags = " ".join(self.flags) or "none of " + " ".join(KEY_FLAGS)
        where = f"{self.accelerator}; host " if self.accelerator else ""
        return (f"{where}CPU {self.cpu} ({self.cpus} CPUs; flags: {flags}; torch CPU "
                f"capability {self.capability}; {self.threads} torch threads)")  # fmt: skip


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """Model name and flags of the first CPU in /proc/cpuinfo (what lscpu shows)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine(), set()
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, set(fields.get("flags", "").split())


def this_machine(device: str = "cpu") -> Machine:
    model, flags = _cpuinfo()
    accelerator = torch.cuda.get_device_name(0) if device == "cuda" else None
    return Machine(model, tuple(f for f in KEY_FLAGS if f in flags),
                   torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
                   os.cpu_count(), accelerator)  # fmt: skip


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def repeat_times(fn: Callable[[], object], repeats: int, device: str) -> list[float]:
    """Seconds of each of ``repeats`` calls, after one warm-up call (first-touch page faults,
    kernel selection, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class MatmulTiming:
    """``[M, K] x [K, N]`` in one dtype: each repeat's seconds."""

    dtype: str
    m: int
    k: int
    n: int
    times: tuple[float, ...]

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    @property
    def best_flops_per_s(self) -> float:
        return self.flops / min(self.times)


def int8_note(device: str) -> str | None:
    """Why int8 is not measured here, or None. On CPU, ``torch._int_mm`` has a vectorized
    kernel only with AVX-512 (elsewhere a scalar loop, far slower than fp32), and only there do
    the project's 8-bit CPU layers reach it (through bitsandbytes; elsewhere they multiply
    weight-only, :mod:`minigpt4.models.int8_linear`)."""
    if not hasattr(torch, "_int_mm"):
        return f"int8: torch {torch.__version__} has no torch._int_mm"
    if device == "cpu" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        return ("int8: not measured: torch._int_mm has no vectorized CPU kernel without "
                "AVX-512 (8-bit layers multiply weight-only here, not in int8)")  # fmt: skip
    return None


def last_level_cache_bytes(device: str) -> int:
    """The largest cache in front of ``device``'s memory: CPU 0's from sysfs, the GPU's L2 (0
    where it is not known)."""
    if device == "cuda":
        return getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)
    root = "/sys/devices/system/cpu/cpu0/cache"
    sizes = [0]
    for index in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, index, "size"), encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes)


def _random(shape: tuple[int, int], dtype: str, device: str) -> torch.Tensor:
    if dtype == "int8":
        return torch.randint(-128, 128, shape, dtype=torch.int8, device=device)
    return torch.randn(shape, device=device).to(DTYPES[dtype])


def matmul(dtype: str, m: int, k: int, n: int, device: str) -> Callable[[], torch.Tensor]:
    """The product an LLM layer computes, activations ``[M, K]`` by a ``[N, K]`` weight. Each
    call takes the next of enough weight copies to overflow the last-level cache: an LLM's
    weights come from memory, and a weight that stayed in cache would make small M look fast."""
    weight_bytes = k * n * DTYPES[dtype].itemsize
    copies = min(MAX_WEIGHT_COPIES, 1 + 2 * last_level_cache_bytes(device) // weight_bytes)
    x = _random((m, k), dtype, device)
    weights = itertools.cycle([_random((n, k), dtype, device) for _ in range(copies)])
    if dtype == "int8":
        return lambda: torch._int_mm(x, next(weights).t())
    return lambda: F.linear(x, next(weights))


def measure_matmuls(dtypes, rows, kn, device: str, repeats: int):
    """Timings of every dtype x shape, and a note for each dtype or shape not measured."""
    timings, notes = [], []
    for dtype in dtypes:
        note = int8_note(device) if dtype == "int8" else None
        if note:
            notes.append(note)
            continue
        for (k, n), m in itertools.product(kn, rows):
            try:
                times = repeat_times(matmul(dtype, m, k, n, device), repeats, device)
            except RuntimeError as err:  # e.g. CUDA's _int_mm needs M > 16
                notes.append(f"{dtype} {m}x{k}x{n}: not measured ({str(err).splitlines()[0]})")
                continue
            timings.append(MatmulTiming(dtype, m, k, n, tuple(times)))
    return timings, notes


def _ones(nbytes: int, device: str) -> torch.Tensor:
    """fp32 ones; in CPU memory in transparent huge pages where the kernel gives them (the
    weights of a run that asks for them live there, and 2 MB pages read up to ~40 % faster than
    4 kB ones: fewer TLB misses), so that the bound is the machine's best."""
    if device != "cpu":
        return torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    region = mmap.mmap(-1, nbytes // 4 * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(region, dtype=torch.float32).fill_(1.0)  # keeps ``region`` alive


def read_bandwidth(device: str, nbytes: int, repeats: int) -> tuple[float, int]:
    """Bytes read per second (best of ``repeats``) over ``nbytes``: by summing an fp32 tensor,
    and by a one-row product with a bf16 matrix (decoding's reads; on the CPU in torch's own
    kernel, which reads faster than the sum on some CPUs): the faster of the two."""
    data = _ones(nbytes, device)
    nbytes = data.numel() * 4
    rates = [nbytes / min(repeat_times(data.sum, repeats, device))]
    values = data.view(torch.bfloat16)  # the same bytes, as bf16 rows of a layer's width
    width = min(GEMV_WIDTH, values.numel())
    matrix = values[: values.numel() // width * width].view(-1, width)
    row = torch.ones(1, width, dtype=torch.bfloat16, device=device)
    product = lambda: one_row_product(row, matrix, None)  # noqa: E731
    rates.append(matrix.numel() * 2 / min(repeat_times(product, repeats, device)))
    return max(rates), nbytes


@dataclass
class Roofline:
    """One machine's measured limits, and the bounds of phases against them."""

    machine: Machine
    matmuls: list[MatmulTiming]
    read_bytes_per_s: float
    read_bytes: int
    notes: list[str] = field(default_factory=list)

    def peak(self, dtype: str) -> float | None:
        """FLOP/s: the best over the shapes measured in ``dtype`` (None: not measured)."""
        rates = [t.best_flops_per_s for t in self.matmuls if t.dtype == dtype]
        return max(rates) if rates else None

    def compute_bound_s(self, flops: float, dtype: str) -> float | None:
        peak = self.peak(dtype)
        return None if peak is None else flops / peak

    def memory_bound_s(self, nbytes: float) -> float:
        return nbytes / self.read_bytes_per_s

    def bound_s(self, flops: float, dtypes: str | tuple[str, ...], nbytes: float = 0
                ) -> float | None:  # fmt: skip
        """The least time of work that computes ``flops`` in products of ``dtypes`` (work in
        several is held to the highest of their peaks: a time it cannot beat either way) and
        reads ``nbytes``: the larger of its compute and memory bounds (None: none measured)."""
        peaks = [p for p in map(self.peak, (dtypes,) if isinstance(dtypes, str) else dtypes) if p]
        if not peaks:
            return None
        return max(flops / max(peaks), self.memory_bound_s(nbytes))

    def summary(self) -> str:
        peaks = [f"{d} {self.peak(d) / GB:.1f}" for d in DTYPES if self.peak(d)]
        return (f"matmul peak GFLOP/s: {', '.join(peaks)}; read bandwidth "
                f"{self.read_bytes_per_s / GB:.1f} GB/s")  # fmt: skip

    def table(self) -> str:
        """Markdown: GFLOP/s of each dtype and shape (the peak of a dtype is its best row)."""
        lines = ["| dtype | M | K x N | GFLOP/s (best) | ms (best) |", "|---|---|---|---|---|"]
        for t in self.matmuls:
            lines.append(f"| {t.dtype} | {t.m} | {t.k} x {t.n} | "
                         f"{t.best_flops_per_s / GB:.1f} | {min(t.times) * 1e3:.3g} |")  # fmt: skip
        return "\n".join(lines)


def percent_of_bound(seconds: float, bound_s: float | None) -> float | None:
    """How close a phase came to its bound: 100 % is the machine's limit."""
    return None if bound_s is None or seconds <= 0 else 100 * bound_s / seconds


def format_percent(value: float | None) -> str:
    """Whole percents, two digits below 10 % (a tiny model's phases are far from any bound)."""
    if value is None:
        return "-"
    return f"{value:.0f} %" if value >= 10 else f"{value:.2g} %"


def measure(device: str = "cpu", dtypes=None, rows=ROWS, kn=LLAMA_7B_KN, repeats: int = REPEATS,
            read_bytes: int | None = None) -> Roofline:  # fmt: skip
    """Measure this machine (seconds to a minute at 7B shapes, most of it fp32 at M = 512)."""
    dtypes = dtypes or DEVICE_DTYPES[device]
    matmuls, notes = measure_matmuls(dtypes, rows, kn, device, repeats)
    nbytes = read_bytes or max(MIN_READ_BYTES, 4 * last_level_cache_bytes(device))
    bandwidth, nbytes = read_bandwidth(device, nbytes, READ_REPEATS)
    return Roofline(this_machine(device), matmuls, bandwidth, nbytes, notes)


def _shape(text: str) -> tuple[int, int]:
    k, _, n = text.partition("x")
    return int(k), int(n)


def main(argv: list[str] | None = None) -> Roofline:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES))
    parser.add_argument("--rows", nargs="+", type=int, default=list(ROWS))
    parser.add_argument(
        "--kn",
        nargs="+",
        type=_shape,
        default=list(LLAMA_7B_KN),
        metavar="KxN",
        help="weight shapes (default 4096x4096 4096x11008)",
    )
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--read-mib", type=int, help="bytes summed (default: max(1 GiB, 4 L3))")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    roof = measure(args.device, args.dtypes, args.rows, args.kn, args.repeats,
                   args.read_mib and args.read_mib << 20)  # fmt: skip
    print(roof.machine.describe())
    print(roof.table())
    for note in roof.notes:
        print(note)
    print(f"read bandwidth: {roof.read_bytes_per_s / GB:.1f} GB/s "
          f"(sum of {roof.read_bytes / GB:.2f} GB, best of {READ_REPEATS})")  # fmt: skip
    print(roof.summary())
    return roof


if __name__ == "__main__":
    main()

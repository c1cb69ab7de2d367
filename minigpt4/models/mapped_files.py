"""Keep the LLM's memory-mapped weight files out of the resident set while it loads.

transformers maps every safetensors shard of a folder and closes them all only when the whole
model is loaded, so the pages already copied into the model stay mapped: a 7B in bf16 peaks at
~21 GB resident on a 24 GB machine (~9 GB of them file pages) for a model of 15.8 GB. The pages
are clean page cache that the kernel would reclaim under pressure, but they count in the
process's RSS (and in a container's memory limit). :func:`paging_out` asks the kernel every
half second to page out the mappings of the given files (``madvise(MADV_PAGEOUT)``): a hint that
never changes what memory holds (safetensors maps copy-on-write: a clean page read again is
faulted back from the file; a written page is anonymous and stays without swap), so a mapping
that changed under it is harmless. Linux
5.4 or newer; elsewhere a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterable, Iterator

MADV_PAGEOUT = 21  # linux/mman.h
PAGE_OUT_INTERVAL_S = 0.5


def _madvise():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name, use_errno=True).madvise if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return fn


def mapped_ranges(paths: set[str], maps_file: str = "/proc/self/maps") -> list[tuple[int, int]]:
    """``(start, end)`` of this process's mappings of ``paths``."""
    ranges = []
    try:
        with open(maps_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") in paths:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return ranges


def page_out(paths: set[str]) -> int:
    """Ask the kernel to page out this process's mappings of ``paths``; the bytes asked for."""
    madvise = _madvise()
    if madvise is None:
        return 0
    asked = 0
    for start, end in mapped_ranges(paths):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            asked += end - start
    return asked


@contextlib.contextmanager
def paging_out(files: Iterable[str], every_s: float = PAGE_OUT_INTERVAL_S) -> Iterator[None]:
    """Run :func:`page_out` on ``files`` every ``every_s`` seconds in a thread while the block
    runs (see the module docstring)."""
    paths = {os.path.realpath(f) for f in files}
    stop = threading.Event()

    def page_out_until_stopped() -> None:
        while not stop.wait(every_s):
            page_out(paths)

    worker = threading.Thread(target=page_out_until_stopped, name="page-out", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()

"""Seeds derived from names and counters, so that the data a run sees repeats after a resume.

The random crop of a sample, the shards a stream draws and its shuffle are functions of
(run seed, rank, dataset, epoch, worker, position) rather than of a process's RNG state, which
a DataLoader worker loses when it is restarted. :func:`mix_seed` is stable across processes and
Python versions (unlike ``hash()`` of a string).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import torch

_SEED_BYTES = 8
_SEED_MASK = (1 << 63) - 1  # torch.manual_seed and random.Random take any non-negative int


def mix_seed(*parts: object) -> int:
    """A 63-bit seed that depends on every part (ints, strings...) and their order."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=_SEED_BYTES).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


@contextlib.contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded by ``seed``; the previous state comes back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def seeded_python(seed: int) -> Iterator[None]:
    """Run the block with Python's ``random`` seeded by ``seed``; the previous state comes back.

    MiniGPT-v2's datasets draw their templates with ``random.choice`` as the original's do; a
    sample's draws then depend on its position only, never on a DataLoader worker's state or on
    the draws of :class:`MultiIterLoader` in the main process.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)

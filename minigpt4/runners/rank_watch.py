"""Waiting for the other ranks at a training step: a heartbeat line while waiting, and a timeout
that names the rank(s) that did not arrive.

Without it, a stalled rank (a hung data read, a ``SIGSTOP``, a swapping node) left the others
waiting silently for the process group's timeout (then 365 days). Each rank records where it is
(``epoch E, iteration I``) in the launcher's key-value store as a step starts; a rank whose step
takes longer than :func:`heartbeat_interval` while another rank has not reached it says so and
names that rank, and once a collective has waited ``run.dist_timeout_s`` (the process group's
timeout) the run stops with an error naming it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import torch.distributed as dist
from torch.distributed import distributed_c10d

logger = logging.getLogger(__name__)

KEY = "minigpt4/step/{rank}"
BEAT_KEY = "minigpt4/beat/{rank}"
MAX_HEARTBEAT_S = 60.0


class StalledRankError(RuntimeError):
    """Some rank did not reach a training step's collective in time."""


def heartbeat_interval(timeout_s: float) -> float:
    return min(MAX_HEARTBEAT_S, timeout_s / 4)


def _store():
    getter = getattr(distributed_c10d, "_get_default_store", None)
    try:
        return getter() if getter is not None else None
    except (RuntimeError, ValueError):
        return None


def mark(where: str) -> None:
    """Record that this rank reached ``where``."""
    store = _store()
    if store is not None:
        store.set(KEY.format(rank=dist.get_rank()), where)


def elsewhere(where: str) -> list[str]:
    """The other ranks that have not reached ``where``, with where they last were."""
    store = _store()
    if store is None:
        return []
    out = []
    for rank in range(dist.get_world_size()):
        key = KEY.format(rank=rank)
        seen = store.get(key).decode() if store.check([key]) else "not started"
        if seen != where:
            out.append(f"rank {rank} (at {seen})")
    return out


class Beats:
    """Each rank's heartbeat counter in the store: a rank whose counter stops moving (a
    stopped process, or one stuck outside the training loop) is named as silent."""

    def __init__(self) -> None:
        self.store = _store()
        self.seen: dict[int, int] = {}
        self.silent: list[str] = []

    def beat(self, interval_s: float) -> None:
        if self.store is None:
            return
        self.store.add(BEAT_KEY.format(rank=dist.get_rank()), 1)
        silent = []
        for rank in range(dist.get_world_size()):
            count = self.store.add(BEAT_KEY.format(rank=rank), 0)
            if rank != dist.get_rank() and self.seen.get(rank) == count:
                silent.append(f"rank {rank} (silent for over {interval_s:.0f} s)")
            self.seen[rank] = count
        self.silent = silent


@contextlib.contextmanager
def heartbeat(where: str, timeout_s: float) -> Iterator[Beats]:
    """While the block runs, every :func:`heartbeat_interval` seconds: this rank's beat, and a
    line if another rank has not reached ``where`` or has stopped beating (this one is then
    waiting for it, not computing)."""
    done = threading.Event()
    start = time.monotonic()
    beats = Beats()
    interval = heartbeat_interval(timeout_s)

    def beat() -> None:
        while not done.wait(interval):
            beats.beat(interval)
            behind = beats.silent or elsewhere(where)
            if behind:
                logger.warning(
                    "rank %d has waited %.0f s at %s for %s (the run stops after "
                    "run.dist_timeout_s = %g s)",
                    dist.get_rank(), time.monotonic() - start, where, ", ".join(behind),
                    timeout_s,
                )  # fmt: skip

    beats.beat(interval)
    thread = threading.Thread(target=beat, name="minigpt4-heartbeat", daemon=True)
    thread.start()
    try:
        yield beats
    finally:
        done.set()


@contextlib.contextmanager
def watched_step(where: str, timeout_s: float, distributed: bool) -> Iterator[None]:
    """One training step ``where`` on every rank: marked, watched, and a collective that timed
    out (the process group's timeout is ``run.dist_timeout_s``) turned into an error naming the
    ranks that did not arrive."""
    if not distributed:
        yield
        return
    mark(where)
    with heartbeat(where, timeout_s) as beats:
        try:
            yield
        except RuntimeError as err:
            behind = beats.silent or elsewhere(where)
            if not behind:
                raise
            raise StalledRankError(
                f"rank {dist.get_rank()} waited {timeout_s:g} s at {where} for "
                f"{', '.join(behind)}: a rank stalled or died, so the run stops (raise "
                "run.dist_timeout_s if a step can take longer)"
            ) from err

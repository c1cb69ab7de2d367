"""Endless loaders for the training loop, and the sampler that lets them resume.

The loop draws ``iters_per_epoch`` batches per epoch with ``next()``, independent of how long
a pass over the data is: :class:`IterLoader` restarts a map-style loader when it is exhausted,
:class:`MultiIterLoader` picks, for every batch, one of several loaders with probability
proportional to its dataset's ``sample_ratio`` (a whole batch comes from one dataset).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start part-way through an epoch (for resume).

    Its order depends only on ``seed`` and the epoch, never on the global RNG, so a resumed run
    sees the same batches as an uninterrupted one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip = 0

    def skip_next(self, n_indices: int) -> None:
        """Drop the first ``n_indices`` indices of the next pass (once)."""
        self._skip = n_indices

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        indices = list(super().__iter__())
        return iter(indices[skip:])


class IterLoader:
    """Wraps a DataLoader into an endless iterator that counts passes (data epochs)."""

    def __init__(self, dataloader: DataLoader, use_distributed: bool = False) -> None:
        self._dataloader = dataloader
        self._use_distributed = use_distributed
        self._epoch = 0
        self._consumed = 0  # batches taken from the current pass
        self._set_sampler_epoch()
        self.iter_loader = iter(self._dataloader)

    @property
    def epoch(self) -> int:
        return self._epoch

    def _set_sampler_epoch(self) -> None:
        sampler = self._dataloader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._epoch)

    def __next__(self) -> Any:
        try:
            data = next(self.iter_loader)
        except StopIteration:
            self._epoch += 1
            self._consumed = 0
            self._set_sampler_epoch()
            self.iter_loader = iter(self._dataloader)
            data = next(self.iter_loader)
        self._consumed += 1
        return data

    def __iter__(self) -> IterLoader:
        return self

    def __len__(self) -> int:
        return len(self._dataloader)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at the same pass and batch (exact with ``num_workers == 0``)."""
        self._epoch = int(state["epoch"])
        self._consumed = int(state["consumed"])
        self._set_sampler_epoch()
        sampler = self._dataloader.sampler
        if self._consumed and hasattr(sampler, "skip_next"):
            sampler.skip_next(self._consumed * self._dataloader.batch_size)
        self.iter_loader = iter(self._dataloader)


class MultiIterLoader:
    """Per batch, one loader chosen with ``random.choices`` weighted by ``ratios``."""

    def __init__(self, loaders: Sequence[Iterator], ratios: Sequence[float] | None = None) -> None:
        for loader in loaders:
            if not hasattr(loader, "__next__"):
                raise TypeError(f"loader {loader!r} has no __next__")
        if ratios is None:
            ratios = [1.0] * len(loaders)
        else:
            if len(ratios) != len(loaders):
                raise ValueError(f"{len(ratios)} sample ratios for {len(loaders)} datasets")
            if any(r < 0 for r in ratios) or sum(ratios) <= 0:
                raise ValueError(f"sample ratios must be >= 0 with a positive sum, got {ratios}")
            total = float(sum(ratios))
            ratios = [float(r) / total for r in ratios]
        self.loaders = list(loaders)
        self.ratios = list(ratios)

    def __next__(self) -> Any:
        loader_idx = random.choices(range(len(self.loaders)), self.ratios, k=1)[0]
        return next(self.loaders[loader_idx])

    def __iter__(self) -> MultiIterLoader:
        return self

    def __len__(self) -> int:
        """Length of a single finite loader; undefined (TypeError) otherwise."""
        if len(self.loaders) != 1:
            raise TypeError("a mix of several loaders has no length")
        return len(self.loaders[0])

    def state_dict(self) -> list[dict[str, int] | None]:
        return [
            loader.state_dict() if hasattr(loader, "state_dict") else None
            for loader in self.loaders
        ]

    def load_state_dict(self, states: Sequence[dict[str, int] | None]) -> None:
        if len(states) != len(self.loaders):
            raise ValueError(f"{len(states)} loader states for {len(self.loaders)} loaders")
        for loader, state in zip(self.loaders, states):
            if state is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(state)

"""Endless loaders for the training loop, and what lets them resume exactly.

The loop draws ``iters_per_epoch`` batches per epoch with ``next()``, independent of how long
a pass over the data is: :class:`IterLoader` restarts a map-style loader when it is exhausted,
:class:`StreamLoader` reads an endless webdataset stream, :class:`MultiIterLoader` picks, for
every batch, one of several loaders with probability proportional to its dataset's
``sample_ratio`` (a whole batch comes from one dataset).

Each loader's ``state_dict()`` says where it is, and ``load_state_dict()`` continues from there
with the batches an uninterrupted run would have drawn; it returns the reasons, if any, why
that cannot be exact (the runner says them in one warning).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from minigpt4.datasets.datasets.image_text_webdataset import ImageTextStream, worker_slot
from minigpt4.datasets.sample_seeds import mix_seed, seeded_python, seeded_torch

# Batch entry that carries (logical worker, stream position) of each sample to the loader.
STREAM_POSITION_KEY = "__stream_position__"


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start part-way through an epoch (for resume).

    Its order depends only on ``seed`` and the epoch, never on the global RNG, so a resumed run
    sees the same batches as an uninterrupted one. With ``keyed=True`` it yields
    ``(index, epoch, position)`` keys for a :class:`SeededSamples` dataset.
    """

    def __init__(self, *args: Any, keyed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip = 0
        self.keyed = keyed

    def skip_next(self, n_indices: int) -> None:
        """Drop the first ``n_indices`` indices of the next pass (once)."""
        self._skip = n_indices

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        indices = list(super().__iter__())
        if self.keyed:
            return iter([(index, self.epoch, pos) for pos, index in enumerate(indices)][skip:])
        return iter(indices[skip:])


class SeededSamples(Dataset):
    """A map-style dataset whose items are made with torch and Python's ``random`` seeded per
    (pass, position).

    The random crop (torch) and the drawn template (``random``) of the sample at ``position``
    of data pass ``epoch`` then depend on nothing else, not on the state of a DataLoader worker
    (which a resumed run cannot restore), so a resumed run with ``num_workers > 0`` makes
    exactly the samples of an uninterrupted one.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        index, epoch, position = key
        seed = mix_seed(self.seed, epoch, position)
        with seeded_torch(seed), seeded_python(seed):
            return self.dataset[index]


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

    def load_state_dict(self, state: dict[str, int]) -> list[str]:
        """Continue at the same pass and batch; returns why that is not exact (if it is not)."""
        self._epoch = int(state["epoch"])
        self._consumed = int(state["consumed"])
        self._set_sampler_epoch()
        sampler = self._dataloader.sampler
        problems = []
        if self._consumed and hasattr(sampler, "skip_next"):
            sampler.skip_next(self._consumed * self._dataloader.batch_size)
        elif self._consumed:
            problems.append("a loader without a resumable sampler restarts its data pass")
        if not isinstance(self._dataloader.dataset, SeededSamples) and (
            self._dataloader.num_workers > 0
        ):
            problems.append("DataLoader workers' random crops cannot be restored")
        self.iter_loader = iter(self._dataloader)
        return problems


class _PositionedStream(IterableDataset):
    """One start of an :class:`ImageTextStream` under a DataLoader.

    Worker ``w`` plays the stream of logical worker ``(w + worker_offset) % num_workers`` from
    position ``skip[logical worker]`` and tags each sample with (logical worker, position).
    """

    def __init__(
        self, stream: ImageTextStream, epoch: int, worker_offset: int, skip: Sequence[int]
    ) -> None:
        super().__init__()
        self.stream = stream
        self.epoch = epoch
        self.worker_offset = worker_offset
        self.skip = list(skip)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        physical, num_workers = worker_slot()
        worker = (physical + self.worker_offset) % num_workers
        samples = self.stream.positioned_samples(self.epoch, worker, skip=self.skip[worker])
        for position, sample in samples:
            sample[STREAM_POSITION_KEY] = torch.tensor([worker, position])
            yield sample


class StreamLoader:
    """Endless batches of an :class:`ImageTextStream` that knows where every worker is.

    A DataLoader takes batches from its workers in turn, so after batch ``k`` from worker
    ``w`` the next comes from ``w + 1`` (mod ``num_workers``); a restarted DataLoader begins
    with worker 0. On a resume worker ``w`` therefore plays logical worker ``w + next`` and
    skips the samples that logical worker had already handed out: the batches that follow
    are exactly the uninterrupted run's. Each training epoch reads a fresh stream (seeded
    with the epoch), so a resume never skips more than one epoch's samples.
    """

    def __init__(
        self,
        stream: ImageTextStream,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.stream = stream
        # A private generator: creating a DataLoader iterator draws a seed from it, and a draw
        # from the global RNG would make a resumed run diverge.
        self._loader_args = dict(
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            generator=generator or torch.Generator().manual_seed(stream.seed),
        )
        self.num_streams = max(1, num_workers)
        self._restart(epoch=0, next_worker=0, positions=[0] * self.num_streams)

    def _restart(self, epoch: int, next_worker: int, positions: Sequence[int]) -> None:
        self._epoch = epoch
        self._next_worker = next_worker
        self._positions = list(positions)
        self._iterator: Iterator | None = None  # started by the next batch

    def start_training_epoch(self, epoch: int) -> None:
        """From training epoch ``epoch`` on, read that epoch's stream (a no-op if already)."""
        if epoch != self._epoch:
            self._restart(epoch, 0, [0] * self.num_streams)

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            start = _PositionedStream(self.stream, self._epoch, self._next_worker, self._positions)
            self._iterator = iter(DataLoader(start, **self._loader_args))
        batch = next(self._iterator)
        worker, position = batch.pop(STREAM_POSITION_KEY)[-1].tolist()
        self._positions[worker] = position + 1
        self._next_worker = (worker + 1) % self.num_streams
        return batch

    def __iter__(self) -> StreamLoader:
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "next_worker": self._next_worker,
            "positions": list(self._positions),
            "num_shards": len(self.stream.urls),
        }

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Continue where ``state`` was taken; returns why that is not exact (if it is not)."""
        epoch = int(state["epoch"])
        name = self.stream.name
        if len(state["positions"]) != self.num_streams:
            self._restart(epoch, 0, [0] * self.num_streams)
            return [
                f"dataset '{name}' was read by {len(state['positions'])} DataLoader worker(s), "
                f"now by {self.num_streams}: its stream of epoch {epoch} starts again"
            ]
        self._restart(epoch, int(state["next_worker"]), [int(p) for p in state["positions"]])
        if int(state.get("num_shards", len(self.stream.urls))) != len(self.stream.urls):
            return [
                f"dataset '{name}' had {state['num_shards']} shards, now "
                f"{len(self.stream.urls)}: its stream continues over different data"
            ]
        return []


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

    def state_dict(self) -> list[dict[str, Any] | None]:
        return [
            loader.state_dict() if hasattr(loader, "state_dict") else None
            for loader in self.loaders
        ]

    def start_training_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            if hasattr(loader, "start_training_epoch"):
                loader.start_training_epoch(epoch)

    def load_state_dict(self, states: Sequence[dict[str, Any] | None]) -> list[str]:
        """Restore every loader; returns why that is not exact (empty when it is)."""
        if len(states) != len(self.loaders):
            return [f"{len(states)} saved loader states for {len(self.loaders)} datasets"]
        problems = []
        for loader, state in zip(self.loaders, states):
            if not hasattr(loader, "load_state_dict"):
                problems.append("a data stream that cannot resume starts from its beginning")
            elif state is None:
                problems.append("a data loader's position was not saved")
            else:
                problems += loader.load_state_dict(state)
        return problems

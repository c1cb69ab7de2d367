"""The training loader: every dataset's train split, endless, mixed by ``sample_ratio``.

Loaders draw no number from the global RNGs (each has a private generator): building them in
another order, or a resumed run building them again, must not change the random streams.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import ChainDataset, DataLoader, IterableDataset

from minigpt4.common import dist_utils
from minigpt4.common.run_config import RunConfig
from minigpt4.datasets.datasets.dataloader_utils import (
    IterLoader,
    MultiIterLoader,
    ResumableDistributedSampler,
    SeededSamples,
    StreamLoader,
)
from minigpt4.datasets.sample_seeds import mix_seed

logger = logging.getLogger(__name__)

# The original's iters_per_epoch when neither the config nor the loader gives one.
FALLBACK_ITERS_PER_EPOCH = 10000


def build_train_loaders(
    datasets: dict[str, Any], run: RunConfig, datasets_cfg: Any, pin_memory: bool
) -> dict[str, MultiIterLoader]:
    """``{split: endless loader}`` for each of ``run.train_splits``."""
    logger.info(
        "dataset_ratios not specified, datasets will be concatenated (map-style "
        "datasets) or chained (webdataset.DataPipeline)."
    )
    by_split: dict[str, dict[str, Any]] = {split: {} for split in run.train_splits}
    for name, dataset in datasets.items():
        for split in run.train_splits:
            if split not in dataset:
                raise ValueError(f"dataset '{name}' has no '{split}' split")
            by_split[split][name] = dataset[split]
    loaders = {}
    for split, named_parts in by_split.items():
        logger.info(records_line(named_parts, split))
        parts = list(named_parts.values())
        ratios = None
        if all(hasattr(d, "sample_ratio") for d in parts):
            ratios = [float(d.sample_ratio) for d in parts]
        each = [_create_loader(d, run, datasets_cfg, pin_memory) for d in parts]
        loaders[split] = MultiIterLoader(each, ratios=ratios)
    return loaders


def records_line(named_parts: dict[str, Any], split: str) -> str:
    """The log line that says what a split holds: the original's record count, which is only
    true of datasets with a length; a webdataset stream has none (the original printed 0)."""
    records = sum(len(d) for d in named_parts.values() if not is_stream(d))
    streams = [name for name, d in named_parts.items() if is_stream(d)]
    if not streams:
        return f"Loaded {records} records for {split} split from the dataset."
    counted = f" and {records} records" if len(streams) < len(named_parts) else ""
    return (
        f"Loaded the {split} split: webdataset streams of {', '.join(streams)}{counted} (a "
        "stream has no record count; run.iters_per_epoch sets the epoch's length)."
    )


def iters_per_epoch(run: RunConfig, loader: Any) -> int:
    """``run.iters_per_epoch``, else the loader's length, else the original's fallback."""
    if run.iters_per_epoch is not None:
        return run.iters_per_epoch
    try:
        return len(loader)
    except (AttributeError, TypeError):
        logger.info(
            "run.iters_per_epoch not set and the data has no length: using %d",
            FALLBACK_ITERS_PER_EPOCH,
        )
        return FALLBACK_ITERS_PER_EPOCH


def is_stream(dataset: Any) -> bool:
    return isinstance(dataset, (ChainDataset, wds.DataPipeline, IterableDataset))


def _batch_size(dataset: Any, run: RunConfig, datasets_cfg: Any) -> tuple[int, str]:
    """The training batch size and the key that set it: ``datasets.<name>.batch_size``
    (where the original's LLaMA-2 configs put it), else ``run.batch_size_train``."""
    name = getattr(dataset, "name", None)
    block = datasets_cfg.get(name) if name else None
    if block is not None and block.get("batch_size") is not None:
        return int(block.batch_size), f"datasets.{name}.batch_size"
    if run.batch_size_train is None:
        raise ValueError(f"no batch size: set run.batch_size_train or datasets.{name}.batch_size")
    return run.batch_size_train, "run.batch_size_train"


def _create_loader(dataset: Any, run: RunConfig, datasets_cfg: Any, pin_memory: bool) -> Any:
    """An endless loader: webdataset streams as they are, map-style datasets through a
    resumable sampler, reshuffled each pass."""
    bsz, bsz_key = _batch_size(dataset, run, datasets_cfg)
    rank = dist_utils.get_rank()
    # A private generator: creating loader iterators must not draw from the global RNG,
    # or a resumed run would diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(run.seed + rank)
    if is_stream(dataset):
        if not hasattr(dataset, "positioned_samples"):  # another kind of IterableDataset
            loader = DataLoader(dataset, batch_size=bsz, num_workers=run.num_workers,
                                pin_memory=pin_memory, generator=generator)  # fmt: skip
            return iter(loader)
        # Endless; every rank and worker reads its own seeded stream.
        return StreamLoader(dataset, bsz, run.num_workers, pin_memory=pin_memory,
                            generator=generator)  # fmt: skip
    return _map_style_loader(dataset, bsz, bsz_key, run, pin_memory, generator)


def _map_style_loader(
    dataset: Any, bsz: int, bsz_key: str, run: RunConfig, pin_memory: bool, generator: Any
) -> IterLoader:
    rank = dist_utils.get_rank()
    sampler = ResumableDistributedSampler(
        dataset,
        num_replicas=dist_utils.get_world_size(),
        rank=rank,
        shuffle=True,
        seed=run.seed,
        keyed=True,
    )
    name = getattr(dataset, "name", "?")
    loader = DataLoader(
        SeededSamples(dataset, seed=mix_seed(run.seed, rank, name)),
        batch_size=bsz,
        num_workers=run.num_workers,
        pin_memory=pin_memory,
        sampler=sampler,
        shuffle=False,
        collate_fn=getattr(dataset, "collater", None),
        drop_last=True,
        generator=generator,
    )
    if len(loader) == 0:
        raise ValueError(
            f"dataset '{name}' has {len(dataset)} samples, fewer than one batch of {bsz} "
            f"per rank; lower {bsz_key}"
        )
    return IterLoader(loader, use_distributed=dist_utils.is_dist_avail_and_initialized())

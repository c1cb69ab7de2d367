"""Process-group set-up and rank helpers.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; a plain ``python train.py`` sets none of them
and runs single-process. The backend follows the hardware: ``nccl`` with CUDA, ``gloo`` without.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

import torch
import torch.distributed as dist

from minigpt4.common.run_config import DEFAULT_DIST_TIMEOUT_S, RunConfig

logger = logging.getLogger(__name__)


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def main_process(func: Callable) -> Callable:
    """Run ``func`` on rank 0 only (other ranks get ``None``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if is_main_process():
            return func(*args, **kwargs)
        return None

    return wrapper


def _placement(args: Any) -> tuple[str, str, float]:
    """(device, dist_url, collective timeout in s) of a run config node, checked; or of the
    argparse namespace the original's scripts pass (read as they are, defaults when unset)."""
    if isinstance(args, Mapping):
        run = RunConfig.from_node(args)
        return run.device, run.dist_url, run.dist_timeout_s
    device = str(getattr(args, "device", None) or "cuda")
    return device, getattr(args, "dist_url", "env://"), DEFAULT_DIST_TIMEOUT_S


def init_distributed_mode(args: Any) -> None:
    """Initialise the default process group from torchrun's (or SLURM's) environment.

    ``args`` is the ``run`` config node; like the original, this sets ``rank``, ``world_size``,
    ``gpu``, ``distributed`` and ``dist_backend`` on it. Without a launcher the run is
    single-process and ``distributed`` becomes False whatever the YAML says.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ:
        args.rank = int(os.environ["SLURM_PROCID"])
        args.world_size = int(os.environ.get("SLURM_NTASKS", 1))
        count = torch.cuda.device_count()
        args.gpu = args.rank % count if count else 0
    else:
        logger.info("Not using distributed mode")
        args.distributed = False
        return

    args.distributed = True
    device, dist_url, timeout_s = _placement(args)
    use_cuda = torch.cuda.is_available() and device.startswith("cuda")
    args.dist_backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(args.gpu)
    logger.warning(
        "| distributed init (rank %d, world %d): %s", args.rank, args.world_size, dist_url
    )
    dist.init_process_group(
        backend=args.dist_backend,
        init_method=dist_url,
        world_size=args.world_size,
        rank=args.rank,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    barrier()


def get_dist_info() -> tuple[int, int]:
    return get_rank(), get_world_size()


def cached_file_path(url: str) -> str:
    """Where :func:`download_cached_file` keeps ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    filename = os.path.basename(urlparse(url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def download_cached_file(url: str, check_hash: bool = True, progress: bool = False) -> str:
    """Download ``url`` once into the torch hub cache and return the local path.

    Only rank 0 downloads; the other ranks wait at a barrier and then use the same file, so
    several processes never write the same file at once. A file already in the cache is used
    as it is, which is how offline machines work: put the file there beforehand.
    """
    path = cached_file_path(url)
    if is_main_process() and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        logger.info('Downloading: "%s" to %s', url, path)
        hash_prefix = None
        if check_hash:
            # torch.hub convention: "<name>-<sha256 prefix>.<ext>"
            stem = os.path.basename(path).split(".")[0]
            hash_prefix = stem.split("-")[-1] if "-" in stem else None
        # download_url_to_file writes a temporary file and renames it when complete.
        torch.hub.download_url_to_file(url, path, hash_prefix=hash_prefix, progress=progress)
    barrier()
    return path

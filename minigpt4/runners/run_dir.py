"""A run's folder, ``run.output_dir/<job_id>/``, and the two logs in it.

``log.txt`` holds the config as indented JSON, then one stats line per epoch (the original's
format); ``config.yaml`` the resolved config. Only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch.distributed as dist
from omegaconf import OmegaConf

from minigpt4.common import dist_utils
from minigpt4.common.atomic_write import atomic_write_text, remove_stale_temp_files
from minigpt4.common.run_config import RunConfig
from minigpt4.common.utils import resolve_path

logger = logging.getLogger(__name__)

RESULT_DIR = "result"


def make_run_dir(run: RunConfig, job_id: str) -> str:
    """``run.output_dir/<job_id>`` relative to the current directory (rank 0 creates it).

    The job id has 10-minute resolution, so a second run started soon after the first would
    overwrite its checkpoints; it gets ``<job_id>_1`` (``_2``, ...) instead. All ranks must
    call this: rank 0's choice is broadcast.
    """
    base = os.path.abspath(os.path.expanduser(run.output_dir))
    chosen = job_id
    if dist_utils.is_main_process():
        suffix = 0
        while _non_empty_dir(os.path.join(base, chosen)):
            suffix += 1
            chosen = f"{job_id}_{suffix}"
        if suffix:
            logger.warning(
                "%s already holds a run: writing to %s", os.path.join(base, job_id), chosen
            )
        os.makedirs(os.path.join(base, chosen, RESULT_DIR), exist_ok=True)
        _remove_stale_temp_files(base, run.resume_ckpt_path)
    if dist_utils.is_dist_avail_and_initialized():
        shared = [chosen]  # ranks compute job ids independently; rank 0's is the run's
        dist.broadcast_object_list(shared, src=0)
        chosen = shared[0]
    return os.path.join(base, chosen)


def _remove_stale_temp_files(base: str, resume_ckpt_path: str | None) -> None:
    """Temporary files of saves that a kill interrupted, in this output dir's runs."""
    folders = [os.path.join(base, name) for name in sorted(os.listdir(base))]
    if resume_ckpt_path:
        folders.append(os.path.dirname(resolve_path(resume_ckpt_path)))
    remove_stale_temp_files(folders)


def _non_empty_dir(path: str) -> bool:
    return os.path.isdir(path) and any(name != RESULT_DIR for name in os.listdir(path))


@dist_utils.main_process
def log_config(run_dir: str, config: dict[str, Any]) -> None:
    """The config at the top of ``log.txt`` and, resolved, in ``config.yaml``."""
    with open(os.path.join(run_dir, "log.txt"), "a", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=4) + "\n")
    atomic_write_text(
        OmegaConf.to_yaml(OmegaConf.create(config)), os.path.join(run_dir, "config.yaml")
    )


@dist_utils.main_process
def log_stats(run_dir: str, stats: dict[str, Any], split_name: str) -> None:
    line = {f"{split_name}_{k}": v for k, v in stats.items()}
    with open(os.path.join(run_dir, "log.txt"), "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")

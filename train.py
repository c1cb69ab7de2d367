"""Train MiniGPT-4: ``torchrun --nproc_per_node N train.py --cfg-path train_configs/X.yaml``.

Also runs as a single process (``python train.py --cfg-path ...``) and on CPU
(``--options run.device=cpu``). See docs/training.md for the two training stages.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from minigpt4.common.cli import run_command
from minigpt4.common.model_args import add_config_arguments

if TYPE_CHECKING:  # torch and the model are imported once the arguments are read
    from minigpt4.common.config import Config
    from minigpt4.runners.runner_base import RunnerBase


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Training")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def setup_seeds(config: Config) -> None:
    """Seed every RNG with ``run.seed + rank``: ranks differ, runs repeat."""
    import random

    import numpy as np
    import torch
    import torch.backends.cudnn as cudnn

    from minigpt4.common import dist_utils

    seed = config.run_config.seed + dist_utils.get_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cudnn.benchmark = False
    cudnn.deterministic = True


def main(argv: Sequence[str] | None = None) -> RunnerBase:
    """Parse ``argv``, build task, datasets, model and runner, train; return the runner."""
    # The job id is taken before the (possibly slow) distributed start-up, as in the original.
    from minigpt4.common.utils import now

    job_id = now()
    args = parse_args(argv)
    return _train(args, job_id)


def _train(args: argparse.Namespace, job_id: str) -> RunnerBase:
    import torch

    from minigpt4.common import dist_utils
    from minigpt4.common.config import Config
    from minigpt4.common.logger import setup_logger
    from minigpt4.common.registry import registry
    from minigpt4.models.train_memory import log_training_memory
    from minigpt4.models.training_precision import check_training_config
    from minigpt4.runners.resume import preflight_resume
    from minigpt4.tasks import setup_task

    cfg = Config(args)
    run = cfg.training_run_config()  # every run key training needs, before anything heavy
    precision = check_training_config(cfg)  # run and model keys together, before the model
    dist_utils.init_distributed_mode(cfg.run_cfg)
    try:
        setup_seeds(cfg)
        setup_logger()
        cfg.pretty_print()
        log_training_memory(cfg, precision.device_kind)
        preflight_resume(run)  # before the (slow) model build
        task = setup_task(cfg)
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        runner_cls = registry.get_runner_class(run.runner)
        runner = runner_cls(cfg=cfg, job_id=job_id, task=task, model=model, datasets=datasets)
        runner.train()
    finally:
        if dist_utils.is_dist_avail_and_initialized():
            torch.distributed.destroy_process_group()
    return runner


if __name__ == "__main__":
    run_command(main, "train.py")

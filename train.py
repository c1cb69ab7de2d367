"""Train MiniGPT-4: ``torchrun --nproc_per_node N train.py --cfg-path train_configs/X.yaml``.

Also runs as a single process (``python train.py --cfg-path ...``) and on CPU
(``--options run.device=cpu``). See docs/training.md for the two training stages.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.backends.cudnn as cudnn

from minigpt4.common import dist_utils
from minigpt4.common.cli import run_command
from minigpt4.common.config import Config
from minigpt4.common.logger import setup_logger
from minigpt4.common.registry import registry
from minigpt4.common.utils import now
from minigpt4.models.train_memory import log_training_memory
from minigpt4.models.training_precision import check_training_config
from minigpt4.runners.resume import preflight_resume
from minigpt4.runners.runner_base import RunnerBase
from minigpt4.tasks import setup_task


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Training")
    parser.add_argument("--cfg-path", required=True, help="path to configuration file.")
    parser.add_argument(
        "--options",
        nargs="+",
        help="override some settings in the used config, the key-value pair "
        "in xxx=yyy format will be merged into config file (e.g. run.init_lr=1e-5).",
    )
    return parser.parse_args(argv)


def setup_seeds(config: Config) -> None:
    """Seed every RNG with ``run.seed + rank``: ranks differ, runs repeat."""
    seed = config.run_config.seed + dist_utils.get_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cudnn.benchmark = False
    cudnn.deterministic = True


def main(argv: Sequence[str] | None = None) -> RunnerBase:
    """Parse ``argv``, build task, datasets, model and runner, train; return the runner."""
    # The job id is taken before the (possibly slow) distributed start-up, as in the original.
    job_id = now()
    args = parse_args(argv)
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

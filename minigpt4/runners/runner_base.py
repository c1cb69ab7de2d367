"""``runner_base``: the training recipe, read top to bottom.

:meth:`RunnerBase.setup` builds what training needs, in order: model placement, data,
optimizer, lr schedule, grad scaler, then the resume (RNG states restored last).
:meth:`RunnerBase.train` runs the epochs; :meth:`RunnerBase.train_epoch` is the loop itself:
lr, forward under autocast, backward (accumulated, without gradient exchange while only
accumulating), optimizer step, the progress line and the periodic checkpoint.

The task builds the model and datasets and computes a batch's loss (``task.train_step``);
the strategy (``run.strategy``) spreads the model over processes; the :class:`Checkpointer`
writes and reads the checkpoints. Each run writes ``output_dir/<job_id>/``: ``log.txt``,
``config.yaml`` and ``checkpoint_{epoch}.pth`` (see ``minigpt4/runners/run_dir.py`` and
``checkpointer.py``). Only rank 0 writes and logs.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import time
from typing import Any

import torch
from torch import nn

from minigpt4.common import dist_utils
from minigpt4.common.logger import MetricLogger, SmoothedValue
from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig
from minigpt4.datasets.data_utils import prepare_sample
from minigpt4.runners.checkpointer import Checkpointer, ResumePoint, TrainParts
from minigpt4.runners.optimization import build_lr_scheduler, build_optimizer
from minigpt4.runners.placement import place_model
from minigpt4.runners.rank_watch import watched_step
from minigpt4.runners.run_dir import RESULT_DIR, log_config, log_stats, make_run_dir
from minigpt4.runners.step_guard import PreemptedError, StepGuard
from minigpt4.runners.strategy import build_strategy
from minigpt4.runners.train_data import build_train_loaders, iters_per_epoch

logger = logging.getLogger(__name__)


@registry.register_runner("runner_base")
class RunnerBase:
    """Trains ``model`` on ``datasets`` as ``cfg.run_cfg`` says (see the module docstring).

    ``cfg.run_cfg`` is read once, typed, into ``run_config``: after init_distributed_mode has
    written rank, gpu and distributed into it.
    """

    def __init__(
        self, cfg: Any, task: Any, model: nn.Module, datasets: dict[str, Any], job_id: str
    ) -> None:
        self.config = cfg
        self.run_config = RunConfig.from_node(cfg.run_cfg, training=True)
        self.task = task
        self.datasets = datasets
        self.model = model  # placed and wrapped by setup()
        self.use_distributed = (
            self.run_config.distributed and dist_utils.is_dist_avail_and_initialized()
        )
        self.strategy = build_strategy(
            self.run_config.strategy, self.use_distributed, dist_utils.get_world_size()
        )
        self.output_dir = make_run_dir(self.run_config, job_id)
        self.job_id = os.path.basename(self.output_dir)
        self.result_dir = os.path.join(self.output_dir, RESULT_DIR)
        self.is_set_up = False
        if self.run_config.wandb_log:
            logger.warning(
                "run.wandb_log is set: this project does not log to wandb; the statistics go to "
                "log.txt and the console as usual"
            )

    def setup(self) -> None:
        """Build everything training needs, each step from what the steps before it built."""
        run = self.run_config
        # 1. Placement first: device, dtype and the strategy's wrap may replace parameter
        #    tensors, and the optimizer must hold the ones that train. DDP's wrap also
        #    broadcasts rank 0's weights, so every rank starts from the same model.
        placed = place_model(self.model, run, self.strategy, self.use_distributed)
        self.model, self.device, self.precision = placed.model, placed.device, placed.precision
        # 2. Data: pinned memory follows the device; without run.iters_per_epoch the epoch
        #    length is the loader's, which the lr schedule needs.
        pin_memory = self.device.type == "cuda"
        loaders = build_train_loaders(self.datasets, run, self.config.datasets_cfg, pin_memory)
        self.train_loader = loaders["train"]
        self.iters_per_epoch = iters_per_epoch(run, self.train_loader)
        # 3. Optimizer over the placed model's trainable parameters.
        self.optimizer = build_optimizer(self.model, run)
        # 4. The lr schedule writes into the optimizer's groups.
        self.lr_scheduler = build_lr_scheduler(self.optimizer, run, self.iters_per_epoch)
        # 5. Loss scaling only for fp16 autocast (bf16 has fp32's range).
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.grad_scaler else None
        # 6. Resume last: it loads into everything above, and restores the RNG states last of
        #    all, so that nothing between the restore and the first step draws a number.
        parts = TrainParts(self.model, self.optimizer, self.lr_scheduler, self.scaler,
                           self.train_loader)  # fmt: skip
        self.checkpointer = Checkpointer(parts, self.strategy, self.output_dir, self.config,
                                         run.save_freq_iters, self.iters_per_epoch)  # fmt: skip
        self.start = ResumePoint()
        if run.resume_ckpt_path:
            self.start = self.checkpointer.resume(run.resume_ckpt_path, run.max_epoch)
        # 7. From here on a pre-emption signal waits for the end of a step.
        self.guard = StepGuard(self.strategy, run.nonfinite_patience)
        self.is_set_up = True

    def unwrap_dist_model(self, model: nn.Module) -> nn.Module:
        """The model without the strategy's wrapper (the original runner's name)."""
        return self.strategy.unwrap(model)

    def train(self) -> None:
        """Train from the resume point (epoch 0 of a new run) to ``run.max_epoch - 1``,
        saving ``checkpoint_{epoch}.pth`` after every epoch."""
        start_time = time.time()
        log_config(self.output_dir, self.config.to_dict())
        logger.info("Start training")
        if not self.is_set_up:
            self.setup()
        self._warn_about_unapplied_gradients()
        try:
            for epoch in range(self.start.epoch, self.run_config.max_epoch):
                if epoch != self.start.epoch:
                    logger.info("Start training")
                stats = self.train_epoch(epoch)
                log_stats(self.output_dir, stats, "train")
                logger.info("No validation splits found.")  # the original's line
                with self._watched(f"epoch {epoch}, checkpoint"):
                    self.checkpointer.save_epoch(epoch)
                    dist_utils.barrier()
        finally:
            self.guard.restore_signals()
        total_time = time.time() - start_time
        logger.info("Training time %s", str(datetime.timedelta(seconds=int(total_time))))

    def train_epoch(self, epoch: int) -> dict[str, str]:
        """One epoch (the rest of it when resumed part-way); returns its averaged stats with
        3 decimals, as log.txt has them.

        The lr is set *before* each forward (the original's order). The loss is divided by
        ``accum_grad_iters`` so accumulated gradients are averages (the original summed them).
        """
        resumed = epoch == self.start.epoch
        first = self.start.iteration if resumed else 0
        total, accum = self.iters_per_epoch, self.run_config.accum_grad_iters
        meters = _metric_logger(self.start.meters if resumed else None)
        self.model.train()
        self.train_loader.start_training_epoch(epoch)
        logger.info("Start training epoch %d, %d iters per inner epoch.", epoch, total)
        header = f"Train: data epoch: [{epoch}]"
        batches = (next(self.train_loader) for _ in range(first, total))
        progress = meters.log_every(batches, self.run_config.log_freq, header, first, total)
        self.optimizer.zero_grad()
        for i, samples in enumerate(progress, start=first):
            with self._watched(f"epoch {epoch}, iteration {i}"):
                samples = prepare_sample(samples, self.device)
                samples.update({"epoch": epoch, "num_iters_per_epoch": total, "iters": i})
                self.lr_scheduler.step(cur_epoch=epoch, cur_step=i)
                step_now = (i + 1) % accum == 0
                # While only accumulating, skip the gradient exchange: the stepping backward
                # does it.
                sync = contextlib.nullcontext() if step_now else self.strategy.no_sync(self.model)
                with sync:
                    with self._autocast():
                        loss = self.task.train_step(model=self.model, samples=samples)
                    self._backward(loss / accum)
                self.guard.note(loss)
                meters.update(loss=loss.item())
                meters.update(lr=self.optimizer.param_groups[0]["lr"])
                if step_now:
                    self._guarded_step(epoch, i, meters)
        with self._watched(f"epoch {epoch}, end"):  # a collective: a stalled rank is named here too
            meters.synchronize_between_processes()
        logger.info("Averaged stats: %s", meters.global_avg())
        return {name: f"{meter.global_avg:.3f}" for name, meter in meters.meters.items()}

    def _watched(self, where: str) -> contextlib.AbstractContextManager:
        """A step that names the rank(s) it waits for (:mod:`~minigpt4.runners.rank_watch`)."""
        return watched_step(where, self.run_config.dist_timeout_s, self.use_distributed)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The step's one autocast, as the precision decision says (or none)."""
        return self.precision.autocast_context()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:  # fp16: scale up so small gradients do not underflow
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _guarded_step(self, epoch: int, i: int, meters: MetricLogger) -> None:
        """The optimizer step if every rank's step is finite; then the periodic checkpoint,
        or, after a pre-emption signal, the checkpoint to resume from and the stop."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        verdict = self.guard.verdict(trainable, scaled=self.scaler is not None)
        if verdict.finite:
            self._optimizer_step()
        else:
            self.optimizer.zero_grad()
            self.guard.count_skipped(epoch, i, self.optimizer.param_groups[0]["lr"])
        self.checkpointer.save_periodic(epoch, i, meters)
        if verdict.signal is not None:
            path = self.checkpointer.save_now(epoch, i, meters)
            name = signal.Signals(verdict.signal).name
            raise PreemptedError(
                f"stopped by {name} at epoch {epoch}, iteration {i + 1}: resume with "
                f"--options run.resume_ckpt_path={path}"
            )

    def _optimizer_step(self) -> None:
        if self.scaler is not None:  # skips the step when the scaled gradients overflowed
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad()

    def _warn_about_unapplied_gradients(self) -> None:
        if self.iters_per_epoch % self.run_config.accum_grad_iters:
            logger.warning(
                "iters_per_epoch (%d) is not a multiple of accum_grad_iters (%d): the last "
                "iterations of each epoch accumulate gradients that are never applied",
                self.iters_per_epoch,
                self.run_config.accum_grad_iters,
            )


def _metric_logger(start_meters: dict[str, Any] | None) -> MetricLogger:
    """The epoch's meters (lr, loss), continuing a resumed epoch's running sums."""
    meters = MetricLogger(delimiter="  ")
    meters.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    meters.add_meter("loss", SmoothedValue(window_size=1, fmt="{value:.4f}"))
    if start_meters:
        meters.load_state_dict(start_meters)
    return meters

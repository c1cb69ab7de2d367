"""Training checkpoints: ``checkpoint_{epoch}.pth``, ``checkpoint_latest.pth``, and resuming.

A checkpoint holds the original's keys, ``model`` (trainable parameters and all buffers),
``optimizer``, ``config``, ``scaler``, ``epoch``, so the original's loaders read it, plus what an
exact resume needs: ``lr_scheduler``, ``train_state`` (where to continue) and ``rank_states``
(every rank's RNG states, data position and running stats). Everything is plain containers and
tensors: ``torch.load(path, weights_only=True)`` reads it. Files are written atomically by
rank 0; every rank takes part in a save, because the rank states are gathered.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from minigpt4.common import dist_utils
from minigpt4.common.checkpoint_files import CheckpointError, atomic_torch_save, read_checkpoint
from minigpt4.common.logger import MetricLogger
from minigpt4.common.utils import resolve_path
from minigpt4.models import lora
from minigpt4.models.loading.key_maps import training_checkpoint_state
from minigpt4.runners.resume import (
    RESUME_KEY,
    RESUME_REQUIRED,
    check_not_finished,
    resume_line,
    resume_position,
)
from minigpt4.runners.rng_states import rng_states, set_rng_states
from minigpt4.runners.step_guard import NonFiniteLossError
from minigpt4.runners.strategy import Strategy

logger = logging.getLogger(__name__)

ITER_CHECKPOINT_NAME = "checkpoint_latest.pth"


@dataclass(frozen=True)
class TrainParts:
    """What a checkpoint saves and a resume restores; ``model`` as the strategy wrapped it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    scaler: torch.amp.GradScaler | None
    loader: Any  # a MultiIterLoader: its state_dict is this rank's data position


@dataclass(frozen=True)
class ResumePoint:
    """Where training continues: an epoch, the iteration in it, and that epoch's running stats
    so far (so its averages cover the whole epoch)."""

    epoch: int = 0
    iteration: int = 0
    meters: dict[str, Any] | None = None


class Checkpointer:
    """Saves and restores :class:`TrainParts` in ``run_dir``."""

    def __init__(
        self,
        parts: TrainParts,
        strategy: Strategy,
        run_dir: str,
        config: Any,
        save_freq_iters: int,
        iters_per_epoch: int,
    ) -> None:
        self.parts = parts
        self.strategy = strategy
        self.run_dir = run_dir
        self.config = config
        self.save_freq_iters = save_freq_iters
        self.iters_per_epoch = iters_per_epoch

    def save_epoch(self, epoch: int) -> None:
        """``checkpoint_{epoch}.pth`` after the epoch (and, with periodic saves, the latest)."""
        content = self._content(epoch, next_epoch=epoch + 1, next_iter=0, meters=None)
        if content is None:
            return
        path = os.path.join(self.run_dir, f"checkpoint_{epoch}.pth")
        logger.info("Saving checkpoint at epoch %d to %s.", epoch, path)
        atomic_torch_save(content, path)
        if self.save_freq_iters:
            # With periodic checkpoints, checkpoint_latest.pth is always the newest state.
            atomic_torch_save(content, os.path.join(self.run_dir, ITER_CHECKPOINT_NAME))

    def save_now(self, epoch: int, i: int, meters: MetricLogger) -> str:
        """``checkpoint_latest.pth`` after iteration ``i``'s optimizer step, whatever the
        schedule (pre-emption); every rank calls it. Returns its path."""
        path = os.path.join(self.run_dir, ITER_CHECKPOINT_NAME)
        content = self._content(
            epoch, next_epoch=epoch, next_iter=i + 1, meters=meters.state_dict()
        )
        if content is not None:
            logger.info("Saving checkpoint at epoch %d, iteration %d to %s.", epoch, i + 1, path)
            atomic_torch_save(content, path)
        return path

    def save_periodic(self, epoch: int, i: int, meters: MetricLogger) -> None:
        """After the optimizer step of iteration ``i``: every ``run.save_freq_iters``
        iterations (but not at the epoch's end, which :meth:`save_epoch` covers)."""
        done = i + 1
        if not self.save_freq_iters or done % self.save_freq_iters or done >= self.iters_per_epoch:
            return
        content = self._content(epoch, next_epoch=epoch, next_iter=done, meters=meters.state_dict())
        if content is None:
            return
        path = os.path.join(self.run_dir, ITER_CHECKPOINT_NAME)
        logger.info("Saving checkpoint at epoch %d, iteration %d to %s.", epoch, done, path)
        atomic_torch_save(content, path)

    def _content(
        self, epoch: int, next_epoch: int, next_iter: int, meters: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The checkpoint dict on rank 0, None elsewhere (every rank must call this)."""
        parts = self.parts
        rank_state = {
            "rng": rng_states(),
            "loaders": parts.loader.state_dict(),
            "meters": meters,  # this rank's running sums of the epoch's stats (None at its end)
        }
        rank_states = self.strategy.gather(rank_state)
        if not dist_utils.is_main_process():
            return None
        _check_finite(self.strategy.unwrap(parts.model))
        return {
            # Frozen parameters are dropped, buffers kept: the original's checkpoint content.
            "model": training_checkpoint_state(self.strategy.unwrap(parts.model)),
            "optimizer": parts.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "epoch": epoch,
            "lr_scheduler": parts.lr_scheduler.state_dict(),
            "train_state": {
                "next_epoch": next_epoch,
                "next_iter": next_iter,
                "world_size": dist_utils.get_world_size(),
            },
            "rank_states": _to_cpu(rank_states),
        }

    def resume(self, path: str, max_epoch: int) -> ResumePoint:
        """Restore everything from ``path``; this rank's RNG states last of all."""
        path = resolve_path(str(path))
        checkpoint = read_checkpoint(path, RESUME_KEY, RESUME_REQUIRED)
        epoch, iteration = resume_position(checkpoint, path)
        check_not_finished(path, epoch, max_epoch)
        if iteration > self.iters_per_epoch:
            raise CheckpointError(
                f"{RESUME_KEY}: {path} continues at iteration {iteration} of an epoch, but this "
                f"run's epochs have {self.iters_per_epoch} (run.iters_per_epoch): resume with "
                "the run's own settings"
            )
        self._restore_training_state(path, checkpoint)
        meters, problems = self._restore_rank_state(checkpoint.get("rank_states"), iteration)
        if problems:
            logger.warning(
                "Resuming from %s cannot be exact: %s. Weights, optimizer and lr schedule are "
                "restored; the data and random numbers differ from an uninterrupted run.",
                path,
                "; ".join(problems),
            )
        logger.info("Resume checkpoint from %s", path)  # the original's line
        logger.info(resume_line(checkpoint, epoch, iteration))
        return ResumePoint(epoch, iteration, meters)

    def _restore_training_state(self, path: str, checkpoint: dict[str, Any]) -> None:
        """Trainable weights, optimizer, scaler and lr schedule."""
        parts = self.parts
        model = self.strategy.unwrap(parts.model)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(trainable - set(lora.from_original_names(checkpoint["model"])))
        if missing:
            raise CheckpointError(
                f"{RESUME_KEY}: {path} lacks the trainable weights {missing}: is it a "
                "checkpoint of this model?"
            )
        try:
            result = model.load_state_dict(checkpoint["model"], strict=False)
        except RuntimeError as err:  # a tensor of another shape: another model's checkpoint
            raise CheckpointError(
                f"{RESUME_KEY}: {path} does not fit this model: {err}. Resume from a "
                "checkpoint of the same model (model.arch, model.llama_model)"
            ) from err
        if result.unexpected_keys:
            logger.warning("Ignored keys in %s not in the model: %s", path, result.unexpected_keys)
        try:
            parts.optimizer.load_state_dict(checkpoint["optimizer"])
            _check_optimizer_shapes(parts.optimizer)
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{RESUME_KEY}: {path}: its optimizer state does not fit this model's "
                f"trainable parameters ({err})"
            ) from err
        if parts.scaler is not None and checkpoint.get("scaler"):
            parts.scaler.load_state_dict(checkpoint["scaler"])
        if "lr_scheduler" in checkpoint:
            parts.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])

    def _restore_rank_state(
        self, rank_states: list[dict[str, Any]] | None, iteration: int
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """This rank's data position and RNG; returns its running stats and why the resume
        is not exact (empty when it is)."""
        world = dist_utils.get_world_size()
        if rank_states is None or len(rank_states) != world:
            return None, [
                f"it holds no RNG/data state for {world} rank(s) (a checkpoint of the original "
                "or of another number of processes): random streams start fresh"
            ]
        state = rank_states[dist_utils.get_rank()]
        if state.get("loaders") is None:
            problems = ["it holds no data position"]
        else:
            problems = self.parts.loader.load_state_dict(state["loaders"])
        meters = state.get("meters")
        if iteration and meters is None:
            problems.append("the epoch's averaged stats will cover only the rest of the epoch")
        set_rng_states(state["rng"])  # last: nothing may draw from the RNGs after this
        return meters, problems


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Every loaded state tensor has its parameter's shape (``load_state_dict`` checks only the
    counts; a mismatch would fail at the first step, far from the file that caused it)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"'{name}' is {tuple(value.shape)} for a parameter of {tuple(param.shape)}"
                    )


def _check_finite(model: nn.Module) -> None:
    """A checkpoint is never written with NaN or infinite trainable weights."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not p.isfinite().all()]
    if bad:
        raise NonFiniteLossError(
            f"not saving a checkpoint: the trainable weights {bad} are not finite"
        )


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj

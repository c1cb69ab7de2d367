"""Learning-rate schedules (registry names ``linear_warmup_cosine_lr``, ``linear_warmup_step_lr``).

The training loop calls ``step(cur_epoch, cur_step)`` *before* every forward pass; the
scheduler writes the lr into every parameter group. The formulas are the original's, including
its quirk that warm-up uses the step *within* the epoch (``cur_step``), not the global step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from minigpt4.common.registry import registry


def warmup_lr_schedule(step: int, max_step: int, init_lr: float, max_lr: float) -> float:
    """Linear warm-up from ``init_lr`` to ``max_lr`` over ``max_step`` steps, capped."""
    return min(max_lr, init_lr + (max_lr - init_lr) * step / max(max_step, 1))


def cosine_lr_schedule(epoch: float, max_epoch: float, init_lr: float, min_lr: float) -> float:
    """Half-cosine decay from ``init_lr`` (``epoch`` 0) to ``min_lr`` (``epoch == max_epoch``)."""
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


def step_lr_schedule(epoch: int, init_lr: float, min_lr: float, decay_rate: float) -> float:
    """``init_lr * decay_rate ** epoch``, not below ``min_lr``."""
    return max(min_lr, init_lr * (decay_rate**epoch))


class _LRScheduler:
    """Common part: the optimizer, the lr bounds and the last position (saved for resume)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        min_lr: float,
        init_lr: float,
        warmup_steps: int = 0,
        warmup_start_lr: float = -1,
        iters_per_epoch: int | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.max_epoch = int(max_epoch)
        self.min_lr = float(min_lr)
        self.init_lr = float(init_lr)
        self.warmup_steps = int(warmup_steps)
        # A negative (or absent) warm-up start means "no warm-up ramp": start at init_lr.
        self.warmup_start_lr = float(warmup_start_lr) if warmup_start_lr >= 0 else self.init_lr
        self.iters_per_epoch = iters_per_epoch
        self.last_epoch = -1
        self.last_step = -1

    def lr_at(self, cur_epoch: int, cur_step: int) -> float:
        raise NotImplementedError

    def step(self, cur_epoch: int, cur_step: int) -> float:
        """Set the lr of every parameter group for this step; return it."""
        lr = self.lr_at(cur_epoch, cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_epoch, self.last_step = cur_epoch, cur_step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.last_step = int(state["last_step"])
        if self.last_epoch >= 0:
            self.step(self.last_epoch, self.last_step)


@registry.register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLRScheduler(_LRScheduler):
    """Epoch 0: linear warm-up over ``warmup_steps``; then ``init_lr * decay_rate ** epoch``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        min_lr: float,
        init_lr: float,
        decay_rate: float | None = 1,
        warmup_start_lr: float = -1,
        warmup_steps: int = 0,
        iters_per_epoch: int | None = None,
        **_: Any,
    ) -> None:
        super().__init__(
            optimizer, max_epoch, min_lr, init_lr, warmup_steps, warmup_start_lr, iters_per_epoch
        )
        if decay_rate is None and self.max_epoch > 1:
            # The original passes run.lr_decay_rate through and crashes at epoch 1 without it.
            raise ValueError(
                "lr_sched 'linear_warmup_step_lr' needs run.lr_decay_rate (e.g. 0.9) when "
                f"max_epoch > 1 (max_epoch is {self.max_epoch})"
            )
        self.decay_rate = decay_rate

    def lr_at(self, cur_epoch: int, cur_step: int) -> float:
        if cur_epoch == 0:
            return warmup_lr_schedule(
                cur_step, self.warmup_steps, self.warmup_start_lr, self.init_lr
            )
        return step_lr_schedule(cur_epoch, self.init_lr, self.min_lr, self.decay_rate)


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLRScheduler(_LRScheduler):
    """Linear warm-up for the first ``warmup_steps`` global steps, then a cosine to ``min_lr``
    reached at ``max_epoch * iters_per_epoch``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        iters_per_epoch: int,
        min_lr: float,
        init_lr: float,
        warmup_steps: int = 0,
        warmup_start_lr: float = -1,
        **_: Any,
    ) -> None:
        super().__init__(
            optimizer, max_epoch, min_lr, init_lr, warmup_steps, warmup_start_lr, iters_per_epoch
        )
        if not iters_per_epoch or iters_per_epoch < 1:
            raise ValueError(
                f"linear_warmup_cosine_lr needs iters_per_epoch >= 1, got {iters_per_epoch}"
            )
        self.iters_per_epoch = int(iters_per_epoch)

    def lr_at(self, cur_epoch: int, cur_step: int) -> float:
        total_cur_step = cur_epoch * self.iters_per_epoch + cur_step
        if total_cur_step < self.warmup_steps:
            # The original warms up with the within-epoch step, kept for identical schedules.
            return warmup_lr_schedule(
                cur_step, self.warmup_steps, self.warmup_start_lr, self.init_lr
            )
        return cosine_lr_schedule(
            total_cur_step, self.max_epoch * self.iters_per_epoch, self.init_lr, self.min_lr
        )

"""The optimizer and lr schedule of a run: the original's AdamW groups and registered schedules."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from minigpt4.common.registry import registry
from minigpt4.common.run_config import RunConfig

logger = logging.getLogger(__name__)


def optimizer_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed (>= 2-D weights) and not (1-D, or name has bias/ln/bn)."""
    p_wd, p_non_wd = [], []
    num_parameters = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        logger.info(name)
        if param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name:
            p_non_wd.append(param)
        else:
            p_wd.append(param)
        num_parameters += param.numel()
    logger.info("number of trainable parameters: %d", num_parameters)
    if num_parameters == 0:
        raise ValueError("the model has no trainable parameters")
    return [
        {"params": p_wd, "weight_decay": float(weight_decay)},
        {"params": p_non_wd, "weight_decay": 0},
    ]


def build_optimizer(model: nn.Module, run: RunConfig) -> torch.optim.AdamW:
    """AdamW(lr=init_lr, betas=(0.9, beta2)) over :func:`optimizer_param_groups`."""
    return torch.optim.AdamW(
        optimizer_param_groups(model, run.weight_decay),
        lr=run.init_lr,
        weight_decay=run.weight_decay,
        betas=(0.9, run.beta2),
    )


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, run: RunConfig, iters_per_epoch: int
) -> Any:
    """The ``run.lr_sched`` schedule; the loop steps it before every forward pass."""
    lr_sched_cls = registry.get_lr_scheduler_class(run.lr_sched)
    return lr_sched_cls(
        optimizer=optimizer,
        max_epoch=run.max_epoch,
        iters_per_epoch=iters_per_epoch,
        min_lr=run.min_lr,
        init_lr=run.init_lr,
        decay_rate=run.lr_decay_rate,
        warmup_start_lr=run.warmup_lr,
        warmup_steps=run.warmup_steps,
    )

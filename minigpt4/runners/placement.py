"""Where the model trains: its device, the dtype of its weights, autocast, and the strategy's wrap.

This is one step of the runner's set-up (and the one place to change how precision is decided):
everything built later (optimizer, scaler) depends on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from minigpt4.common.run_config import RunConfig
from minigpt4.models.training_precision import TrainingPrecision, prepare_for_training
from minigpt4.runners.strategy import Strategy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    model: nn.Module  # on ``device`` and wrapped by the strategy
    device: torch.device
    precision: TrainingPrecision  # the step's one autocast, the scaler, the dtypes


def pick_device(run: RunConfig, distributed: bool) -> torch.device:
    """``run.device``; CPU with a warning when CUDA is asked for but absent; the local GPU
    (``LOCAL_RANK``) of a distributed run that says plain ``cuda``."""
    wanted = run.device
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("run.device is '%s' but CUDA is not available: training on CPU", wanted)
        return torch.device("cpu")
    if wanted == "cuda" and distributed:
        return torch.device("cuda", run.gpu)
    return torch.device(wanted)


def place_model(
    model: nn.Module, run: RunConfig, strategy: Strategy, distributed: bool
) -> Placement:
    """The model on its training device, its trained parameters fp32 master weights where the
    forward allows and its frozen parts as built (no fp32 copy of a half model on CPU; the one
    precision decision: :func:`~minigpt4.models.training_precision.prepare_for_training`),
    wrapped by ``strategy``."""
    device = pick_device(run, distributed)
    model, precision = prepare_for_training(model, run, device)
    model = model.to(device)
    return Placement(strategy.wrap(model, device), device, precision)

"""Where the model trains: its device, the dtype of its weights, autocast, and the strategy's wrap.

This is one step of the runner's set-up (and the one place to change how precision is decided):
everything built later (optimizer, scaler) depends on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from minigpt4.common.run_config import AMP_DTYPES, RunConfig
from minigpt4.runners.strategy import Strategy

logger = logging.getLogger(__name__)

HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Placement:
    model: nn.Module  # on ``device`` and wrapped by the strategy
    device: torch.device
    amp_dtype: torch.dtype | None  # None: no autocast


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


def pick_amp_dtype(run: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.amp``/``run.amp_dtype``; autocast is CUDA-only here."""
    if not run.amp:
        return None
    if device.type != "cuda":
        logger.info("run.amp is ignored on %s: training in the weights' dtype", device)
        return None
    return AMP_DTYPES[run.amp_dtype]


def place_model(
    model: nn.Module, run: RunConfig, strategy: Strategy, distributed: bool
) -> Placement:
    """The model on its training device, in its training dtype, wrapped by ``strategy``."""
    device = pick_device(run, distributed)
    amp_dtype = pick_amp_dtype(run, device)
    if device.type == "cpu" and any(p.dtype in HALF_DTYPES for p in model.parameters()):
        # Half-precision weights need CUDA autocast; on CPU everything runs in fp32
        # (what the original's load_model does for CPU).
        logger.info("Casting the model to float32 for CPU training")
        model = model.float()
    model = model.to(device)
    return Placement(strategy.wrap(model, device), device, amp_dtype)

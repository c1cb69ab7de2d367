"""Moving batches to the training device."""

from __future__ import annotations

from typing import Any

import torch


def move_to_device(sample: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict/list/tuple batch to ``device``."""
    if isinstance(sample, torch.Tensor):
        # Pinned host memory (CUDA loaders) makes the copy asynchronous.
        return sample.to(device, non_blocking=device.type == "cuda")
    if isinstance(sample, dict):
        return {key: move_to_device(value, device) for key, value in sample.items()}
    if isinstance(sample, list):
        return [move_to_device(value, device) for value in sample]
    if isinstance(sample, tuple):
        return tuple(move_to_device(value, device) for value in sample)
    return sample


def prepare_sample(samples: Any, device: torch.device) -> Any:
    """The batch as the model wants it: on the training device."""
    return move_to_device(samples, device)

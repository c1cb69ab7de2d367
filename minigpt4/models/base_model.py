"""Shared by the BLIP-2 style models: fp32 LayerNorm and the autocast helper."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class LayerNorm(nn.LayerNorm):
    """LayerNorm computing in fp32 and returning the input dtype (as BLIP-2's ``ln_vision``).

    The default eps (1e-5) is kept on purpose: the original builds ``ln_vision`` without one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class BaseModel(nn.Module):
    """Autocast handling with the original's semantics; subclasses say where they run
    (``device``)."""

    autocast_dtype: torch.dtype = torch.float16
    device: torch.device

    def maybe_autocast(self, dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager:
        """Autocast on CUDA (fp16 unless configured); nothing on CPU, where each part computes in
        its own dtype. Nothing either inside an autocast already on (a training step's, see
        :mod:`minigpt4.models.training_precision`): a step has one autocast, not two."""
        if self.device.type == "cuda" and not torch.is_autocast_enabled("cuda"):
            return torch.autocast(device_type="cuda", dtype=dtype or self.autocast_dtype)
        return contextlib.nullcontext()

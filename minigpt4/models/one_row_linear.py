"""Frozen bf16 Linear layers whose one-row products skip oneDNN (see
:mod:`minigpt4.models.cpu_choice` for where and why).

Decoding one answer multiplies every LLM weight by a single row; on a CPU with AVX512_BF16
(no AMX) torch sends that bf16 product to oneDNN, which reads the weight at about half the rate
torch's own matrix-vector kernel reaches. Such a product runs with torch's oneDNN switch off
(``torch.backends.mkldnn.enabled``, a process-wide flag, back on right after: a product of
another thread inside that window takes torch's kernel too, which gives the same numbers within
rounding). Products of more rows, trained weights and other devices are left as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.models.upcast_linear import frozen_bf16_linears


def one_row_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``F.linear`` in torch's own kernel (oneDNN off for this call only)."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        return F.linear(x, weight, bias)
    finally:
        torch.backends.mkldnn.enabled = enabled


class OneRowLinear(nn.Linear):
    """An ``nn.Linear`` whose one-row products of a frozen weight skip oneDNN on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one_row = x.numel() == self.in_features and x.device.type == "cpu"
        if not one_row or self.weight.requires_grad:
            return super().forward(x)
        return one_row_product(x, self.weight, self.bias)


def one_row_frozen_linears(model: nn.Module) -> int:
    """Make every plain ``nn.Linear`` of ``model`` with a frozen bf16 weight (the LLM's output
    head included: it also multiplies one row per decoded token) a :class:`OneRowLinear`
    (same parameters and state dict); return how many."""
    layers = frozen_bf16_linears(model)
    for module in layers:
        module.__class__ = OneRowLinear
    return len(layers)

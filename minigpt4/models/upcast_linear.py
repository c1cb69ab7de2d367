"""Frozen bf16 Linear layers that compute large products in fp32 (see
:mod:`minigpt4.models.cpu_choice` for when and why).

The weight stays bf16 in memory; a product of at least ``min_rows`` rows converts it into a
reused fp32 buffer (per thread: converting into fresh memory costs ~7x more, the page faults of
a new 180 MB tensor for each 7B MLP weight), multiplies in fp32 and returns the input's dtype.
The backward pass converts the weight again instead of keeping the fp32 copy, so training
through these layers keeps no fp32 weights either. Layers whose weight trains, quantized
layers (their own forward) and the LLM's output head are left alone: in answers the head's
product is of one row (transformers computes the last position's logits only), and its fp32 copy
would be the largest buffer (0.5 GB for a 7B LLM).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

_scratch = threading.local()


def fp32_buffer(shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """An fp32 tensor of ``shape`` in this thread's buffer (uninitialized, valid until the
    next call): reusing it spares the page faults of a fresh weight-sized tensor per call."""
    numel = torch.Size(shape).numel()
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = _scratch.buffer = torch.empty(numel, dtype=torch.float32)
    return buffer[:numel].view(shape)


def fp32_copy(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in fp32, in this thread's buffer (valid until the next call)."""
    return fp32_buffer(weight.shape).copy_(weight)


class _UpcastProduct(torch.autograd.Function):
    """``x @ weight.T + bias`` in fp32 for a frozen bf16 ``weight`` (and ``bias``)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        bias = None if bias is None else bias.float()
        return F.linear(x.float(), fp32_copy(weight), bias).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return (grad.float() @ fp32_copy(weight)).to(grad.dtype), None, None


class UpcastLinear(nn.Linear):
    """An ``nn.Linear`` whose products of ``min_rows`` rows or more compute in fp32."""

    min_rows: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trains = self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad)
        few_rows = x.numel() // self.in_features < self.min_rows
        if trains or few_rows or x.device.type != "cpu":  # the buffer is in CPU memory
            return super().forward(x)
        return _UpcastProduct.apply(x, self.weight, self.bias)


def frozen_bf16_linears(model: nn.Module, skip: nn.Module | None = None) -> list[nn.Linear]:
    """The plain ``nn.Linear`` layers of ``model`` (but ``skip``) with a frozen bf16 weight."""
    return [
        module
        for module in model.modules()
        if module is not skip
        and type(module) is nn.Linear
        and module.weight.dtype == torch.bfloat16
        and not module.weight.requires_grad
    ]


def upcast_frozen_linears(model: nn.Module, min_rows: int, skip: nn.Module | None = None) -> int:
    """Make every plain ``nn.Linear`` of ``model`` but ``skip`` with a frozen bf16 weight an
    :class:`UpcastLinear` (same parameters and state dict); return how many."""
    layers = frozen_bf16_linears(model, skip)
    for module in layers:
        module.__class__ = UpcastLinear
        module.min_rows = min_rows
    return len(layers)

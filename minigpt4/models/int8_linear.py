"""8-bit LLM layers (bitsandbytes) whose CPU products multiply by the int8 weight alone.

bitsandbytes stores an 8-bit layer as int8 rows (the ``weight``, its ``CB``) and one absmax per
row (``SCB``): the weight is ``CB * SCB / 127``. For inference its CPU path is LLM.int8(): it
quantizes the activations to int8 as well (through fp16), splits off outlier columns, and has
no fast CPU kernel for either (a 7B answer on an AVX2 CPU: seconds per token). For training,
bitsandbytes itself takes a weight-only path on the CPU (the weight dequantized, then a plain
product). Here every CPU product of a frozen 8-bit layer is weight-only: the numbers of
bitsandbytes' own CPU training path, never less exact than LLM.int8()'s (the activations are
not quantized), through the faster kernel for the rows at hand:

- fewer than :data:`DEQUANTIZE_MIN_ROWS` rows (decoding an answer): torch's int8 weight-only
  kernel (``aten._weight_int8pack_mm``), which reads the int8 weight once: half the bytes of a
  bf16 weight (for input widths that kernel handles, :data:`KERNEL_ROW_MULTIPLE`);
- more rows (the prefill of a prompt, training): the weight dequantized into a reused buffer,
  in fp32 where the CPU's bf16 products are emulated (``model.cpu_matmul``,
  :mod:`minigpt4.models.cpu_choice`), else in the activations' dtype; then one product.

The backward pass (training through the LLM) dequantizes the weight again. The weights, their
memory and the state dict stay bitsandbytes' own.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.models.upcast_linear import fp32_copy

# The fewest rows from which dequantizing the weight, then one fp32 product, is as fast as
# torch's int8 kernel: over a 7B decoder layer's seven weights, 407 against 417 ms at 40 rows,
# 469 against 460 at 48 (AVX2-only AMD EPYC, one thread; docs/benchmarks.md).
DEQUANTIZE_MIN_ROWS = 48
# torch's int8 CPU kernel reads past the end of weight rows whose length is no multiple of its
# vector width (torch 2.14.1, AVX2: rows of 172 crash it or give NaN; 24, 40 and 176 do not).
# Such layers (tiny LLMs only: every real LLaMA width is a multiple of 16) always dequantize.
KERNEL_ROW_MULTIPLE = 16


def dequantized(weight: torch.Tensor, row_scales: torch.Tensor, dtype: torch.dtype):
    """``weight * row_scales[:, None]`` in ``dtype`` (fp32: in this thread's reused buffer)."""
    if dtype == torch.float32:
        return fp32_copy(weight).mul_(row_scales.float()[:, None])
    return weight.to(dtype).mul_(row_scales.to(dtype)[:, None])


class _Int8Product(torch.autograd.Function):
    """``x @ (weight * row_scales[:, None]).T + bias`` for an int8 ``weight`` (frozen)."""

    @staticmethod
    def forward(ctx, x, weight, row_scales, bias, large_dtype):
        ctx.save_for_backward(weight, row_scales)
        rows = x.numel() // x.shape[-1]
        if rows < DEQUANTIZE_MIN_ROWS and weight.shape[1] % KERNEL_ROW_MULTIPLE == 0:
            flat = x.reshape(rows, x.shape[-1])
            out = torch.ops.aten._weight_int8pack_mm(flat, weight, row_scales.to(x.dtype))
            out = out.reshape(*x.shape[:-1], weight.shape[0])
            return out if bias is None else out + bias.to(x.dtype)
        bias = None if bias is None else bias.to(large_dtype)
        product = F.linear(x.to(large_dtype), dequantized(weight, row_scales, large_dtype), bias)
        return product.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        weight, row_scales = ctx.saved_tensors
        full = dequantized(weight, row_scales, torch.float32)
        return (grad.float() @ full).to(grad.dtype), None, None, None, None


@functools.cache
def _int8_linear_class() -> type:
    import bitsandbytes as bnb

    class Int8WeightLinear(bnb.nn.Linear8bitLt):
        """A bitsandbytes 8-bit layer whose CPU products are weight-only (module docstring)."""

        large_dtype: torch.dtype | None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scb = getattr(self.weight, "SCB", None)
            if self.state.SCB is not None:
                scb = self.state.SCB
            weight = self.state.CB if self.state.CB is not None else self.weight.data
            if x.device.type != "cpu" or weight.dtype != torch.int8 or scb is None:
                return super().forward(x)
            large = self.large_dtype or x.dtype
            return _Int8Product.apply(x, weight, scb / 127.0, self.bias, large)

    return Int8WeightLinear


def int8_weight_linears(model: nn.Module, large_dtype: torch.dtype | None) -> int:
    """Make every bitsandbytes 8-bit layer of ``model`` an ``Int8WeightLinear`` (same
    parameters, state dict and memory) whose products of many rows compute in ``large_dtype``
    (None: the activations' dtype); return how many."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if type(m) is bnb.nn.Linear8bitLt]
    if layers:
        cls = _int8_linear_class()
        for module in layers:
            module.__class__ = cls
            module.large_dtype = large_dtype
    return len(layers)

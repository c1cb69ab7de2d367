"""8-bit LLM layers (bitsandbytes) whose CPU products multiply by the int8 weight alone.

bitsandbytes stores an 8-bit layer as int8 rows (the ``weight``, its ``CB``) and one absmax per
row (``SCB``): the weight is ``CB * SCB / 127``. For inference its CPU path is LLM.int8(): it
quantizes the activations to int8 as well (through fp16) and splits off outlier columns; its
int8 products are fast only where torch dispatches AVX-512 kernels (``torch._int_mm``, oneDNN),
elsewhere plain loops (a 7B answer on an AVX2 CPU: seconds per token). For training,
bitsandbytes itself takes a weight-only path on the CPU (the weight dequantized, then a plain
product). Here the CPU products of a frozen 8-bit layer are weight-only (the numbers of
bitsandbytes' own CPU training path, never less exact than LLM.int8()'s: the activations are
not quantized) through the faster kernel for the rows at hand:

- fewer than :data:`DEQUANTIZE_MIN_ROWS` rows (decoding an answer): torch's int8 weight-only
  kernel (``aten._weight_int8pack_mm``), which reads the int8 weight once: half the bytes of a
  bf16 weight (for input widths that kernel handles, :data:`KERNEL_ROW_MULTIPLE`);
- more rows (the prefill of a prompt, training): the weight converted into a reused buffer,
  in fp32 where the CPU's bf16 products are emulated (``model.cpu_matmul``,
  :mod:`minigpt4.models.cpu_choice`), else in the activations' dtype; then one product, its
  output scaled per row. Where bitsandbytes' int8 kernel runs, a product of many rows that
  needs no gradient (a prefill) takes LLM.int8() instead (``int8_prefill``): int8 GEMMs beat
  the converted weight there (a 7B prompt: 5.4 against 7.4 s on two Zen 4 cores).

The backward pass (training through the LLM) converts the weight again. The weights, their
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


def _in_dtype(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The int8 ``weight`` in ``dtype`` (exact: every int8 is a bf16), fp32 in the thread's
    reused buffer."""
    return fp32_copy(weight) if dtype == torch.float32 else weight.to(dtype)


def scaled_product(x, weight, row_scales, bias, dtype: torch.dtype) -> torch.Tensor:
    """``x @ (weight * row_scales[:, None]).T + bias`` computed in ``dtype`` as
    ``(x @ weight.T) * row_scales``: the scales go onto the output (one value per output
    feature), so the weight is only converted, one pass over it instead of two."""
    out = F.linear(x.to(dtype), _in_dtype(weight, dtype)).mul_(row_scales.to(dtype))
    return out if bias is None else out.add_(bias.to(dtype))


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
        return scaled_product(x, weight, row_scales, bias, large_dtype).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        weight, row_scales = ctx.saved_tensors
        scaled = grad.float() * row_scales.float()
        return (scaled @ fp32_copy(weight)).to(grad.dtype), None, None, None, None


@functools.cache
def _int8_linear_class() -> type:
    import bitsandbytes as bnb

    class Int8WeightLinear(bnb.nn.Linear8bitLt):
        """A bitsandbytes 8-bit layer whose CPU products are weight-only (module docstring)."""

        large_dtype: torch.dtype | None
        int8_prefill: bool  # LLM.int8() for many rows without gradients (module docstring)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.int8_prefill and not (torch.is_grad_enabled() and x.requires_grad):
                if x.numel() // x.shape[-1] >= DEQUANTIZE_MIN_ROWS:
                    return super().forward(x)
            scb = getattr(self.weight, "SCB", None)
            if self.state.SCB is not None:
                scb = self.state.SCB
            weight = self.state.CB if self.state.CB is not None else self.weight.data
            if x.device.type != "cpu" or weight.dtype != torch.int8 or scb is None:
                return super().forward(x)
            large = self.large_dtype or x.dtype
            return _Int8Product.apply(x, weight, scb / 127.0, self.bias, large)

    return Int8WeightLinear


def int8_weight_linears(
    model: nn.Module, large_dtype: torch.dtype | None, int8_prefill: bool = False
) -> int:
    """Make every bitsandbytes 8-bit layer of ``model`` an ``Int8WeightLinear`` (same
    parameters, state dict and memory) whose products of many rows compute in ``large_dtype``
    (None: the activations' dtype), or with ``int8_prefill`` through bitsandbytes' LLM.int8()
    when no gradient is asked for; return how many."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if type(m) is bnb.nn.Linear8bitLt]
    if layers:
        cls = _int8_linear_class()
        for module in layers:
            module.__class__ = cls
            module.large_dtype = large_dtype
            module.int8_prefill = int8_prefill
    return len(layers)


def prefills_weight_only(module: nn.Module) -> bool:
    """Whether ``module`` is an 8-bit layer whose products of many rows (prefills) are
    weight-only (made so by :func:`int8_weight_linears` without ``int8_prefill``)."""
    return type(module) is _int8_linear_class() and not module.int8_prefill

"""4-bit LLM layers on CPUs without bitsandbytes' fast 4-bit kernel: torch's int4 kernel.

bitsandbytes has one fast 4-bit CPU kernel, and it needs AVX512-BF16. Elsewhere (an AVX2-only
CPU) each call dequantizes the whole NF4 weight first: ~130 ms for one row through a 7B MLP
weight, seconds per decoded token. torch's own int4 kernel (``aten._weight_int4pack_mm_for_cpu``)
runs on AVX2 and AVX-512 alike and reads the packed weight once: 7 ms there (docs/benchmarks.md).

Its format is not NF4: 4-bit integers in groups of :data:`GROUP_SIZE` along each row, each group
with a scale and a zero point (the weight is ``(q - 8) * scale + zero``). A loaded NF4 weight is
dequantized and requantized into it once, at load time (its NF4 copy is then freed). On a
normal weight with outlier columns that moves it by 8.1 % of its norm, 0.8x what NF4 moved it
(9.7 %): 12.6 % from the bf16 weight in all.

- fewer than :data:`DEQUANTIZE_MIN_ROWS` rows (decoding): torch's int4 kernel in bf16;
- more rows (prefill, training) and the backward pass: the weight dequantized (its packed
  layout read back by :func:`dequantize_transposed`; in fp32 into the reused buffer of
  :mod:`minigpt4.models.upcast_linear` where bf16 products are emulated), then one product.

torch packs the 4-bit values for its kernel in a layout of its own, which depends on the
vector width it was dispatched for (``torch.backends.cpu.get_cpu_capability()``);
:func:`unpack` reads the layouts of AVX-512 and AVX2, and :func:`layout_understood` checks
that reading against the kernel itself before any layer is converted.
"""

from __future__ import annotations

import functools
import gc

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.models import memory
from minigpt4.models.upcast_linear import fp32_buffer

# Values per scale and zero point along a row: torch's kernel takes 32, 64, 128 or 256; the
# smallest has the smallest requantization error (12.6 % against 13.8 % at 64) at the same speed.
GROUP_SIZE = 32
# torch's int4 kernel tiles output rows by 16 (a weight's out_features must be a multiple).
KERNEL_ROW_MULTIPLE = 16
# From this many rows the dequantized weight and one product beat torch's int4 kernel, which
# computes four rows at a time: a 7B MLP weight, one thread, AVX2 kernels, 112 against 146 ms at
# 64 rows, 224 against 197 at 128 (docs/benchmarks.md).
DEQUANTIZE_MIN_ROWS = 96
# Output rows per block of torch's packed layout, per dispatched capability; within a full
# block, byte j of column k holds row j (low nibble) and row j + block / 2 (high nibble).
_BLOCK_ROWS = {"AVX512": 64, "AVX2": 32}


def tileable(out_features: int, in_features: int) -> bool:
    """Whether torch's int4 kernel takes a weight of this shape."""
    return out_features % KERNEL_ROW_MULTIPLE == 0 and in_features % GROUP_SIZE == 0


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [N, K] -> (4-bit values as int32 [N, K], bf16 scales and zeros [K / group, N,
    2]): per group, 16 levels from its minimum to its maximum."""
    n, k = weight.shape
    # in the reused fp32 buffer (a fresh one costs its page faults, for every layer loaded)
    groups = fp32_buffer((n, k // GROUP_SIZE, GROUP_SIZE)).copy_(weight.view(n, -1, GROUP_SIZE))
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)  # 4x aminmax
    scale = ((high - low) / 15).clamp_(min=torch.finfo(torch.float32).tiny)
    values = groups.sub_(low).div_(scale).round_().clamp_(0, 15).to(torch.int32).view(n, k)
    zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
    scales = torch.stack([scale.squeeze(-1).t(), zero.squeeze(-1).t()], dim=-1)
    return values, scales.to(torch.bfloat16).contiguous()


def pack(values: torch.Tensor) -> torch.Tensor:
    """int32 4-bit values [N, K] in the layout of torch's kernel (uint8, K / 2 bytes a row)."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 1)


def _fill_transposed(out: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Write the 4-bit values of a weight [N, K] that :func:`pack` packed on this machine into
    ``out`` [K, N], its transpose (any dtype: converted while copied). The packed layout holds
    each column of the transpose in runs of output rows, so this order copies runs."""
    k, n = out.shape
    block = _BLOCK_ROWS[torch.backends.cpu.get_cpu_capability()]
    data = packed.reshape(-1)
    full, half = n // block, block // 2
    head = data[: full * k * half].reshape(full, k, half).transpose(0, 1)
    # full blocks: rows [0, block / 2) in the low nibbles, the rest in the high ones
    blocks = out[:, : full * block].view(k, full, block)
    blocks[..., :half].copy_(head & 15)
    blocks[..., half:].copy_(head >> 4)
    rest = n - full * block
    if rest:  # a last, partial block: rows i and i + 1 share a byte
        tail = data[full * k * half :].reshape(k, rest // 2)
        pairs = out[:, full * block :].view(k, rest // 2, 2)
        pairs[..., 0].copy_(tail & 15)
        pairs[..., 1].copy_(tail >> 4)
    return out


def unpack(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The 4-bit values [N, K] (uint8) of a weight :func:`pack` packed on this machine."""
    return _fill_transposed(torch.empty(k, n, dtype=torch.uint8), packed).t()


def dequantize_transposed(packed: torch.Tensor, scales: torch.Tensor, k: int, dtype):
    """The transpose [K, N], in ``dtype``, of the weight that torch's kernel multiplies by."""
    n = scales.shape[1]
    out = fp32_buffer((k, n)) if dtype == torch.float32 else torch.empty(k, n, dtype=dtype)
    weight = _fill_transposed(out, packed).view(k // GROUP_SIZE, GROUP_SIZE, n)
    # [K / group, 1, N] each, dense: a strided operand makes the pass below 2.5x slower
    scale, zero = (scales[:, None, :, i].to(dtype, copy=True) for i in (0, 1))
    return torch.addcmul(zero.sub_(scale, alpha=8), weight, scale, out=weight).view(k, n)


@functools.cache
def layout_understood() -> bool:
    """Whether :func:`dequantize_transposed` gives the weight torch's kernel uses, on this machine
    (a full block of output rows and a partial one, checked once against the kernel)."""
    if torch.backends.cpu.get_cpu_capability() not in _BLOCK_ROWS:
        return False
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(max(_BLOCK_ROWS.values()) + 16, 2 * GROUP_SIZE, generator=generator)
    values, scales = quantize(weight)
    packed = pack(values)
    x = torch.randn(1, weight.shape[1], generator=generator).to(torch.bfloat16)
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP_SIZE, scales).float()
    expected = x.float() @ dequantize_transposed(packed, scales, weight.shape[1], torch.float32)
    return torch.allclose(kernel, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


class _Int4Product(torch.autograd.Function):
    """``x @ W.T + bias`` for a packed 4-bit ``W`` (frozen)."""

    @staticmethod
    def forward(ctx, x, packed, scales, bias, large_dtype):
        ctx.save_for_backward(packed, scales)
        k = x.shape[-1]
        rows = x.numel() // k
        if rows < DEQUANTIZE_MIN_ROWS:
            # bf16 activations: the kernel's fp32 path is scalar (30x slower)
            flat = x.reshape(rows, k).to(torch.bfloat16)
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, GROUP_SIZE, scales)
            out = out.reshape(*x.shape[:-1], scales.shape[1]).to(x.dtype)
            return out if bias is None else out + bias.to(x.dtype)
        bias = None if bias is None else bias.to(large_dtype)
        weight = dequantize_transposed(packed, scales, k, large_dtype).t()
        return F.linear(x.to(large_dtype), weight, bias).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        packed, scales = ctx.saved_tensors
        weight_t = dequantize_transposed(packed, scales, packed.shape[-1] * 2, torch.float32)
        return (grad.float() @ weight_t.t()).to(grad.dtype), None, None, None, None


class Int4WeightLinear(nn.Module):
    """A frozen 4-bit Linear multiplied by torch's int4 CPU kernel (module docstring). Its
    packed weight is a buffer (not in the state dict: it is derived from the LLM's files)."""

    def __init__(self, packed, scales, bias, large_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.out_features = scales.shape[1]
        self.in_features = packed.shape[-1] * 2
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales", scales, persistent=False)
        self.bias = bias
        self.large_dtype = large_dtype

    @classmethod
    def from_nf4(cls, layer: nn.Module, large_dtype: torch.dtype | None) -> Int4WeightLinear:
        """The torch-int4 copy of a bitsandbytes ``Linear4bit`` (its NF4 weight requantized)."""
        import bitsandbytes.functional as bnbf

        weight = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        values, scales = quantize(weight)
        bias = None if layer.bias is None else nn.Parameter(layer.bias.data, requires_grad=False)
        return cls(pack(values), scales, bias, large_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        large = self.large_dtype or x.dtype
        return _Int4Product.apply(x, self.packed, self.scales, self.bias, large)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4"


def torch_int4_linears(model: nn.Module, large_dtype: torch.dtype | None) -> tuple[int, int]:
    """Replace every bitsandbytes 4-bit layer of ``model`` whose shape torch's kernel takes by
    an :class:`Int4WeightLinear` whose products of many rows compute in ``large_dtype`` (None:
    the activations' dtype); return (how many were replaced, how many 4-bit layers there were).
    Nothing is replaced where this torch's packed layout is not the one :func:`unpack` reads.
    The NF4 layers are freed as the conversion goes (every few layers: bitsandbytes' weight and
    layer reference each other, so only the cycle collector frees them; then the heap is
    trimmed): the conversion needs little more memory than the larger of the two layouts."""
    import bitsandbytes as bnb

    slots = [
        (owner, name)
        for owner in model.modules()
        for name, child in owner.named_children()
        if isinstance(child, bnb.nn.Linear4bit)
    ]
    todo = [
        (owner, name)
        for owner, name in slots
        if tileable(getattr(owner, name).out_features, getattr(owner, name).in_features)
    ]
    if not todo or not layout_understood():
        return 0, len(slots)
    with torch.no_grad():
        for done, (owner, name) in enumerate(todo, 1):
            setattr(owner, name, Int4WeightLinear.from_nf4(getattr(owner, name), large_dtype))
            if done % memory.TRIM_EVERY_LAYERS == 0:
                _free_replaced()
    _free_replaced()
    return len(todo), len(slots)


def _free_replaced() -> None:
    gc.collect()
    memory.release_freed_memory()

"""The work of one call, for its bound on this machine (``roofline.py``): the FLOPs it computes
and the bytes of LLM weights it reads.

- FLOPs: torch's ``FlopCounterMode`` counts every matmul it sees, backward's included; a Linear
  layer whose product it does not see (bitsandbytes' packed 4-bit CPU kernel is a custom op) is
  counted from its shape instead (``linear_flops.py``: its forward, and the gradients of its
  input and weight where autograd takes them).
- Bytes: every forward call of the LLM reads all its weights once (:func:`llm_bytes_per_call`),
  whatever the number of rows: a decode step for a batch of answers reads them once for all.

A call's bound is the larger of its FLOPs over the matmul peak and its bytes over the read
bandwidth (:meth:`roofline.Roofline.bound_s`): each alone is a time the call cannot beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import roofline
import torch
from linear_flops import LinearFlops, leaf_linears
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minigpt4.models.int4_linear import Int4WeightLinear


@dataclass(frozen=True)
class Work:
    flops: int
    llm_calls: int = 0
    bytes_per_call: int = 0
    by_shape: int = 0  # Linear layers the FLOP counter did not see, counted by their shapes

    @property
    def nbytes(self) -> int:
        return self.llm_calls * self.bytes_per_call

    def counted_by(self) -> str:
        """How the FLOPs were counted, in words."""
        if not self.by_shape:
            return "torch's FLOP counter"
        return f"torch's FLOP counter + {self.by_shape} Linear layers by their shapes"

    def bound_s(self, roof: roofline.Roofline, dtypes: str | tuple[str, ...]) -> float | None:
        return roof.bound_s(self.flops, dtypes, self.nbytes)


def llm_bytes_per_call(llm: nn.Module) -> int:
    """Bytes of LLM weights one forward call reads: every parameter and quantization scale
    but the input embedding table (of which a row per token is read), and the packed weights
    of layers on torch's int4 kernel (buffers)."""
    embed = llm.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in llm.parameters() if p is not embed)
    for module in llm.modules():
        if isinstance(module, Int4WeightLinear):
            total += sum(b.numel() * b.element_size() for b in module.buffers())
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        extras = [getattr(state, "absmax", None), getattr(weight, "SCB", None)]
        total += sum(t.numel() * t.element_size() for t in extras if torch.is_tensor(t))
    return total


def count(run: Callable[[], object], model: nn.Module, llm: nn.Module | None = None) -> Work:
    """Run ``run()`` once, counting the FLOPs of ``model`` and the forward calls of ``llm``."""
    calls = []
    hooks = [] if llm is None else [llm.register_forward_hook(lambda *_: calls.append(1))]
    with FlopCounterMode(display=False) as counter:
        unseen = LinearFlops(model, unseen_by=counter)
        try:
            run()
        finally:
            unseen.remove()
            for hook in hooks:
                hook.remove()
    per_call = 0 if llm is None else llm_bytes_per_call(llm)
    return Work(counter.get_total_flops() + unseen.total, len(calls), per_call, len(unseen.layers))


def linear_shapes(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """The distinct (K, N) of ``model``'s Linear layers: the products it multiplies."""
    return tuple(sorted({(m.in_features, m.out_features) for m in leaf_linears(model)}))


def weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def measure_at(model: nn.Module, device: str, dtypes=("fp32", "bf16"), rows=roofline.ROWS,
               repeats: int = roofline.REPEATS) -> roofline.Roofline:  # fmt: skip
    """This machine's roofline at ``model``'s Linear shapes, its read bandwidth over as many
    bytes as the model's weights: from the cache where they fit in it (a tiny model's do, and
    stay there from one decoded token to the next: that is where they are read from), from
    memory for a large model (at most ``roofline``'s default size, a few times the cache)."""
    default = max(roofline.MIN_READ_BYTES, 4 * roofline.last_level_cache_bytes(device))
    nbytes = min(default, max(1 << 20, weight_bytes(model)))
    return roofline.measure(device, dtypes, rows, linear_shapes(model), repeats, nbytes)

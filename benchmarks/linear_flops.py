"""FLOPs of an LLM's Linear layers as they run: the work of a prompt's prefill, for its bound,
and of the layers torch's FLOP counter does not see.

torch's ``FlopCounterMode`` sees the matmuls of plain layers, but not the custom kernels of
bitsandbytes' 4-bit and 8-bit layers. Those subclass ``nn.Linear`` and keep its logical
``in_features`` / ``out_features``, so counting at the module level gives every mode the same
work: 2 x rows x in x out per pass (the multiply-adds the layer stands for, whatever its
kernel). With a FLOP counter (``unseen_by``), only the calls it did not see are counted, and
only their forward: the backward of such a layer is plain torch (bitsandbytes' 4-bit backward
multiplies by the dequantized weight with ``torch.matmul``; its packed CPU kernel has none), which
the counter sees, so counting it here too would count it twice. The attention products (scores
and their weighted sum) are not Linear layers and are left out: per token 4 x L x hidden per
layer, against 2 x 6.5e9 in a 7B LLaMA's Linear layers, 0.4 % of the work for a prompt of
L = 100 tokens; counting less work only loosens a bound, it never breaks it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minigpt4.models.int4_linear import Int4WeightLinear


def leaf_linears(module: nn.Module) -> list[nn.Module]:
    """The ``nn.Linear`` layers (and layers on torch's int4 kernel, which stand for one) under
    ``module`` that hold no other (a wrapper that subclasses ``nn.Linear`` around one would
    count its product twice)."""
    kinds = (nn.Linear, Int4WeightLinear)
    return [m for m in module.modules() if isinstance(m, kinds)
            and not any(isinstance(s, kinds) for s in m.modules() if s is not m)]  # fmt: skip


class LinearFlops:
    """Counts the FLOPs of every ``nn.Linear`` call under ``module`` until :meth:`remove`; with
    ``unseen_by``, only those of the calls whose product that counter did not count."""

    def __init__(self, module: nn.Module, unseen_by: FlopCounterMode | None = None) -> None:
        self.total = 0
        self.layers: set[int] = set()  # ids of the layers counted
        self._counter = unseen_by
        self._before = 0
        self._handles = []
        for layer in leaf_linears(module):
            self._handles += [layer.register_forward_pre_hook(self._start),
                              layer.register_forward_hook(self._count)]  # fmt: skip

    def _start(self, _layer: nn.Linear, _inputs: tuple) -> None:
        if self._counter is not None:
            self._before = self._counter.get_total_flops()

    def _count(self, layer: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        if self._counter is not None and self._counter.get_total_flops() > self._before:
            return
        self.total += 2 * output.numel() * layer.in_features
        self.layers.add(id(layer))

    def remove(self) -> None:
        """Stop counting (safe to call more than once)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

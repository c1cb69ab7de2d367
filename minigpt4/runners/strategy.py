"""How the trained model is spread over processes: one object, chosen by ``run.strategy``.

The training loop and the checkpointer ask the strategy; none of them tests what the model is
wrapped in. A strategy wraps the placed model, gives the context in which a backward pass only
accumulates (no gradient exchange), unwraps the model for saving and gathers a per-rank value
(RNG states, data positions) onto every rank.

- ``single``: one process, the model as it is (``python train.py``).
- ``ddp``: ``DistributedDataParallel``; gradients are averaged over ranks in ``backward``. The
  default whenever the run is distributed (``torchrun``), as in the original.

Sharding the frozen LLM (FSDP) would be a third class here: ``wrap`` shards, ``unwrap`` gives
the module whose state dict holds full tensors; the loop would not change.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn


class Strategy(Protocol):
    name: str

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module: ...

    def unwrap(self, model: nn.Module) -> nn.Module: ...

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager: ...

    def gather(self, value: Any) -> list[Any]: ...

    def reduce_max(self, values: list[int]) -> list[int]: ...


class SingleProcess:
    """Everything on this process: nothing to wrap, exchange or gather."""

    name = "single"

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def reduce_max(self, values: list[int]) -> list[int]:
        return list(values)


class DataParallel:
    """``DistributedDataParallel``: every rank holds the whole model and its own batches."""

    name = "ddp"

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        # Wrapping broadcasts rank 0's parameters and buffers, so all ranks start equal.
        device_ids = [device.index] if device.type == "cuda" else None
        # As the original: a batch may leave trainable parts unused (MiniGPT-v2's text-only
        # batches never reach llama_proj), which plain DDP refuses at the next step.
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=True
        )

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return model.no_sync()

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values

    def reduce_max(self, values: list[int]) -> list[int]:
        """Each value's maximum over the ranks (flags: whether any rank has it set)."""
        on_gpu = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
        tensor = torch.tensor(values, dtype=torch.long, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()


def build_strategy(name: str | None, distributed: bool, world_size: int) -> Strategy:
    """The strategy ``run.strategy`` names; None: ``ddp`` when distributed, else ``single``."""
    name = name or ("ddp" if distributed else "single")
    if name == "ddp" and not distributed:
        raise ValueError(
            "run.strategy is 'ddp' but this process is not part of a distributed launch: "
            "start it with torchrun, or set run.strategy=single"
        )
    if name == "single" and world_size > 1:
        raise ValueError(
            f"run.strategy is 'single' but {world_size} processes were launched: each would "
            "train its own copy. Use run.strategy=ddp, or launch one process"
        )
    return SingleProcess() if name == "single" else DataParallel()

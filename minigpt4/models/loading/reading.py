"""Reading a weight file safely: safetensors (recognised by content) or a ``weights_only``
PyTorch pickle, into a flat ``{name: tensor}`` dict, with errors naming the file and its key."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from minigpt4.common.checkpoint_files import CheckpointError, torch_load_safely
from minigpt4.models.loading.sources import MissingWeightsError

_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


def _looks_like_safetensors(path: str, where: str) -> bool:
    """Whether ``path`` is a safetensors file (by content: 8 bytes of header length, then
    ``{``); one whose header length cannot be right is an error saying so, not "not a PyTorch
    checkpoint"."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return path.endswith(".safetensors") and _bad_safetensors(where, "too short")
    header_len = int.from_bytes(head[:8], "little")
    size = os.path.getsize(path)
    if header_len >= _SAFETENSORS_MAX_HEADER or header_len > size - 8:
        _bad_safetensors(where, f"its header claims {header_len} bytes of the file's {size}")
    return True


def _bad_safetensors(where: str, why: str) -> bool:
    raise CheckpointError(
        f"{where}: a safetensors file that cannot be right ({why}): truncated "
        "or corrupt; download or export it again"
    )


def load_state_dict_file(path: str, config_key: str) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` dict, safely.

    Accepts a ``.safetensors`` file (recognised by content, whatever its extension) or a
    PyTorch checkpoint (read by :func:`torch_load_safely`: ``weights_only``, clear errors)
    holding either a flat state dict or ``{"model": state_dict, ...}`` (the LAVIS / MiniGPT-4 /
    runner layouts). Anything else raises :class:`CheckpointError` naming the file and
    ``config_key``.
    """
    where = f"{path} ({config_key})"
    if not os.path.isfile(path):
        raise MissingWeightsError(f"{where}: file not found")
    if _looks_like_safetensors(path, where):
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as err:  # safetensors raises many kinds
            raise CheckpointError(f"{where}: cannot be read as safetensors: {err}") from err
    else:
        # Memory-mapped: the tensors stay file pages (reclaimable), not a copy in RAM.
        obj = torch_load_safely(path, config_key, mmap=True)
    return _unwrap_state_dict(obj, where)


def _unwrap_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{where}: not a state dict (expected a dict of tensors, or {{'model': state_dict}}; "
            f"got {type(obj).__name__})"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{where}: not a state dict: entries {[str(k) for k in bad[:5]]} are not tensors "
            f"(top-level keys: {list(obj)[:10]})"
        )
    return dict(obj)

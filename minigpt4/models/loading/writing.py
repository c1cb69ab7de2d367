"""Writing weight files in the real layouts (tests, the tiny world, benchmarks): a checkpoint
file atomically, and a Hugging Face LLM folder shard by shard."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import torch

from minigpt4.common.atomic_write import atomic_write
from minigpt4.common.checkpoint_files import atomic_torch_save
from minigpt4.models.tokenizer import TOKENIZER_FILE


def save_weights(content: Mapping, path: str) -> None:
    """``torch.save`` ``content`` to ``path`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_torch_save(content, path)


# Hugging Face's shard size for the folders it writes; here it bounds what is in memory at once.
LLM_SHARD_BYTES = 2 * 1024**3
LLM_INDEX_FILE = "model.safetensors.index.json"


def _plan_shards(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]], limit: int):
    shards: list[list[str]] = [[]]
    size = 0
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_llm_folder(
    folder: str,
    llm_config: Mapping[str, Any],
    specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    make_tensor: Callable[[str, tuple[int, ...], torch.dtype], torch.Tensor],
    tokenizer_file: str,
    max_shard_bytes: int = LLM_SHARD_BYTES,
) -> list[str]:
    """A Hugging Face LLaMA-family folder (``config.json``, safetensors shards and their index,
    ``tokenizer.model``), written shard by shard: ``make_tensor(name, shape, dtype)`` is called
    for one shard's tensors at a time, so the whole LLM is never in memory. Each file is written
    atomically. Returns the shard paths."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    shards = _plan_shards(specs, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for file_name, keys in zip(names, shards, strict=True):
        tensors = {k: make_tensor(k, *specs[k]).contiguous() for k in keys}
        path = os.path.join(folder, file_name)
        with atomic_write(path) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file_name))
        del tensors
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs.values())
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _write_json(os.path.join(folder, LLM_INDEX_FILE), index)
    _write_json(os.path.join(folder, "config.json"), dict(llm_config))
    shutil.copyfile(tokenizer_file, os.path.join(folder, TOKENIZER_FILE))
    return [os.path.join(folder, n) for n in names]


def _write_json(path: str, content: Any) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)

"""Checkpoint and weight files: written atomically, read safely, with errors that say what to do.

- :func:`atomic_torch_save` writes through ``minigpt4.common.atomic_write`` (``<path>.tmp.<pid>``,
  then a rename): a crash or ``kill -9`` leaves the old file or the new one, never half of one.
- :func:`torch_load_safely` loads with ``weights_only=True`` (a crafted pickle cannot run code)
  and turns every failure into a :class:`CheckpointError` naming the file, the config key that
  points at it and the cause: empty file, truncated or corrupt file, a pickle that holds
  something other than tensors and plain containers (naming the offending global). Every
  weight file (:mod:`minigpt4.models.loading`) and training checkpoint (:func:`read_checkpoint`,
  which also checks the entries) is read through it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from typing import Any

import torch

from minigpt4.common.atomic_write import atomic_write

_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


class CheckpointError(ValueError):
    """A checkpoint or weight file that exists but cannot be used."""


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`~minigpt4.common.atomic_write.atomic_write`; a failed
    write (a full disk shows as torch's ``basic_ios::clear``) is an error naming the file and
    the free space, and leaves the previous file as it was."""
    try:
        with atomic_write(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as err:
        folder = os.path.dirname(os.path.abspath(path))
        free = shutil.disk_usage(folder).free if os.path.isdir(folder) else 0
        raise CheckpointError(
            f"{path}: could not be written ({err}); {free / 2**20:.0f} MiB are free on its "
            "disk: free space or choose another run.output_dir"
        ) from err


def looks_like_torch_file(path: str) -> bool:
    """Starts as ``torch.save`` files do: a zip archive, or a pickle (the legacy format)."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    return head == _ZIP_MAGIC or head[:1] == _PICKLE_PROTO


def describe_load_error(err: BaseException, looks_like_checkpoint: bool = True) -> str:
    """Why ``torch.load`` failed on a file, in one line."""
    text = str(err)
    first = text.splitlines()[0] if text else type(err).__name__
    if not looks_like_checkpoint:  # e.g. a text file: its bytes read as garbage pickle opcodes
        return "not a PyTorch checkpoint: it does not start like a file torch.save writes"
    if "Weights only load failed" in text or "Unsupported global" in text:
        found = _BLOCKED_GLOBAL.search(text)
        what = f"a reference to {found.group(1)}" if found else "an object"
        return (
            f"refused to unpickle it: it holds {what}, which is not a tensor or a plain "
            "container and could run code when loaded. Use a checkpoint written by train.py "
            "(or re-save the state dict from a trusted copy)"
        )
    return (
        f"the file is truncated or corrupt ({type(err).__name__}: {first}); a save was "
        "interrupted or the copy is incomplete: use another checkpoint"
    )


def torch_load_safely(path: str, config_key: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; every failure is a :class:`CheckpointError`
    (or :class:`FileNotFoundError`) naming ``config_key``, the file and the cause. ``mmap``:
    memory-map a zip checkpoint (the format ``torch.save`` writes today) instead of reading it."""
    where = f"{config_key}: {path}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"{where} is not a file (a checkpoint file is expected)")
    if os.path.getsize(path) == 0:
        raise CheckpointError(
            f"{where} is empty (0 bytes): its save was interrupted; use another checkpoint"
        )
    with open(path, "rb") as f:
        is_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as err:  # every failure becomes one clear message
        reason = describe_load_error(err, looks_like_torch_file(path))
        raise CheckpointError(f"{where}: {reason}") from err


def read_checkpoint(path: str, config_key: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """Load the dict checkpoint at ``path`` (named by ``config_key``) with ``weights_only``.

    ``required`` top-level entries must be present. Raises :class:`FileNotFoundError` or
    :class:`CheckpointError`, each naming ``config_key``, the file and the cause.
    """
    where = f"{config_key}: {path}"
    checkpoint = torch_load_safely(path, config_key)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{where} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{where} is not a training checkpoint: it has no {', '.join(map(repr, missing))} "
            f"entr{'y' if len(missing) == 1 else 'ies'} (it has: {', '.join(map(str, checkpoint))})"
        )
    return checkpoint

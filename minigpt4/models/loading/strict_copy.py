"""The one strict copy of a file's tensors into a module: every needed key present with the
right shape, one error style naming the file, its config key and the config keys that size it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping

import torch

from minigpt4.common.checkpoint_files import CheckpointError

logger = logging.getLogger(__name__)


def describe_keys(keys: Iterable[str], limit: int = 12) -> str:
    """Short printable list of keys for log lines and errors."""
    keys = list(keys)
    shown = json.dumps(keys[:limit])
    return shown if len(keys) <= limit else f"{shown[:-1]}, ... ({len(keys)} in all)]"


def checked_copy(
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    where: str,
    part: str,
    hint: str,
    required: Iterable[str] | None = None,
) -> None:
    """Copy ``state`` into the tensors of ``target`` (a module's ``state_dict()``), strictly.

    Every key of ``required`` (default: all of ``target``) must be in ``state``, and every key of
    ``state`` must be in ``target`` with the same shape; otherwise one :class:`CheckpointError`
    lists what is missing, unknown and mis-shaped, naming ``where`` (file and config key),
    ``part`` (what was built) and ``hint`` (the config keys that size it). Values are cast to
    the target's dtype.
    """
    required = list(target if required is None else required)
    missing = [k for k in required if k not in state]
    unknown = [k for k in state if k not in target]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unknown or mismatched:
        details = [
            f"{label} {describe_keys(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unknown),
                ("mismatched shapes", mismatched),
            )
            if keys
        ]
        raise CheckpointError(
            f"{where} does not fit the {part} built from the config: {'; '.join(details)}; "
            f"check {hint}."
        )
    with torch.no_grad():
        for key, value in state.items():
            target[key].copy_(value)


def log_ignored(ignored: list[str], path: str, config_key: str) -> None:
    if ignored:
        logger.info(
            "Ignored %d key(s) of %s (%s): %s",
            len(ignored),
            path,
            config_key,
            describe_keys(ignored),
        )

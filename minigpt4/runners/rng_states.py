"""Every RNG a training step draws from, as tensors and plain types.

An exact resume needs the Python, numpy, torch (and CUDA) generators where the interrupted run
left them. A checkpoint is read with ``weights_only=True``, which refuses numpy arrays and
arbitrary tuples, so the states are converted to tensors and plain values here and back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def _python_rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    return {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss}


def _set_python_rng_state(saved: dict[str, Any]) -> None:
    random.setstate((saved["version"], tuple(saved["state"].tolist()), saved["gauss"]))


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(saved: dict[str, Any]) -> None:
    np.random.set_state(
        (
            saved["name"],
            saved["keys"].numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )


def rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (safe for ``weights_only``)."""
    states = {
        "python": _python_rng_state(),
        "numpy": _numpy_rng_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    _set_python_rng_state(states["python"])
    _set_numpy_rng_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])

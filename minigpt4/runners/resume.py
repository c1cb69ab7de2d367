"""Where a run resumes, and the checks ``train.py`` makes before anything heavy is loaded.

A checkpoint written by this runner says where to continue in ``train_state`` (``next_epoch``,
``next_iter``); one written by the original only has ``epoch``, the epoch it finished. A
checkpoint whose next epoch is ``run.max_epoch`` or later belongs to a finished run: resuming
from it is an error (non-zero exit) rather than a run that trains nothing and says nothing.
"""

from __future__ import annotations

from typing import Any

from minigpt4.common.checkpoint_files import CheckpointError, read_checkpoint
from minigpt4.common.run_config import RunConfig
from minigpt4.common.utils import resolve_path

RESUME_KEY = "run.resume_ckpt_path"
# What a checkpoint must hold to resume from (the original's keys; ours add more).
RESUME_REQUIRED = ("model", "optimizer", "epoch")


class FinishedRunError(ValueError):
    """The checkpoint to resume from is the end of a run: nothing is left to train."""


def resume_position(checkpoint: dict[str, Any], path: str) -> tuple[int, int]:
    """(epoch, iteration) at which training continues after ``checkpoint``; a position that
    is no position (negative, not a number) is a CheckpointError."""
    train_state = checkpoint.get("train_state")
    if train_state is None:  # a checkpoint written by the original
        position = (checkpoint.get("epoch"), -1)
    elif isinstance(train_state, dict):
        position = (train_state.get("next_epoch"), train_state.get("next_iter"))
    else:
        position = (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in position) or min(
        position
    ) < (0 if train_state is not None else -1):
        raise CheckpointError(
            f"{RESUME_KEY}: {path}: its position (epoch, train_state) is not one: "
            f"{position}; it was not written by this runner or the original"
        )
    if train_state is None:
        return position[0] + 1, 0
    return position


def resume_line(checkpoint: dict[str, Any], epoch: int, iteration: int) -> str:
    """The log line that says where training continues and what the checkpoint restored."""
    if checkpoint.get("train_state") is None:
        return (
            f"Resuming at epoch {epoch} from a checkpoint in the original's layout (saved after "
            f"epoch {epoch - 1}, no train_state): its weights and optimizer state are restored "
            "(and its grad scaler where this run has one); the lr follows the schedule from this "
            "epoch"
        )
    return f"Resuming at epoch {epoch}, iteration {iteration}"


def check_not_finished(path: str, next_epoch: int, max_epoch: int) -> None:
    if next_epoch < max_epoch:
        return
    raise FinishedRunError(
        f"{RESUME_KEY}: {path} ends a finished run: it completed epoch {next_epoch - 1} and "
        f"run.max_epoch is {max_epoch} (epochs 0..{max_epoch - 1}), so nothing is left to "
        "train. Raise run.max_epoch to train further, or remove run.resume_ckpt_path to start "
        "a new run."
    )


def preflight_resume(run: RunConfig) -> None:
    """Fail now, not after the model has loaded, if ``run.resume_ckpt_path`` cannot be used."""
    if not run.resume_ckpt_path:
        return
    path = resolve_path(run.resume_ckpt_path)
    checkpoint = read_checkpoint(path, RESUME_KEY, RESUME_REQUIRED)
    next_epoch, _ = resume_position(checkpoint, path)
    check_not_finished(path, next_epoch, run.max_epoch)

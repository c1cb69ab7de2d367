"""What is checked at every optimizer step: that the step is finite, and whether to stop now.

- **Non-finite steps.** A NaN or infinite loss (or, without fp16 loss scaling, gradient) on any
  rank makes the step skipped on every rank (the optimizer is not stepped, gradients are
  dropped); after ``run.nonfinite_patience`` such steps (0: the first) training stops with an
  error naming where, and nothing non-finite is ever saved. Before, ``run.init_lr=1e30`` or a
  resumed NaN ``llama_proj`` trained on NaN, saved a NaN checkpoint and exited 0. (With fp16
  loss scaling, overflowing gradients are the scaler's business: it skips and rescales.)
- **Pre-emption.** SIGTERM (what schedulers and ``kill`` send) or SIGUSR1 (what SLURM sends
  before a time limit with ``--signal``) during training is noted, not obeyed at once: at the
  end of the current optimizer step every rank saves ``checkpoint_latest.pth`` together, the
  run logs it and stops with an error (non-zero exit). Resuming from it continues exactly.

Both flags of a step travel in one small all-reduce, so every rank takes the same decision.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class NonFiniteLossError(RuntimeError):
    """Training stopped: the loss or the gradients were not finite."""


class PreemptedError(RuntimeError):
    """Training stopped on a pre-emption signal, after saving ``checkpoint_latest.pth``."""


@dataclass(frozen=True)
class Verdict:
    finite: bool  # on every rank
    signal: int | None  # a pre-emption signal some rank received


class StepGuard:
    """Collects one step's flags and decides with the other ranks (see the module docstring)."""

    def __init__(self, strategy: object, patience: int) -> None:
        self.strategy = strategy
        self.patience = patience
        self.skipped = 0
        self.received: int | None = None
        self._bad = False
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPTION_SIGNALS:
                signal.signal(sig, self._note_signal)

    def _note_signal(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
            logger.warning(
                "%s received: stopping after this step with a checkpoint",
                signal.Signals(signum).name,
            )

    def note(self, loss: torch.Tensor) -> None:
        """After each backward: whether this rank's loss was finite."""
        self._bad |= not bool(torch.isfinite(loss.detach()).all())

    def verdict(self, trainable: Iterable[torch.nn.Parameter], scaled: bool) -> Verdict:
        """At an optimizer step, agreed by every rank; raises past ``patience`` bad steps."""
        if not scaled:  # scaled fp16 gradients may overflow: the scaler deals with those
            self._bad |= any(
                p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in trainable
            )
        bad, sig = self.strategy.reduce_max([int(self._bad), self.received or 0])
        self._bad = False
        return Verdict(finite=not bad, signal=sig or None)

    def count_skipped(self, epoch: int, i: int, lr: float) -> None:
        """A non-finite step was skipped; stop once more than ``patience`` were."""
        self.skipped += 1
        where = f"epoch {epoch}, iteration {i} (lr {lr:.3g})"
        if self.skipped > self.patience:
            raise NonFiniteLossError(
                f"the loss or its gradients are not finite at {where}: training stops, nothing "
                f"of this step is saved. Lower run.init_lr, check the resumed checkpoint, or "
                f"allow a few such steps to be skipped with run.nonfinite_patience "
                f"(now {self.patience})"
            )
        logger.warning(
            "non-finite loss or gradients at %s: step skipped (%d of %d allowed)",
            where,
            self.skipped,
            self.patience,
        )

    def restore_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPTION_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)

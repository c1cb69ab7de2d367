"""What every command does around its ``main``: errors as messages, and a CPU thread count.

Errors: an error the project raised itself on purpose (a wrong config value, a missing weight
file, a finished run, a bad input file: its message says what to do) is printed as
``prog: message`` and the command exits 1, without a traceback; ``--debug`` (anywhere on the
command line) or ``MINIGPT4_DEBUG=1`` shows the traceback too. Anything else, a bug or a
library's own failure, keeps its traceback.

Threads: with ``OMP_NUM_THREADS`` unset, torch uses every core, which for a small model costs
more in coordination than it gains (the tiny model answers ~12x slower on 2 cores than on one,
measured on a 2-core machine); a model is given one thread below :data:`SMALL_MODEL_PARAMS`
parameters and every core the process may use otherwise, said once.
"""

from __future__ import annotations

import dis
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEBUG_FLAG = "--debug"
DEBUG_ENV = "MINIGPT4_DEBUG"
SMALL_MODEL_PARAMS = 200_000_000
# Where the project's own code lives: an error raised there is one of its messages.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_MESSAGE_ERRORS = (ValueError, OSError, RuntimeError, KeyError, MemoryError)


def raised_by_project(exc: BaseException) -> bool:
    """Whether ``exc`` came from a ``raise`` statement in the project's code: not from a
    library's Python code, nor from a C function called by ours (``a @ b`` on tensors that do
    not fit fails inside our frame, but at a call, not at a ``raise``)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    path = Path(code.co_filename).resolve()
    ours = _PROJECT_ROOT in path.parents and ".venv" not in path.parts
    return ours and dis.opname[code.co_code[tb.tb_lasti]] == "RAISE_VARARGS"


def run_command(main: Callable[..., Any], prog: str) -> None:
    """Run ``main()`` as the command ``prog`` (see the module docstring)."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or DEBUG_FLAG in sys.argv
    if DEBUG_FLAG in sys.argv:
        sys.argv.remove(DEBUG_FLAG)
    try:
        main()
    except _MESSAGE_ERRORS as exc:
        if debug or not raised_by_project(exc):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{prog}: {message}", file=sys.stderr)
        print(f"({prog}: run with {DEBUG_FLAG} for the traceback)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        traceback.print_exc(limit=0)
        sys.exit(130)


def choose_threads(param_count: int) -> None:
    """Set torch's CPU threads for a model of ``param_count`` parameters unless the user chose
    (``OMP_NUM_THREADS``); says what it chose once."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    small = param_count < SMALL_MODEL_PARAMS
    threads = 1 if small else max(1, cores or 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    why = "a small model: more threads only add overhead" if small else "every core available"
    logger.info("CPU threads: %d (%s; set OMP_NUM_THREADS to choose)", threads, why)

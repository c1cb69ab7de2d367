"""Writing a file so that a reader finds the old content or the new one, never half of one.

Every file the project writes (checkpoints, configs, results, converted datasets, exported
weights) goes through :func:`atomic_write`: the content goes to ``<path>.tmp.<pid>`` beside the
target, which is then renamed over it (``os.replace`` is atomic within a file system). A crash
or ``kill -9`` can leave only that temporary file; :func:`remove_stale_temp_files` recognises
the one name convention and deletes those whose writer no longer runs (the runner calls it at
start). Standard library only, so data-preparation scripts load it without torch.

Two kinds of file are not temporaries and keep their own names: the ``<out>.partial`` answer
files of ``minigpt4/inference.py`` and ``minigpt4/evaluate.py`` are results so far, kept after a
failure to inspect or resume from (the cleaner must never delete them) and renamed when
complete; and ``dataset/convert_captions.py``, a standalone script users copy, writes the same
``<path>.tmp.<pid>`` name without importing this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator

logger = logging.getLogger(__name__)

TMP_MARKER = ".tmp."
_TMP_NAME = re.compile(r"^(?P<target>.+)\.tmp\.(?P<pid>\d+)$")


def temp_path(path: str | os.PathLike) -> str:
    """Where :func:`atomic_write` writes ``path`` before renaming it."""
    return f"{os.fspath(path)}{TMP_MARKER}{os.getpid()}"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; when the block ends without an
    error it replaces ``path``, and it is removed either way."""
    target = os.fspath(path)
    tmp = temp_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_write_files(folder: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder beside ``folder`` for files written by a library that saves a
    whole folder (``save_pretrained``). When the block ends without an error, each file moves
    into ``folder`` by an atomic rename (files it did not write stay); the temporary folder is
    removed either way."""
    target = os.fspath(folder)
    tmp = temp_path(target)
    os.makedirs(tmp)
    try:
        yield tmp
        os.makedirs(target, exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(target, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has not started writing: a file of its pid is older
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temp_files(folders: Iterable[str]) -> list[str]:
    """Delete ``*.tmp.<pid>`` files (and folders) in ``folders`` whose process is gone; returns
    their paths.

    A file whose process still runs is kept: it may be a save in progress of another run
    writing into the same output folder.
    """
    removed = []
    for folder in dict.fromkeys(folders):  # each once, in order
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            match = _TMP_NAME.match(name)
            path = os.path.join(folder, name)
            if match is None or _process_runs(int(match["pid"])):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(path)
            logger.warning(
                "Removed %s: a temporary file left by process %s, which was killed while "
                "writing %s (that file itself is intact)",
                path,
                match["pid"],
                match["target"],
            )
    return removed

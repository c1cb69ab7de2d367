"""Result files a command writes (``--out``): checked before any work, held by one run at a time.

- :func:`check_output_path`: ``--out`` must be a regular file or not exist yet: a folder, a
  device node, a FIFO or a socket is refused before the model loads (before, a device node was
  replaced by a regular file, and a folder failed only after every answer).
- :class:`OutputLock`: a run holds ``<out>.lock`` (``flock``) while it writes ``out`` and its
  ``.partial`` file; a second run with the same ``--out`` stops at once, naming the first one's
  process, instead of both writing one file (before: run A said "Wrote 4 answers" and the file
  held run B's). The lock is released by the kernel when a run dies, so a killed run never
  leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISSOCK: "a socket",
}
LOCK_SUFFIX = ".lock"


def file_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("a folder", "a named pipe
    (FIFO)", ...); None for a regular file or nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in KINDS.items() if test(mode)), None)


class OutputError(ValueError):
    """An ``--out`` that cannot be used; the message says why and what to do."""


def check_output_path(
    path: str | os.PathLike, key: str = "--out", example: str = "results.json"
) -> Path:
    """``path`` if a regular file can be written there; its folder is created. ``example``:
    a file name to suggest inside a folder given by mistake."""
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            mode = os.stat(candidate).st_mode  # follows links: what would be written
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there yet (a parent that is a file is reported below)
        except OSError as err:
            raise OutputError(f"{key} {path}: cannot be checked ({err.strerror})") from None
        if candidate == path:
            kind = next((name for test, name in KINDS.items() if test(mode)), None)
            if kind is not None:
                suggestion = path / example if kind == "a folder" else example
                raise OutputError(f"{key} {path}: is {kind}, not a file; e.g. {suggestion}")
        elif not stat.S_ISDIR(mode):
            raise OutputError(f"{key} {path}: {candidate} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{key} {path}: cannot create its folder ({err.strerror})") from None
    return path


class OutputLock:
    """Held while a run writes ``out`` (see the module docstring); use as a context manager."""

    def __init__(self, out: str | os.PathLike, key: str = "--out") -> None:
        self.out, self.key = Path(out), key
        self.path = self.out.with_name(self.out.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputError(
                    f"{self.key} {self.out}: another run (process {holder}) is writing it; "
                    "wait for it to finish, or choose another path"
                ) from None
            if self._same_file(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                self._fd = fd
            else:  # the holder removed the file as it finished: take the new one
                os.close(fd)
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # still locked: no one else holds this file
            os.close(self._fd)
            self._fd = None

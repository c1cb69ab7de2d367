"""The append-only record of answered items that makes a run resumable.

``<out>.partial`` is JSON lines: first a header (what was run: benchmark, config, settings,
data), then one ``{"id", "prediction"}`` line per answered item, flushed and synced batch by
batch. A killed run leaves at most a torn last line, which is ignored; a rerun with the same
header asks only the items not in the file. A header that differs is an error rather than a
silent mix of two runs' answers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SUFFIX = ".partial"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + SUFFIX)


class AnswerLog:
    """Answers recorded so far for one run; ``add`` appends them durably."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = json.loads(json.dumps(header))  # as it reads back from the file
        self.answers: dict[str, str] = {}
        if path.exists() and path.stat().st_size > 0:
            self._read()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append([{"header": self.header}])

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])["header"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if header != self.header:
            diff = sorted(
                k
                for k in set(self.header) | set(header or {})
                if (header or {}).get(k) != self.header.get(k)
            )
            raise ValueError(
                f"{self.path} holds answers of a different run (differs in: "
                f"{', '.join(diff) or 'header'}); delete it to start over, or choose another --out"
            )
        for number, line in enumerate(lines[1:], 2):
            try:
                record = json.loads(line)
                self.answers[str(record["id"])] = str(record["prediction"])
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning(
                    "%s:%d: unreadable line ignored (a run killed mid-write)", self.path, number
                )
        logger.info("Resuming: %d answers already in %s", len(self.answers), self.path)

    def _append(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() and not self._ends_with_newline():
                f.write("\n")  # after a torn line: start a fresh one
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def add(self, ids: list[str], predictions: list[str]) -> None:
        self._append({"id": i, "prediction": p} for i, p in zip(ids, predictions, strict=True))
        self.answers.update(zip(ids, predictions))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

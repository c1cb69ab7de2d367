"""Benchmark records from JSON and JSON-lines files, with errors that name the file, the record
and the key (the MiniGPT-v2 benchmarks' readers share these)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minigpt4.evaluation.items import read_text


def load_json(path: Path) -> Any:
    """The parsed JSON file ``path``; a clear error for a missing or broken one."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def load_json_lines(path: Path) -> list[Any]:
    """The records of a JSON-lines file (blank lines skipped)."""
    records = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
    return records


def load_records(path: Path) -> list[Any]:
    """A list of records: a JSON array file, or a JSON-lines file (``.jsonl``)."""
    if path.suffix == ".jsonl":
        return load_json_lines(path)
    records = load_json(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    return records


def check_record(record: Any, keys: Sequence[str], where: str) -> dict[str, Any]:
    """``record`` if it is an object with every key of ``keys``; else an error at ``where``."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with {list(keys)}, got {record!r:.80}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{where}: missing {missing} (a record needs {list(keys)})")
    return record

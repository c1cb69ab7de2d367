#!/usr/bin/env python3
"""Convert a BLIP caption JSON (a list of {"url", "caption", ...} records) into img2dataset input.

This one file is the implementation behind ``convert_cc_sbu.py`` and ``convert_laion.py`` (both
are symbolic links to it; copying either with ``cp`` gives a complete, standalone script, as the
guide does). Run under one of those names with no arguments it behaves like the original scripts:
it reads ``ccs_synthetic_filtered_large.json`` (resp. ``laion_synthetic_filtered_large.json``) from
the current folder and writes the ``.tsv`` next to it.

    python convert_laion.py [INPUT.json] [OUTPUT.tsv|OUTPUT.parquet] [--limit N] [--format F]

Output: a header row, then one row per record, tab-separated (Python's ``csv`` quoting), which
``img2dataset --input_format tsv --url_col url --caption_col caption`` reads; or a parquet file
(``--format parquet`` or an output ending in ``.parquet``; needs pyarrow). Columns are the first
record's keys in their order; later records are matched by key name (a missing key gives an empty
cell; keys the first record lacks are dropped and counted). Tabs and line breaks inside values
become spaces because img2dataset's TSV reader cannot read them.

The JSON is read incrementally, so ``--limit 1000`` (the guide's edit) stops after 1000 records
without loading the multi-gigabyte LAION file.

Needs only the standard library (plus pyarrow for parquet), so it runs with any Python >= 3.8.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import IO

# Script name -> (default input, default output): the original scripts' fixed file names.
DEFAULTS = {
    "convert_cc_sbu": ("ccs_synthetic_filtered_large.json", "ccs_synthetic_filtered_large.tsv"),
    "convert_laion": ("laion_synthetic_filtered_large.json", "laion_synthetic_filtered_large.tsv"),
}
REQUIRED_KEYS = ("url", "caption")
_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\r\n]*")
_EXPECTED = (
    "expected a JSON list of records with 'url' and 'caption' keys, like BLIP's "
    'laion_synthetic_filtered_large.json: [{"url": "https://...", "caption": "..."}, ...]'
)


class ConvertError(ValueError):
    """The input is not a JSON list of caption records; the message names the file and the fix."""


class _ListReader:
    """A JSON list's text, read in chunks, and the position of the next unread character."""

    def __init__(self, f: IO[str], path: str) -> None:
        self.f, self.path = f, path
        self.decoder = json.JSONDecoder()
        self.buf = f.read(_CHUNK)
        self.eof = len(self.buf) < _CHUNK
        self.pos = 1 if self.buf.startswith("\ufeff") else 0

    def fill(self) -> bool:
        """Read more input onto the unread part of the buffer; False at end of file."""
        if self.eof:
            return False
        more = self.f.read(_CHUNK)
        self.eof = len(more) < _CHUNK
        self.buf = self.buf[self.pos :] + more
        self.pos = 0
        return bool(more)

    def peek(self) -> str:
        """The next character that is not white space ("" at the end of the file)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.fill():
                break
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def open_list(self) -> bool:
        """Read the list's ``[``; False when the list is empty."""
        first = self.peek()
        if not first:
            raise ConvertError(f"{self.path}: the file is empty; {_EXPECTED}")
        if first != "[":
            start = self.buf[self.pos : self.pos + 20]
            kind = {"{": "a JSON object"}.get(first, f"text starting with {start!r}")
            raise ConvertError(f"{self.path}: the file holds {kind}, not a list; {_EXPECTED}")
        self.pos += 1
        return self.peek() != "]"

    def element(self, index: int) -> object:
        """The next element (element ``index`` of the list)."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                # Maybe the element runs past the buffer: read more and try again.
                if self.fill():
                    continue
                raise ConvertError(
                    f"{self.path}: invalid JSON in element {index}: {err.msg}; {_EXPECTED}"
                ) from None
            # A number could continue in the next chunk; re-read with more input.
            if end == len(self.buf) and not self.eof and self.fill():
                continue
            self.pos = end
            return value

    def next_follows(self, index: int) -> bool:
        """After element ``index``: True at a ``,`` (read), False at the closing ``]``."""
        after = self.peek()
        if not after:
            raise ConvertError(f"{self.path}: the list is not closed with ']' (truncated file?)")
        if after == ",":
            self.pos += 1
            return True
        if after == "]":
            return False
        raise ConvertError(
            f"{self.path}: expected ',' or ']' after element {index}, found {after!r}"
        )


def iter_json_list(path: str) -> Iterator[object]:
    """Yield the elements of the JSON list in ``path`` one by one, reading it in chunks."""
    with open(path, encoding="utf-8") as f:
        reader = _ListReader(f, path)
        if not reader.open_list():
            return
        index = 0
        while True:
            yield reader.element(index)
            if not reader.next_follows(index):
                return
            index += 1


def _clean(value: object) -> str:
    """A cell for the TSV: strings as they are, other JSON values as JSON; no tabs or newlines."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False)
    if "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text


def _checked_record(path: str, index: int, record: object) -> dict:
    """``record`` (element ``index`` of ``path``) when it is a record with a usable url."""
    if not isinstance(record, dict):
        raise ConvertError(
            f"{path}: element {index} is {type(record).__name__} {str(record)[:60]!r}, "
            f"not a record (JSON object); {_EXPECTED}"
        )
    for key in REQUIRED_KEYS:
        if key not in record:
            raise ConvertError(
                f"{path}: record {index} has no {key!r} key (its keys: {sorted(record)}); "
                f"{_EXPECTED}"
            )
    if not isinstance(record["url"], str) or not record["url"].strip():
        raise ConvertError(
            f"{path}: record {index} has url {record['url']!r}; the url must be a non-empty string"
        )
    return record


def iter_rows(path: str, limit: int | None = None) -> tuple[list[str], Iterator[list[str]], dict]:
    """The header and an iterator of rows for the records in ``path``.

    The third value is a dict of counters filled while iterating: ``rows`` and
    ``dropped_keys`` (key -> how many records had it but the first record did not).
    """
    if limit is not None and limit < 1:
        raise ConvertError(f"--limit must be a positive number of records, got {limit}")
    records = iter_json_list(path)
    stats: dict = {"rows": 0, "dropped_keys": {}}

    try:
        first = _checked_record(path, 0, next(records))
    except StopIteration:
        raise ConvertError(f"{path}: the list is empty; {_EXPECTED}") from None
    header = list(first)
    known = set(header)

    def rows() -> Iterator[list[str]]:
        record = first
        index = 0
        while True:
            for key in record.keys() - known:
                stats["dropped_keys"][key] = stats["dropped_keys"].get(key, 0) + 1
            yield [_clean(record.get(key)) for key in header]
            stats["rows"] += 1
            index += 1
            if limit is not None and index >= limit:
                return
            try:
                record = _checked_record(path, index, next(records))
            except StopIteration:
                return

    return header, rows(), stats


def _write_tsv(header: list[str], rows: Iterator[list[str]], out: str) -> None:
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_parquet(header: list[str], rows: Iterator[list[str]], out: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConvertError(
            "parquet output needs pyarrow (pip install pyarrow); or write a .tsv instead"
        ) from None
    schema = pa.schema([(name, pa.string()) for name in header])
    batch: list[list[str]] = []
    with pq.ParquetWriter(out, schema) as writer:

        def flush() -> None:
            columns = list(zip(*batch)) if batch else [[] for _ in header]
            writer.write_table(
                pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=schema)
            )
            batch.clear()

        for row in rows:
            batch.append(row)
            if len(batch) >= 100_000:
                flush()
        flush()


def convert(
    input_path: str, output_path: str, limit: int | None = None, fmt: str | None = None
) -> dict:
    """Write ``output_path`` (tsv or parquet) from the caption JSON; returns counters.

    The output is written to a temporary file first, so a failed run leaves no partial file.
    """
    if fmt is None:
        fmt = "parquet" if output_path.endswith(".parquet") else "tsv"
    if fmt not in ("tsv", "parquet"):
        raise ConvertError(f"unknown output format {fmt!r}; use tsv or parquet")
    if not os.path.isfile(input_path):
        raise ConvertError(f"{input_path}: no such file; give the caption JSON to convert")
    header, rows, stats = iter_rows(input_path, limit)
    out_dir = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(out_dir, exist_ok=True)
    # The project's temporary name (minigpt4/common/atomic_write.py), written out here because
    # this script stands alone: a killed run's leftover is recognised and cleaned like others.
    tmp = f"{output_path}.tmp.{os.getpid()}"
    try:
        (_write_parquet if fmt == "parquet" else _write_tsv)(header, rows, tmp)
        os.replace(tmp, output_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    stats["columns"] = header
    stats["format"] = fmt
    return stats


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    prog = prog or os.path.basename(sys.argv[0])
    default_in, default_out = DEFAULTS.get(os.path.splitext(prog)[0], (None, None))
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert a caption JSON list of {url, caption} records into the TSV (or "
        "parquet) file that img2dataset reads.",
    )
    parser.add_argument(
        "input",
        nargs="?",
        default=default_in,
        help="caption JSON (a list of records)" + (f"; default {default_in}" if default_in else ""),
    )
    parser.add_argument(
        "output",
        nargs="?",
        default=None,
        help="output .tsv or .parquet; default: the input's name with the format's suffix",
    )
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N records")
    parser.add_argument(
        "--format",
        choices=("tsv", "parquet"),
        default=None,
        help="output format (default: from the output suffix, else tsv)",
    )
    args = parser.parse_args(argv)
    if args.input is None:
        parser.error("give the caption JSON to convert")
    output = args.output
    if output is None:
        fmt = args.format or "tsv"
        if default_out and args.input == default_in and fmt == "tsv":
            output = default_out
        else:
            stem = args.input[: -len(".json")] if args.input.endswith(".json") else args.input
            output = f"{stem}.{fmt}"
    try:
        stats = convert(args.input, output, limit=args.limit, fmt=args.format)
    except ConvertError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {stats['rows']} rows ({stats['format']}, columns: {', '.join(stats['columns'])}) "
        f"to {output}"
    )
    for key, n in sorted(stats["dropped_keys"].items()):
        print(f"note: key {key!r} (in {n} records) is not in the first record; dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

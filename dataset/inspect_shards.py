#!/usr/bin/env python3
"""Check a downloaded dataset: samples per shard, download failures, and a look at a few samples.

    python dataset/inspect_shards.py laion_dataset                    # a folder of shards
    python dataset/inspect_shards.py 'laion_dataset/{00000..00009}.tar'  # a brace pattern
    python dataset/inspect_shards.py cc_sbu_align                     # a cc_sbu_align folder
        [--show N] [--save DIR]

For webdataset shards (img2dataset's output) it prints, per shard, the samples in the tar, the
count/successes/failures from ``{shard}_stats.json`` and the rows of ``{shard}.parquet``, then the
failure reasons summed over all shards (img2dataset's ``status_dict``), then the first ``--show``
samples (key, image size, caption from the ``.json``, as the laion/cc_sbu datasets read it).
``--save DIR`` writes those samples' images and a ``captions.tsv`` to look at.
For a cc_sbu_align folder it checks that every annotation has its ``image/{image_id}.jpg``.

Exit status: 0 when everything read, 1 when a shard or file is missing, unreadable or
inconsistent (samples without an image or caption, tar count != successes in _stats.json).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a..b}`` numeric ranges (zero padding kept) and ``{x,y}`` lists, like webdataset."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    end = pattern.find("}", start)
    if end < 0:
        raise ValueError(f"unbalanced '{{' in {pattern!r}")
    body, head, tail = pattern[start + 1 : end], pattern[:start], pattern[end + 1 :]
    if ".." in body:
        lo, hi = body.split("..", 1)
        if not (lo.isdigit() and hi.isdigit()):
            raise ValueError(f"range {{{body}}} in {pattern!r} is not numeric")
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [f"{i:0{width}d}" for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [head + item + rest for item in items for rest in expand_braces(tail)]


@dataclass
class ShardReport:
    """What one shard holds and what img2dataset said about it."""

    tar: str
    samples: int = 0
    incomplete: list[str] = field(default_factory=list)  # keys lacking jpg or json
    stats: dict | None = None
    parquet_rows: int | None = None
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        out = []
        if self.error:
            out.append(self.error)
        if self.incomplete:
            out.append(
                f"{len(self.incomplete)} samples without .jpg or .json: {self.incomplete[:5]}"
            )
        if self.stats is not None and self.error is None:
            if self.stats.get("successes") != self.samples:
                out.append(
                    f"tar holds {self.samples} samples but _stats.json says "
                    f"{self.stats.get('successes')} successes"
                )
        return out


def _sidecar(tar_path: str, suffix: str) -> str:
    return tar_path[: -len(".tar")] + suffix


def read_shard(tar_path: str, want: int = 0) -> tuple[ShardReport, list[dict]]:
    """Count the samples of one shard; return up to ``want`` samples as dicts of raw file bytes."""
    report = ShardReport(tar=tar_path)
    groups: dict[str, dict[str, bytes | None]] = {}
    order: list[str] = []
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                key, dot, ext = base.partition(".")
                if not dot:
                    continue
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                # Read every file (a truncated tar fails here), keep only those shown.
                data = tar.extractfile(member).read()
                groups[key][ext] = data if len(order) <= want else None
    except (OSError, tarfile.TarError) as err:
        report.error = f"cannot read {tar_path}: {err}"
    report.samples = sum(1 for g in groups.values() if "jpg" in g and "json" in g)
    report.incomplete = [k for k in order if not ("jpg" in groups[k] and "json" in groups[k])]
    stats_path = _sidecar(tar_path, "_stats.json")
    if os.path.exists(stats_path):
        with open(stats_path, encoding="utf-8") as f:
            report.stats = json.load(f)
    parquet_path = _sidecar(tar_path, ".parquet")
    if os.path.exists(parquet_path):
        try:
            import pyarrow.parquet as pq

            report.parquet_rows = pq.ParquetFile(parquet_path).metadata.num_rows
        except ImportError:
            pass
    samples = [{"__key__": k, **groups[k]} for k in order[:want]]
    return report, samples


def find_shards(target: str) -> list[str]:
    """The tar files of a folder (sorted) or of a brace pattern / single path."""
    if os.path.isdir(target):
        return sorted(glob.glob(os.path.join(target, "*.tar")))
    return expand_braces(target)


def brace_pattern(tars: list[str]) -> str | None:
    """``DIR/{first..last}.tar`` for numbered shards in one folder (the dataset YAMLs' storage)."""
    if not tars:
        return None
    folders = {os.path.dirname(t) for t in tars}
    stems = sorted(os.path.basename(t)[: -len(".tar")] for t in tars)
    if len(folders) != 1 or not all(s.isdigit() and len(s) == len(stems[0]) for s in stems):
        return None
    folder = os.path.abspath(folders.pop())
    if len(stems) == 1:
        return os.path.join(folder, stems[0] + ".tar")
    return os.path.join(folder, f"{{{stems[0]}..{stems[-1]}}}.tar")


def failure_summary(reports: list[ShardReport]) -> Counter:
    """img2dataset's status_dict summed over the shards, without the successes."""
    total: Counter = Counter()
    for r in reports:
        if r.stats:
            total.update(r.stats.get("status_dict", {}))
    total.pop("success", None)
    return total


def inspect_align(folder: str, show: int) -> int:
    path = os.path.join(folder, "filter_cap.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        print(f"{path}: expected {{'annotations': [...]}}")
        return 1
    missing = [
        a.get("image_id")
        for a in annotations
        if not os.path.isfile(os.path.join(folder, "image", f"{a.get('image_id')}.jpg"))
    ]
    print(f"{path}: {len(annotations)} annotations, {len(missing)} without an image")
    if missing:
        print(f"  missing images for image_id: {missing[:10]}")
    for a in annotations[:show]:
        img_path = os.path.join(folder, "image", f"{a['image_id']}.jpg")
        size = Image.open(img_path).size if os.path.isfile(img_path) else "missing"
        print(f"  {a['image_id']}.jpg {size}: {a['caption']}")
    return 1 if missing else 0


def print_summary(reports: list[ShardReport]) -> None:
    """Totals, the storage pattern for the dataset config, and the download failures."""
    total = sum(r.samples for r in reports)
    counted = sum(r.stats.get("count", 0) for r in reports if r.stats)
    print(f"\n{len(reports)} shards, {total} samples", end="")
    print(f" of {counted} URLs ({total / counted:.1%} downloaded)" if counted else "")
    pattern = brace_pattern([r.tar for r in reports if r.error is None])
    if pattern:
        gaps = len(expand_braces(pattern)) - len([r for r in reports if r.error is None])
        note = f" ({gaps} numbers in the range have no shard)" if gaps else ""
        print(f"storage pattern for the dataset config: {pattern}{note}")
    failures = failure_summary(reports)
    if failures:
        print("failures (from _stats.json):")
        for reason, n in failures.most_common():
            print(f"  {n:>7}  {reason}")


def show_samples(shown: list[dict], save: str | None) -> None:
    """Print each sample (key, image size, url, caption); with ``save``, write their images
    and a ``captions.tsv`` there."""
    if shown:
        print(f"\nfirst {len(shown)} samples:")
    save_lines = []
    for sample in shown:
        key = sample["__key__"]
        meta = json.loads(sample["json"]) if sample.get("json") else {}
        img = Image.open(io.BytesIO(sample["jpg"])) if sample.get("jpg") else None
        size = f"{img.size[0]}x{img.size[1]}" if img else "no image"
        print(f"  {key} {size} {meta.get('url', '')}\n      {meta.get('caption')!r}")
        if save and img is not None:
            os.makedirs(save, exist_ok=True)
            with open(os.path.join(save, f"{key}.jpg"), "wb") as f:
                f.write(sample["jpg"])
            save_lines.append(f"{key}.jpg\t{meta.get('caption', '')}")
    if save and save_lines:
        with open(os.path.join(save, "captions.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(save_lines) + "\n")
        print(f"saved {len(save_lines)} samples to {save}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Count samples per shard, show download failures, open a few samples."
    )
    parser.add_argument("target", help="shard folder, brace pattern, or cc_sbu_align folder")
    parser.add_argument("--show", type=int, default=3, help="samples to print (default 3)")
    parser.add_argument("--save", help="write the shown samples' images and captions here")
    args = parser.parse_args(argv)

    if os.path.isfile(os.path.join(args.target, "filter_cap.json")):
        return inspect_align(args.target, args.show)
    shards = find_shards(args.target)
    if not shards:
        print(f"no .tar shards found in {args.target}")
        return 1

    reports: list[ShardReport] = []
    shown: list[dict] = []
    print(f"{'shard':<28} {'samples':>8} {'count':>8} {'success':>8} {'failed':>8} {'parquet':>8}")
    for path in shards:
        if not os.path.exists(path):
            reports.append(ShardReport(tar=path, error=f"{path} does not exist"))
            print(f"{os.path.basename(path):<28} missing")
            continue
        report, samples = read_shard(path, want=max(0, args.show - len(shown)))
        reports.append(report)
        shown.extend(samples)
        st = report.stats or {}
        failed = (st.get("failed_to_download", 0) + st.get("failed_to_resize", 0)) if st else "-"
        print(
            f"{os.path.basename(path):<28} {report.samples:>8} {st.get('count', '-'):>8} "
            f"{st.get('successes', '-'):>8} {failed:>8} "
            f"{'-' if report.parquet_rows is None else report.parquet_rows:>8}"
        )

    print_summary(reports)
    show_samples(shown, args.save)
    problems = [(r.tar, p) for r in reports for p in r.problems]
    for tar, problem in problems:
        print(f"PROBLEM {os.path.basename(tar)}: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

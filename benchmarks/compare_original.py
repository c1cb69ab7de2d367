"""Side by side with the original MiniGPT-4: the same operations of this project and of one or
more original checkouts, each in its own Python environment, on the same tiny weights.

python benchmarks/compare_original.py --original ORIG --original-python VENV/bin/python
python benchmarks/compare_original.py --original V1 --original HEAD --original-python PY --threads 2

Each side runs in its own subprocess (``compare_worker.py`` under that side's interpreter, its
checkout first on ``sys.path``), built the way its demo builds a chat (``Config`` + registry +
``from_config`` from its own ``eval_configs/minigpt4_eval.yaml``, fp32 on the CPU) from the tiny
reference weights in the original's file formats (``tests/fixtures/reference/tiny``). Then:

- in-process operations, one call at a time, the sides taking turns (A B C, then C B A, ...):
  ``encode_img`` of 2 images; a training step (forward + backward + AdamW of ``llama_proj``
  on 2 images and captions); a chat answer (upload an image, ask, ``Chat.answer``: 32 greedy
  tokens at most); a greedy generation of exactly 32 tokens on the chat's context (the
  original's ``llama_model.generate``, this project's ``generate_from_embeddings``: what each
  side's answers run);
- whole processes, taking turns the same way: ``python -c "import minigpt4"``; a fresh
  process that imports what the demo imports (``Config``, ``registry``, ``Chat``) then builds
  and loads the model: its import time, its build + load time and its wall time; and each
  side's own ``train.py`` with its stage-2 config: ``--train-iters`` iterations of batch 2 on
  a small generated cc_sbu_align-style data set, then its checkpoint.

It prints the medians and each original's ratio (project time / original time: below 1 the
project is faster) beside the targets, this project's in-process times beside their share of
their bound on this machine (``of bound``: ``compare_worker.py`` counts each operation's work once
and measures the roofline at the tiny model's shapes; whole processes have none), with the
machine named as ``roofline.py`` names it and the load average of the machine while it ran (other
processes share the cores: interleaving spreads their effect over every side alike; medians of
many repeats damp it).

The original's environment (Python 3.11; the versions the original pins that still install
there: HEAD's transformers 4.30.0, peft 0.2.0, accelerate 0.20.3, timm 0.6.13, tokenizers
0.13.2; torch as this project's; setuptools < 81 for accelerate's ``pkg_resources``), and
checkouts of HEAD and of v1 (03e1868: the last commit before MiniGPT-v2 landed, October 2023)::

    git clone https://github.com/Vision-CAIR/MiniGPT-4 orig-head
    git -C orig-head worktree add ../orig-v1 03e1868
    python3.11 -m venv venv-orig
    venv-orig/bin/pip install torch==2.14.1 torchvision==0.29.1
    venv-orig/bin/pip install transformers==4.30.0 tokenizers==0.13.2 peft==0.2.0 \\
        accelerate==0.20.3 timm==0.6.13 huggingface-hub==0.18.0 omegaconf==2.3.0 \\
        iopath==0.1.10 webdataset==0.2.48 pyyaml==6.0.1 regex==2022.10.31 tqdm==4.64.1 \\
        matplotlib==3.7.0 psutil==5.9.4 opencv-python==4.7.0.72 decord==0.6.0 \\
        sentencepiece "numpy<2" "setuptools<81" scikit-image visual-genome wandb nltk pandas scipy

What the original needs to run on the tiny weights on a CPU is in ``compare_worker.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "compare_worker.py")
DEFAULT_WEIGHTS = os.path.join(REPO, "tests", "fixtures", "reference", "tiny")
PROJECT = "project"
sys.path[:0] = [HERE]

import roofline  # noqa: E402
from compare_worker import OPS, RESULT_PREFIX, write_align_data  # noqa: E402

# Files every original checkout has and this project does not (its models/model_config.py).
ORIGINAL_FILES = ("train.py", "minigpt4/models/eva_vit.py", "eval_configs/minigpt4_eval.yaml")
PROJECT_ONLY_FILE = "minigpt4/models/model_config.py"
# Row names, in the printed order, and the targets: project time <= target x the original's.
ROWS = {
    "encode": "encode_img (2 images)",
    "train_step": "training step (batch 2)",
    "chat_answer": "chat answer (upload, ask, answer)",
    "generate": "greedy generation (32 tokens)",
    "import": "import (what the demo imports)",
    "build_load": "build + load (from_config)",
    "process_import": 'process: python -c "import minigpt4"',
    "process_startup": "process: import + build + load",
    "process_train": "process: train.py (stage 2, batch 2)",
}
TARGETS = {"train_step": 0.6, "generate": 0.7, "import": 0.7, "process_startup": 0.7}


class OriginalCheckoutError(ValueError):
    """--original names no checkout of the original MiniGPT-4."""


def check_original(path: str) -> str:
    """The checkout's label (``v1`` or ``HEAD`` and its commit where git knows it), or a clear
    error when ``path`` is not an original MiniGPT-4 checkout."""
    if not os.path.isdir(path):
        raise OriginalCheckoutError(f"--original {path}: no such folder")
    missing = [f for f in ORIGINAL_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise OriginalCheckoutError(
            f"--original {path}: not a checkout of the original MiniGPT-4 (no "
            f"{', '.join(missing)}); pass a clone of https://github.com/Vision-CAIR/MiniGPT-4"
        )
    if os.path.isfile(os.path.join(path, PROJECT_ONLY_FILE)):
        raise OriginalCheckoutError(
            f"--original {path}: this is this project ({PROJECT_ONLY_FILE}), not the original; "
            "pass a clone of https://github.com/Vision-CAIR/MiniGPT-4"
        )
    has_v2 = os.path.isfile(os.path.join(path, "minigpt4", "models", "minigpt_v2.py"))
    label = "HEAD" if has_v2 else "v1"
    commit = git_commit(path)
    return f"{label} {commit}" if commit else label


def git_commit(path: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def check_python(path: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise OriginalCheckoutError(
            f"--original-python {path}: not an executable; pass the python of the original's "
            "environment (how to make it: python benchmarks/compare_original.py --help)"
        )


# --- the numbers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    project: float  # median seconds
    originals: tuple[float, ...]  # median seconds of each original, in --original order
    repeats: int

    def ratios(self) -> tuple[float, ...]:
        return tuple(self.project / o for o in self.originals)


def summarize(samples: dict[str, dict[str, list[float]]], originals: list[str]) -> list[Row]:
    """Median seconds per operation and side (``samples[op][side]``), in ROWS order; an
    operation measured on only some sides is left out."""
    rows = []
    for key in ROWS:
        by_side = samples.get(key, {})
        sides = [PROJECT, *originals]
        if not all(by_side.get(side) for side in sides):
            continue
        medians = [statistics.median(by_side[side]) for side in sides]
        repeats = min(len(by_side[side]) for side in sides)
        rows.append(Row(key, medians[0], tuple(medians[1:]), repeats))
    return rows


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def target_verdict(key: str, ratio: float) -> str:
    target = TARGETS.get(key)
    if target is None:
        return ""
    return f"<= {target}x: {'met' if ratio <= target else 'missed'}"


def format_table(rows: list[Row], originals: list[str], bounds: dict[str, float]) -> str:
    """Markdown: per operation the medians, the project's share of its bound (``bounds``: least
    seconds per operation), each original's ratio and the target's verdict (against the first
    original)."""
    head = ["operation", "n", PROJECT, "of bound"]
    for name in originals:
        head += [f"original {name}", f"ratio vs {name}"]
    head.append("target")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        share = roofline.percent_of_bound(row.project, bounds.get(row.key))
        cells = [ROWS[row.key], str(row.repeats), format_seconds(row.project),
                 roofline.format_percent(share)]  # fmt: skip
        for seconds, ratio in zip(row.originals, row.ratios()):
            cells += [format_seconds(seconds), f"{ratio:.2f}"]
        cells.append(target_verdict(row.key, row.ratios()[0]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- running the sides -----------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str  # "project" or an original's label
    python: str
    repo: str


def worker_command(side: Side, weights: str, threads: int, *mode: str) -> list[str]:
    kind = "project" if side.name == PROJECT else "original"
    return [side.python, WORKER, "--side", kind, "--repo", side.repo, "--weights", weights,
            "--threads", str(threads), *mode]  # fmt: skip


def side_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # each side sees only its own checkout
    return env


def result_of(line: str) -> dict | None:
    return json.loads(line[len(RESULT_PREFIX) :]) if line.startswith(RESULT_PREFIX) else None


class Worker:
    """A side's long-lived worker: the model built once, one operation per request."""

    def __init__(self, side: Side, weights: str, threads: int):
        self.side = side
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(worker_command(side, weights, threads, "--serve"),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=side_env(threads))  # fmt: skip
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            result = result_of(line)
            if result is not None:
                if "error" in result:
                    raise RuntimeError(f"{self.side.name}: {result['error']}")
                return result
        self.log.seek(0)
        tail = "".join(self.log.readlines()[-15:])
        raise RuntimeError(f"{self.side.name}'s worker stopped:\n{tail}")

    def run(self, op: str) -> dict:
        self.proc.stdin.write(op + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def turns(sides: list, round_index: int) -> list:
    """Who goes first alternates, so that neither side always follows the other."""
    return sides if round_index % 2 == 0 else sides[::-1]


def measure_in_process(sides, weights, threads, repeats, samples, tokens) -> dict[str, dict]:
    workers = [Worker(side, weights, threads) for side in sides]
    try:
        for worker in workers:  # one untimed call each: first-call allocations, kernel choice
            for op in OPS:
                worker.run(op)
        bounds = workers[0].run("bounds")  # the project's side
        for r in range(repeats):
            for op in OPS:
                for worker in turns(workers, r):
                    result = worker.run(op)
                    samples.setdefault(op, {}).setdefault(worker.side.name, []).append(
                        result["seconds"]
                    )
                    tokens.setdefault(op, {})[worker.side.name] = result["tokens"]
    finally:
        for worker in workers:
            worker.close()
    return {w.side.name: w.info for w in workers}, bounds


def timed_process(command: list[str], threads: int, cwd: str) -> tuple[float, dict | None]:
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=side_env(threads), cwd=cwd)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        tail = "\n".join(out.stderr.splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n{tail}")
    results = [r for r in map(result_of, out.stdout.splitlines()) if r is not None]
    return wall, (results[-1] if results else None)


def measure_processes(sides, weights, threads, repeats, samples) -> None:
    def add(key, side, seconds):
        samples.setdefault(key, {}).setdefault(side.name, []).append(seconds)

    for r in range(repeats):
        for side in turns(sides, r):
            wall, _ = timed_process([side.python, "-c", "import minigpt4"], threads, side.repo)
            add("process_import", side, wall)
        for side in turns(sides, r):
            command = worker_command(side, weights, threads, "--op", "startup")
            wall, result = timed_process(command, threads, side.repo)
            add("process_startup", side, wall)
            add("import", side, result["import"])
            add("build_load", side, result["build_load"])


def measure_train_py(sides, weights, threads, repeats, iters, samples) -> None:
    """Each side's own train.py: ``iters`` stage-2 iterations of batch 2 and a checkpoint."""
    if repeats == 0:
        return
    with tempfile.TemporaryDirectory(prefix="compare-train-") as root:
        data = write_align_data(os.path.join(root, "align"), 2 * iters + 2)
        for r in range(repeats):
            for i, side in enumerate(turns(sides, r)):
                out = os.path.join(root, f"run{r}-{i}")
                command = worker_command(side, weights, threads, "--op", "train", "--data",
                                         data, "--iters", str(iters), "--out", out)  # fmt: skip
                wall, _ = timed_process(command, threads, side.repo)
                saved = [f for _, _, files in os.walk(out) for f in files if f.endswith(".pth")]
                if not saved:
                    raise RuntimeError(f"{side.name}: train.py wrote no checkpoint in {out}")
                samples.setdefault("process_train", {}).setdefault(side.name, []).append(wall)


def machine_line(threads: int) -> str:
    import torch

    torch.set_num_threads(threads)
    return roofline.this_machine().describe()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    parser.add_argument("--original", action="append", required=True, metavar="PATH",
                        help="an original MiniGPT-4 checkout (repeat for v1 and HEAD)")  # fmt: skip
    parser.add_argument("--original-python", required=True, metavar="PY",
                        help="the python of the original's environment")  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="this project's python")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="tiny v1 weights folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=31, help="of each in-process operation")
    parser.add_argument("--process-repeats", type=int, default=15, help="0: no whole processes")
    parser.add_argument("--train-repeats", type=int, default=5, help="train.py runs; 0: none")
    parser.add_argument("--train-iters", type=int, default=10, help="iterations per train.py")
    args = parser.parse_args(argv)
    try:
        args.labels = [check_original(os.path.abspath(p)) for p in args.original]
        check_python(args.original_python)
    except OriginalCheckoutError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sides = [Side(PROJECT, args.python, REPO)]
    sides += [Side(label, args.original_python, os.path.abspath(path))
              for label, path in zip(args.labels, args.original)]  # fmt: skip
    load_before = os.getloadavg()
    samples: dict[str, dict[str, list[float]]] = {}
    tokens: dict[str, dict[str, int]] = {}
    info, bounds = measure_in_process(sides, args.weights, args.threads, args.repeats, samples,
                                      tokens)  # fmt: skip
    measure_processes(sides, args.weights, args.threads, args.process_repeats, samples)
    measure_train_py(sides, args.weights, args.threads, args.train_repeats, args.train_iters,
                     samples)  # fmt: skip
    load_after = os.getloadavg()
    print(f"machine: {machine_line(args.threads)}")
    print(f"project's roofline (tiny model's shapes): {bounds['roofline']}")
    for side in sides:
        versions = info[side.name]
        print(f"{side.name}: {versions['from']} (torch {versions['torch']}, "
              f"transformers {versions['transformers']})")  # fmt: skip
    print(f"tokens generated: {json.dumps(tokens)}")
    if args.train_repeats:
        print(f"train.py: {args.train_iters} iterations of batch 2 on the CPU, then a checkpoint")
    print(f"load average (1 min) at start / end: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(format_table(summarize(samples, args.labels), args.labels, bounds["bounds"]))


if __name__ == "__main__":
    main()

"""Score a MiniGPT-4 checkpoint on a benchmark: MME, POPE, VQAv2, or MiniGPT-v2's RefCOCO/+/g,
OK-VQA, VizWiz, IconQA, GQA, VSR and Hateful Memes (docs/evaluation_v2.md).

    python -m minigpt4.evaluate --cfg-path eval_configs/minigpt4_eval.yaml --benchmark mme \\
        --data MME_Benchmark_release_version --out results/mme.json

Each question is asked in a fresh conversation (the demo's: upload, ask, answer; no history),
greedily unless ``--do-sample``, batched through the model's generation path. The answers are
scored as the benchmark's official script does; ``--out`` gets every item with its answer and
the scores, and a table is printed. A killed run continues where it stopped when started again
with the same arguments (answers so far are in ``<out>.partial``). See docs/evaluation.md for
the data layouts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from minigpt4.common.cli import run_command
from minigpt4.common.model_args import add_model_arguments
from minigpt4.evaluation.benchmarks import BENCHMARKS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt4.evaluate", description=__doc__.split("\n")[0]
    )
    add_model_arguments(parser, cfg_help="eval config (as for demo.py)")
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--data", required=True, help="the benchmark's folder (or POPE file)")
    parser.add_argument("--image-dir", help="where the images are, when not inside --data")
    parser.add_argument("--out", required=True, help="results JSON file")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per batch (8)")
    parser.add_argument(
        "--limit",
        type=int,
        help="only the first N images per MME category / N questions "
        "per POPE file / N VQA questions",
    )
    parser.add_argument(
        "--question-template",
        default="{question}",
        help="what is asked, with {question} for the benchmark's question (default: as is)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="answer length limit (default: the benchmark's: 64; 20 for the MiniGPT-v2 ones)",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="refcoco/refcoco+/refcocog: ask again when an answer is not a box (the original's)",
    )
    parser.add_argument("--max-length", type=int, default=2000)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds sampling and any weight the config leaves random (0)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if "{question}" not in args.question_template:
        parser.error("--question-template must contain {question}")
    bench = BENCHMARKS[args.benchmark]
    if args.resample and "resample" not in bench.flags:
        parser.error(f"--resample is for refcoco, refcoco+ and refcocog, not {args.benchmark}")
    if args.max_new_tokens is None:
        args.max_new_tokens = bench.max_new_tokens
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the command; returns the results written to ``--out``."""
    args = parse_args(argv)
    from minigpt4.evaluation.run import evaluate

    results = evaluate(args)
    print(BENCHMARKS[args.benchmark].table(results["scores"]))
    return results


if __name__ == "__main__":
    run_command(main, "python -m minigpt4.evaluate")

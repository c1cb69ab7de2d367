"""``python -m minigpt4.evaluate``: read the benchmark, ask the model, score, write results."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from minigpt4.common.atomic_write import atomic_write
from minigpt4.common.logger import setup_logger
from minigpt4.common.output_files import OutputLock, check_output_path
from minigpt4.conversation.loading import build_chat, load_config
from minigpt4.evaluation.ask import make_asker
from minigpt4.evaluation.benchmarks import BENCHMARKS, result_items
from minigpt4.evaluation.identity import model_identity
from minigpt4.evaluation.items import Item
from minigpt4.evaluation.resume import AnswerLog, partial_path
from minigpt4.evaluation.runner import answer_all

logger = logging.getLogger(__name__)


def generation_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy by default; sampling settings only with ``--do-sample``."""
    settings: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "max_length": args.max_length,
        "num_beams": args.num_beams,
        "do_sample": args.do_sample,
    }
    if args.do_sample:
        settings.update(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    return settings


def benchmark_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark's own options (``Benchmark.flags``) as given on the command line."""
    return {name: getattr(args, name) for name in BENCHMARKS[args.benchmark].flags}


def run_header(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """What decides the answers: a partial file is resumed only under the same header. The
    model is named by its content (:mod:`minigpt4.evaluation.identity`), not by paths."""
    identity = model_identity(cfg.model_cfg)
    flags = benchmark_flags(args)
    return {
        "benchmark": args.benchmark,
        **({"flags": flags} if flags else {}),  # only benchmarks with flags: old headers hold
        "model": identity["config"],
        "weights": identity["weights"],
        "data": args.data,
        "image_dir": args.image_dir,
        "limit": args.limit,
        "question_template": args.question_template,
        "generation": generation_settings(args),
        "batch_size": args.batch_size,
    }


class _LazyAsker:
    """Builds the model on the first question, so a finished run re-scores without it."""

    def __init__(self, args: argparse.Namespace, cfg: Any) -> None:
        self.args, self.cfg, self.ask = args, cfg, None

    def __call__(self, items: list[Item]) -> list[str]:
        if self.ask is None:
            # Seeded first: a config without a checkpoint (the untrained-projection baseline)
            # gets the same random llama_proj every run.
            torch.manual_seed(self.args.seed)
            chat = build_chat(self.cfg, self.args.device, self.args.gpu_id)
            ask, template = BENCHMARKS[self.args.benchmark].ask, self.args.question_template
            settings = generation_settings(self.args)
            if ask is None:
                self.ask = make_asker(chat, template, settings)
            else:
                self.ask = ask(chat, template, settings, benchmark_flags(self.args))
        return self.ask(items)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a temporary file beside ``path``, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run one benchmark; returns (and writes to ``args.out``) the results."""
    setup_logger()
    out = check_output_path(args.out)  # before anything is read or loaded
    check_output_path(partial_path(out))
    with OutputLock(out):
        return _evaluate(args, out)


def _evaluate(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    bench = BENCHMARKS[args.benchmark]
    image_dir = Path(args.image_dir) if args.image_dir else None
    items = bench.read(Path(args.data), image_dir, args.limit)
    logger.info("%s: %d questions from %s", bench.name, len(items), args.data)
    cfg = load_config(args.cfg_path, args.options)
    header = run_header(args, cfg)
    log = AnswerLog(partial_path(out), header)
    predictions = answer_all(
        items, _LazyAsker(args, cfg), log, args.batch_size, progress=not args.no_progress
    )
    flags = benchmark_flags(args)
    scores = bench.score(items, predictions, **flags)
    results = {
        "benchmark": bench.name,
        "config": header,
        "scores": scores,
        "items": result_items(bench, items, predictions, flags),
    }
    write_json(out, results)
    log.remove()
    logger.info("Results written to %s", out)
    return results

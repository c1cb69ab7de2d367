"""The benchmarks ``python -m minigpt4.evaluate`` knows: how each is read, asked, parsed, scored
and printed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minigpt4.evaluation import (
    mme,
    mme_data,
    pope,
    pope_data,
    refcoco,
    refcoco_data,
    tables,
    v2_vqa,
    v2_vqa_data,
    vqa,
    vqa_data,
)
from minigpt4.evaluation.items import Item
from minigpt4.evaluation.runner import Asker

DEFAULT_MAX_NEW_TOKENS = 64  # enough for the parsers, which read the first words only
V2_MAX_NEW_TOKENS = 20  # every benchmark of the original's minigptv2_benchmark_evaluation.yaml

# (chat, --question-template, generation settings, the benchmark's flags) -> Asker
AskerFactory = Callable[[Any, str, dict[str, Any], dict[str, Any]], Asker]


@dataclass(frozen=True)
class Benchmark:
    """``ask``: None asks each question in the demo's fresh conversation; ``flags``: the
    command-line options (``args`` attributes) that change its answers or scores, handed to
    ``ask``, ``score`` and ``fields`` as keywords; ``fields``: extra keys of a result item."""

    name: str
    read: Callable[[Path, Path | None, int | None], list[Item]]
    parse: Callable[[Item, str], Any]  # the "parsed" field of a result item
    score: Callable[..., dict[str, Any]]
    table: Callable[[dict[str, Any]], str]
    ask: AskerFactory | None = None
    flags: tuple[str, ...] = ()
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    fields: Callable[..., dict[str, Any]] | None = None


def _generate(chat: Any, template: str, settings: dict[str, Any], flags: dict) -> Asker:
    from minigpt4.evaluation import batch_ask  # torch: not for --help

    return batch_ask.generate_asker(chat, template, settings)


def _rank(chat: Any, template: str, settings: dict[str, Any], flags: dict) -> Asker:
    from minigpt4.evaluation import batch_ask  # torch: not for --help

    return batch_ask.ranking_asker(chat, template)


def _refer(chat: Any, template: str, settings: dict[str, Any], flags: dict) -> Asker:
    from minigpt4.evaluation import batch_ask  # torch: not for --help

    ask = batch_ask.generate_asker(chat, template, settings)
    return refcoco.resampling(ask) if flags["resample"] else ask


def _refcoco(name: str) -> Benchmark:
    return Benchmark(
        name,
        refcoco_data.reader(name),
        refcoco.predicted_box,
        refcoco.score,
        tables.accuracy_table,
        ask=_refer,
        flags=("resample",),
        max_new_tokens=V2_MAX_NEW_TOKENS,
        fields=refcoco.item_fields,
    )


def _v2(name: str, read, parse, score) -> Benchmark:
    ask = _rank if name == "iconvqa" else _generate
    return Benchmark(name, read, parse, score, tables.accuracy_table, ask, (), V2_MAX_NEW_TOKENS)


BENCHMARKS: dict[str, Benchmark] = {
    "mme": Benchmark(
        "mme", mme_data.read_mme, lambda _, p: mme.parse_answer(p), mme.score, tables.mme_table
    ),
    "pope": Benchmark(
        "pope",
        pope_data.read_pope,
        lambda _, p: pope.parse_answer(p),
        pope.score,
        tables.pope_table,
    ),
    "vqa": Benchmark(
        "vqa",
        vqa_data.read_vqa,
        lambda item, p: vqa.question_accuracy(p, item.answer)[1],
        vqa.score,
        tables.vqa_table,
    ),
    **{name: _refcoco(name) for name in refcoco_data.SPLITS},
    # the original eval_vqa.py's --dataset names
    "okvqa": _v2("okvqa", v2_vqa_data.read_okvqa, v2_vqa.okvqa_parse, v2_vqa.okvqa_score),
    "vizwiz": _v2(
        "vizwiz",
        v2_vqa_data.read_vizwiz,
        lambda _, p: p.lower(),
        v2_vqa.mean_score(v2_vqa.vizwiz_accuracy),
    ),
    "iconvqa": _v2(
        "iconvqa",
        v2_vqa_data.read_iconqa,
        lambda item, p: item.extra["choices"].index(p),
        v2_vqa.mean_score(v2_vqa.iconqa_hit),
    ),
    "gqa": _v2(
        "gqa",
        v2_vqa_data.read_gqa,
        lambda _, p: v2_vqa.vqa_postprocess(p),
        v2_vqa.mean_score(v2_vqa.gqa_hit),
    ),
    "vsr": _v2(
        "vsr", v2_vqa_data.read_vsr, lambda _, p: p.lower(), v2_vqa.mean_score(v2_vqa.vsr_hit)
    ),
    "hm": _v2(
        "hm", v2_vqa_data.read_hm, lambda _, p: v2_vqa.hm_parse(p), v2_vqa.mean_score(v2_vqa.hm_hit)
    ),
}


def result_items(
    bench: Benchmark, items: list[Item], predictions: list[str], flags: dict[str, Any] | None = None
) -> list[dict]:
    """The ``items`` of the results file: what was asked, the truth and the model's answer."""
    flags = flags or {}
    return [
        {
            "category": item.category,
            "image": item.image,
            "question": item.question,
            "answer": item.answer,
            "prediction": prediction,
            "parsed": bench.parse(item, prediction),
            **(bench.fields(item, prediction, **flags) if bench.fields else {}),
        }
        for item, prediction in zip(items, predictions, strict=True)
    ]

"""Write a benchmark folder as a local copy of lmms-eval's task data, and a task that reads it.

    .venv-lmms-eval/bin/python -m minigpt4.evaluation.lmms_eval_data --benchmark mme \\
        --data output/tiny_mme --out output/lmms_tiny
    .venv-lmms-eval/bin/lmms-eval --model minigpt4 --model_args cfg_path=... \\
        --tasks mme_local --include_path output/lmms_tiny

lmms-eval's ``mme`` and ``pope`` tasks read the Hugging Face datasets ``lmms-lab/MME`` and
``lmms-lab/POPE``. This writes the same columns (MME: question_id = ``<category>/<image>``,
shared by an image's two questions, image, question, answer, category; POPE: question_id,
question, answer, image_source, image, category) to ``<out>/<task>.parquet`` and a task YAML
``<out>/<task>.yaml`` that includes lmms-eval's own task file (prompts, generation settings,
scoring) and only points ``dataset_path`` at the local parquet file. Needs ``datasets`` and
``lmms_eval`` (the lmms-eval environment).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minigpt4.common.atomic_write import atomic_write, atomic_write_text
from minigpt4.evaluation.benchmarks import BENCHMARKS
from minigpt4.evaluation.items import Item

TASK_FILES = {"mme": ("mme", "mme.yaml"), "pope": ("pope", "pope.yaml")}
STRING_COLUMNS = {
    "mme": ("question_id", "question", "answer", "category"),
    "pope": ("question_id", "question", "answer", "image_source", "category"),
}


def rows(benchmark: str, items: Sequence[Item]) -> dict[str, list[Any]]:
    """The task's columns for ``items`` (images embedded as their file's bytes, as on the hub)."""
    if benchmark == "mme":
        ids = [f"{item.category}/{item.image}" for item in items]
    else:
        ids = [item.id for item in items]
    columns: dict[str, list[Any]] = {
        "question_id": ids,
        "question": [item.question for item in items],
        "answer": [str(item.answer) for item in items],
        "category": [item.category for item in items],
        "image": [{"bytes": item.image_path.read_bytes(), "path": item.image} for item in items],
    }
    if benchmark == "pope":
        columns["image_source"] = [Path(item.image).stem for item in items]
    return columns


def task_yaml(benchmark: str, task: str, parquet: Path) -> str:
    import lmms_eval

    folder, name = TASK_FILES[benchmark]
    original = Path(lmms_eval.__file__).parent / "tasks" / folder / name
    return (
        f"# lmms-eval's {benchmark} task on a local copy of its data (written by "
        "minigpt4.evaluation.lmms_eval_data)\n"
        f"include: {original}\n"
        f"task: {task}\n"
        "dataset_path: parquet\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {parquet.name}\n"
    )


def write(benchmark: str, items: Sequence[Item], out: Path, task: str) -> tuple[Path, Path]:
    """Write ``<out>/<task>.parquet`` and ``<out>/<task>.yaml``; return both paths."""
    import datasets

    columns = rows(benchmark, items)
    features = datasets.Features(
        {**{c: datasets.Value("string") for c in STRING_COLUMNS[benchmark]},
         "image": datasets.Image()}
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    parquet, yaml_path = out / f"{task}.parquet", out / f"{task}.yaml"
    table = datasets.Dataset.from_dict({c: columns[c] for c in features}, features=features)
    with atomic_write(parquet) as tmp:
        table.to_parquet(tmp)
    atomic_write_text(task_yaml(benchmark, task, parquet), yaml_path)
    return parquet, yaml_path


def main(argv: Sequence[str] | None = None) -> tuple[Path, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", required=True, choices=sorted(TASK_FILES))
    parser.add_argument("--data", required=True, help="the benchmark folder (our readers' layouts)")
    parser.add_argument("--image-dir", help="where the images are, when not inside --data")
    parser.add_argument("--out", required=True, help="folder for the parquet file and task YAML")
    parser.add_argument("--task", help="task name (default: <benchmark>_local)")
    parser.add_argument("--limit", type=int, help="as python -m minigpt4.evaluate --limit")
    args = parser.parse_args(argv)
    bench = BENCHMARKS[args.benchmark]
    items = bench.read(
        Path(args.data), Path(args.image_dir) if args.image_dir else None, args.limit
    )
    paths = write(args.benchmark, items, Path(args.out), args.task or f"{args.benchmark}_local")
    print(f"wrote {len(items)} questions to {paths[0]} and the task {paths[1]}")
    return paths


if __name__ == "__main__":
    main()

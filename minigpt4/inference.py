"""Ask MiniGPT-4 the same question about many images; one JSON line per image.

    python -m minigpt4.inference --cfg-path eval_configs/minigpt4_eval.yaml \\
        --images photos/ --prompt "Describe this image in detail." --out answers.jsonl

``--images`` takes folders (their image files, sorted, recursively), list files (``.txt``/
``.lst``: one image path per line; relative paths are taken relative to the list file), or image
files, in any mix. Each image is asked the question exactly as the demo's Chat asks it (same
conversation template, same context embeddings, same stop words and answer post-processing).
Images go through the ViT and the LLM ``--batch-size`` at a time; each output line is
``{"image": path, "prompt": prompt, "answer": text}`` (plus ``"error"`` and a null answer for an
image that cannot be read). ``--out`` is checked before the model loads; answers are written as
they are computed to ``OUT.partial``, renamed to ``OUT`` once all are done, so a failure or a
crash keeps the answers computed so far.

Sampling (the chat's defaults: top_p 0.9, temperature 1.0) is seeded with ``--seed`` (image ``i``
of the list with ``seed + i``): the same seed and device give the same answers, whatever the
batch size. ``--greedy`` turns sampling off.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from minigpt4.common.cli import run_command
from minigpt4.common.model_args import add_model_arguments, chat_from_args
from minigpt4.common.output_files import OutputError, OutputLock, check_output_path

if TYPE_CHECKING:  # torch and the model are imported once the arguments are read
    import torch

    from minigpt4.conversation.chat import Chat
    from minigpt4.models.generation import GenerationSettings

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
PARTIAL_SUFFIX = ".partial"
DEFAULT_PROMPT = "Describe this image in detail."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt4.inference",
        description="Answer one question about many images with MiniGPT-4 (JSON lines out). "
        "Answers are sampled with the chat template's settings (temperature 1.0, top-p 0.9), "
        "seeded by --seed; --greedy takes the most likely token at every step.",
    )
    add_model_arguments(parser, cfg_help="eval config (as for demo.py)")
    parser.add_argument(
        "--images",
        nargs="+",
        required=True,
        help="image folders, list files (one path per line) or image files",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question asked per image")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--seed", type=int, default=42, help="seed for sampling (default 42)")
    # Unset: the chat template's defaults (the original Chat's, e.g. repetition penalty 1.05 for
    # the LLaMA-2 model).
    for flag, kind in (
        ("--max-new-tokens", int),
        ("--max-length", int),
        ("--num-beams", int),
        ("--temperature", float),
        ("--top-p", float),
        ("--repetition-penalty", float),
    ):
        parser.add_argument(flag, type=kind, default=None)
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="no sampling (which is the default): the most likely token at every step",
    )
    args = parser.parse_args(argv)
    from minigpt4.models.prompt import IMAGE_PLACEHOLDER

    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if IMAGE_PLACEHOLDER in args.prompt:
        parser.error(
            f"--prompt holds {IMAGE_PLACEHOLDER}, the placeholder each image is put in: ask "
            "the question alone (the image comes first, as in the demo)"
        )
    if not args.prompt.strip():
        parser.error("--prompt is empty: give the question to ask about every image")
    return args


def collect_images(sources: Iterable[str]) -> list[str]:
    """Image paths from folders, list files and image files, in the order given."""
    images: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                logger.warning("No image files (%s) in %s", ", ".join(IMAGE_EXTENSIONS), path)
            images += [str(p) for p in found]
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                item = Path(line).expanduser()
                images.append(str(item if item.is_absolute() else path.parent / item))
        elif path.is_file():
            images.append(str(path))
        else:
            raise FileNotFoundError(f"--images {source}: no such folder, list file or image file")
    return images


@dataclass
class _Loaded:
    path: str
    tensor: torch.Tensor | None
    error: str | None


def _load(path: str, vis_processor: Any) -> _Loaded:
    from minigpt4.processors.image_io import ImageLoadError, load_image

    try:
        return _Loaded(path, vis_processor(load_image(path)), None)
    except ImageLoadError as err:
        logger.warning("Cannot read %s", err)
        return _Loaded(path, None, f"cannot read image: {err.reason}")


def answer_images(
    chat: Chat,
    image_paths: Sequence[str],
    prompt: str,
    settings: GenerationSettings,
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One record per image: the Chat's answer to ``prompt`` about it (``chat.answer_batch``).

    With ``settings.seed`` set, image ``i`` is sampled with seed ``seed + i``, so an answer does
    not depend on the batch size or on the other images.
    """
    import torch

    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(image_paths), unit="img", disable=not progress)
    for start in range(0, len(image_paths), batch_size):
        loaded = [_load(p, chat.vis_processor) for p in image_paths[start : start + batch_size]]
        good = [(start + i, item) for i, item in enumerate(loaded) if item.tensor is not None]
        answers: list[str] = []
        if good:
            images = torch.stack([item.tensor for _, item in good])
            row_settings = [
                settings if settings.seed is None else settings.replace(seed=settings.seed + i)
                for i, _ in good
            ]
            answers = chat.answer_batch(images, prompt, row_settings)
        answer_iter = iter(answers)
        for item in loaded:
            record: dict[str, Any] = {"image": item.path, "prompt": prompt}
            if item.tensor is None:
                record.update(answer=None, error=item.error)
            else:
                record["answer"] = next(answer_iter)
            records.append(record)
        bar.update(len(loaded))
    bar.close()
    return records


class JsonlWriter:
    """JSON lines written to ``<out>.partial`` as they come, renamed to ``out`` when complete.

    Opened before the model loads, so an ``--out`` that cannot be written fails at once; a
    failure or crash later keeps the answers computed so far in the ``.partial`` file. The
    files get the usual permissions (``open``'s 0666 less the umask, like every other output).
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.partial = f"{out}{PARTIAL_SUFFIX}"
        self.count = 0
        check_output_path(out, example="answers.jsonl")
        check_output_path(self.partial, example="answers.jsonl")
        self._lock = OutputLock(out).__enter__()  # held until finish() or abort()
        try:
            self._file = open(self.partial, "w", encoding="utf-8")
        except OSError as err:
            self._lock.__exit__()
            raise OutputError(
                f"--out {out}: cannot write there ({err.strerror or err}: {err.filename or out})"
            ) from err

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.count += 1
        self._file.flush()

    def finish(self) -> None:
        # Not minigpt4.common.atomic_write: the .partial file is no temporary but the answers
        # so far, under a documented name; completing it is one atomic rename.
        self._file.close()
        os.replace(self.partial, self.out)
        self._lock.__exit__()

    def abort(self) -> None:
        """After a failure: keep what was written (or nothing, if nothing was)."""
        self._file.close()
        if self.count:
            logger.error("Stopped early: %d answers so far are in %s", self.count, self.partial)
        else:
            os.remove(self.partial)
        self._lock.__exit__()


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the command; returns the records written."""
    args = parse_args(argv)
    from minigpt4.common.logger import setup_logger

    setup_logger()
    image_paths = collect_images(args.images)
    if not image_paths:
        raise SystemExit(f"--images {' '.join(args.images)}: no images found")
    logger.info("%d images", len(image_paths))
    writer = JsonlWriter(args.out)  # before the model loads: a bad --out fails now
    try:
        records = _answer_all(args, image_paths, writer)
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    failed = sum(r["answer"] is None for r in records)
    logger.info(
        "Wrote %d answers to %s%s",
        len(records) - failed,
        args.out,
        f" ({failed} images could not be read)" if failed else "",
    )
    return records


def _answer_all(
    args: argparse.Namespace, image_paths: Sequence[str], writer: JsonlWriter
) -> list[dict[str, Any]]:
    """Load the model, then answer ``--batch-size`` images at a time, writing as they come."""
    chat = chat_from_args(args)
    chosen = {
        name: getattr(args, name)
        for name in (
            "max_new_tokens",
            "max_length",
            "num_beams",
            "temperature",
            "top_p",
            "repetition_penalty",
        )
        if getattr(args, name) is not None
    }
    settings = chat.settings(seed=args.seed, do_sample=not args.greedy, **chosen)
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(image_paths), unit="img")
    for start in range(0, len(image_paths), args.batch_size):
        # image i of the whole list is still sampled with seed + i
        batch_settings = (
            settings if settings.seed is None else settings.replace(seed=settings.seed + start)
        )
        batch = answer_images(
            chat,
            image_paths[start : start + args.batch_size],
            args.prompt,
            batch_settings,
            batch_size=args.batch_size,
            progress=False,
        )
        writer.write(batch)
        records += batch
        bar.update(len(batch))
    bar.close()
    return records


if __name__ == "__main__":
    run_command(main, "python -m minigpt4.inference")

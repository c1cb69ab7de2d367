"""Read MME in its two official layouts.

- The release folder (``MME_Benchmark_release_version``): one folder per category, each image
  with a ``.txt`` of the same name holding its questions, one ``question<TAB>answer`` line each
  (two per image, "Yes" then "No" in the release). The text files lie beside the images
  (existence, count, position, color, OCR, ...) or in ``questions_answers_YES_NO/`` with the
  images in ``images/`` (artwork, celebrity, landmark, posters, scene).
- The ``eval_tool`` lists (``eval_tool/Your_Results/<category>.txt``): lines of
  ``image<TAB>question<TAB>answer`` (a fourth column, the answer a model gave, is ignored), the
  two questions of an image on consecutive lines; the images come from the release folder
  (``--image-dir``).
"""

from __future__ import annotations

from pathlib import Path

from minigpt4.evaluation.items import Item, find_image, read_text
from minigpt4.evaluation.mme import COGNITION, PERCEPTION

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
QA_FOLDER = "questions_answers_YES_NO"
IMAGES_FOLDER = "images"
SKIPPED_FOLDERS = frozenset({"eval_tool"})


def _category_order(names: list[str]) -> list[str]:
    official = [c for c in PERCEPTION + COGNITION if c in names]
    return official + sorted(n for n in names if n not in official)


def _split(line: str, path: Path, number: int, columns: int) -> list[str]:
    parts = line.rstrip("\n").split("\t")
    if len(parts) < columns:
        raise ValueError(
            f"{path}:{number}: expected {columns} tab-separated columns, got {line.rstrip()!r}"
        )
    return parts


def _release_category(folder: Path, limit: int | None) -> list[Item]:
    """One category folder of the release layout, images in sorted order."""
    qa_dir = folder / QA_FOLDER if (folder / QA_FOLDER).is_dir() else folder
    image_dir = folder / IMAGES_FOLDER if (folder / IMAGES_FOLDER).is_dir() else folder
    items: list[Item] = []
    for txt in sorted(qa_dir.glob("*.txt"))[:limit]:
        image = next(
            (
                image_dir / (txt.stem + s)
                for s in IMAGE_SUFFIXES
                if (image_dir / (txt.stem + s)).is_file()
            ),
            None,
        )
        if image is None:
            raise FileNotFoundError(
                f"{txt}: no image {txt.stem}{{{','.join(IMAGE_SUFFIXES)}}} in {image_dir}"
            )
        lines = [ln for ln in read_text(txt).splitlines() if ln.strip()]
        for k, line in enumerate(lines):
            question, answer = _split(line, txt, k + 1, 2)[:2]
            items.append(
                Item(
                    f"{folder.name}/{image.name}/{k}",
                    folder.name,
                    image.name,
                    image,
                    question,
                    answer.strip(),
                )
            )
    return items


def _eval_tool_category(txt: Path, image_dir: Path, limit: int | None) -> list[Item]:
    category = txt.stem
    roots = [image_dir / category / IMAGES_FOLDER, image_dir / category, image_dir]
    items: list[Item] = []
    images: list[str] = []
    counts: dict[str, int] = {}
    for number, line in enumerate(read_text(txt).splitlines(), 1):
        if not line.strip():
            continue
        name, question, answer = _split(line, txt, number, 3)[:3]
        if name not in counts:
            if limit is not None and len(images) >= limit:
                break
            images.append(name)
        k = counts[name] = counts.get(name, -1) + 1
        path = find_image(name, roots, f"{txt}:{number}")
        items.append(Item(f"{category}/{name}/{k}", category, name, path, question, answer.strip()))
    return items


def read_mme(data: Path, image_dir: Path | None = None, limit: int | None = None) -> list[Item]:
    """Every question of the MME folder ``data`` (either layout), categories in the official
    order then the others by name; ``limit``: the first N images of each category."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder (give the MME folder)")
    folders = [
        p
        for p in data.iterdir()
        if p.is_dir()
        and p.name not in SKIPPED_FOLDERS
        and (any(p.glob("*.txt")) or (p / QA_FOLDER).is_dir())
    ]
    if folders:
        by_name = {p.name: p for p in folders}
        return [
            i for n in _category_order(list(by_name)) for i in _release_category(by_name[n], limit)
        ]
    lists = {p.stem: p for p in data.glob("*.txt")}
    if not lists:
        raise FileNotFoundError(
            f"--data {data}: neither category folders with question files (the release layout) "
            "nor eval_tool lists (<category>.txt) found"
        )
    root = Path(image_dir) if image_dir is not None else data
    return [
        i for n in _category_order(list(lists)) for i in _eval_tool_category(lists[n], root, limit)
    ]

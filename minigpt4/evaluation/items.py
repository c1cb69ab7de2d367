"""One benchmark question, as every reader yields it and the runner asks it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Item:
    """A question about one image, with its ground truth.

    ``id`` is unique within the benchmark and stable between runs (the resume key); ``image``
    is the image's name as the benchmark writes it, ``image_path`` the file that is opened;
    ``answer`` is the ground truth ("Yes"/"No" for MME and POPE, the list of human answers for
    VQA); ``extra`` holds what a scorer needs besides (VQA's question and answer types).
    """

    id: str
    category: str
    image: str
    image_path: Path
    question: str
    answer: Any
    extra: dict[str, Any] = field(default_factory=dict)


def find_image(name: str, roots: list[Path], what: str) -> Path:
    """The first ``root / name`` that is a file; a clear error naming every place looked at."""
    for root in roots:
        path = root / name
        if path.is_file():
            return path
    looked = ", ".join(str(r / name) for r in roots)
    raise FileNotFoundError(
        f"{what}: image {name!r} not found (looked at {looked}); pass --image-dir with the folder "
        "that holds the benchmark's images"
    )

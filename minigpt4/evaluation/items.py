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


def read_text(path: Path) -> str:
    """The UTF-8 text of a benchmark file; a file in another encoding (a Latin-1 MME ``.txt``)
    is an error naming the file and the first bad byte, not a bare UnicodeDecodeError."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None

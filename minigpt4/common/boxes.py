"""MiniGPT-v2's boxes as text: formatting, parsing, scaling and overlap, in one place.

MiniGPT-v2 reads and writes boxes as text on a 0-100 grid: ``{<x1><y1><x2><y2>}`` (left, top,
right, bottom), a phrase as ``<p>phrase</p>`` before its boxes, several boxes of one phrase
joined by ``<delim>``: ``<p>two dogs</p> {<5><30><40><88>}<delim>{<52><28><96><91>}``.

The original parses answers in two places with different rules, and both are kept here as
separate functions because results depend on them:

- the demo (``demo_v2.py``) draws what it can find: phrases with their boxes
  (:func:`demo_phrase_strings`, :func:`demo_boxes`), or, without phrases, any text with exactly
  four integers as one box;
- the RefCOCO evaluation (``eval_scripts/eval_ref.py``) is strict: spaces and ``<unk>`` are
  removed (:func:`clean_ref_answer`), the answer must *start* with one grid box
  (:func:`is_ref_box`), and then every integer of the answer is read (:func:`ref_answer_box`):
  an answer with more than four integers yields no usable box.

Overlap is :func:`compute_iou` with the original's +1 pixel convention (``computeIoU``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

GRID = 100  # boxes in text are on a 0-100 grid (eval_ref.py's --res default)
DELIM = "<delim>"
PHRASE_OPEN, PHRASE_CLOSE = "<p>", "</p>"
REF_PREFIX = "[refer] give me the location of"  # RefCOCO's question before the expression

Box = Sequence[float]

_REF_BOX = re.compile(r"\{<\d{1,3}><\d{1,3}><\d{1,3}><\d{1,3}>\}")
_DEMO_PHRASE = re.compile(r"<p>(.*?)\}(?!<)")
_DEMO_INT = re.compile(r"-?\d+")
_REF_INT = re.compile(r"\d+")


# --- formatting (training text, the demo's drawn region) ---------------------------------------


def format_box(box: Sequence[int]) -> str:
    """``{<x1><y1><x2><y2>}`` of a box already on the grid (integers)."""
    if len(box) != 4:
        raise ValueError(f"a box has 4 coordinates (x1, y1, x2, y2), got {list(box)}")
    return "{" + "".join(f"<{int(v)}>" for v in box) + "}"


def format_boxes(boxes: Sequence[Sequence[int]]) -> str:
    """Several grid boxes joined by ``<delim>``."""
    return DELIM.join(format_box(b) for b in boxes)


def format_phrase(phrase: str, boxes: Sequence[Sequence[int]]) -> str:
    """``<p>phrase</p> {..}<delim>{..}``: a grounded phrase as the training answers write it."""
    return f"{PHRASE_OPEN}{phrase}{PHRASE_CLOSE} {format_boxes(boxes)}"


# --- scaling -------------------------------------------------------------------------------------


def pixels_to_grid(box: Box, width: float, height: float, grid: float = GRID) -> list[int]:
    """A pixel box (x1, y1, x2, y2) on the grid, truncated to integers as the original's
    training datasets do (``int(x / width * 100)``)."""
    x1, y1, x2, y2 = box
    return [
        int(x1 / width * grid),
        int(y1 / height * grid),
        int(x2 / width * grid),
        int(y2 / height * grid),
    ]


def grid_to_pixels(box: Box, width: float, height: float, grid: float = GRID) -> list[float]:
    """A grid box in pixels of a ``width`` x ``height`` image (``v / 100 * size``, unrounded)."""
    if len(box) != 4:
        raise ValueError(f"a box has 4 coordinates (x1, y1, x2, y2), got {list(box)}")
    x1, y1, x2, y2 = box
    return [x1 / grid * width, y1 / grid * height, x2 / grid * width, y2 / grid * height]


def xywh_to_xyxy(box: Box) -> list[float]:
    """COCO's (x, y, width, height) as (x1, y1, x2, y2)."""
    x, y, w, h = box
    return [x, y, x + w, y + h]


# --- overlap -------------------------------------------------------------------------------------


def compute_iou(box1: Box, box2: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes, counting pixels inclusively (the
    original's ``computeIoU``: widths are ``x2 - x1 + 1``), also for fractional coordinates."""
    x1, y1, x2, y2 = box1
    x3, y3, x4, y4 = box2
    inter_w = max(0, min(x2, x4) - max(x1, x3) + 1)
    inter_h = max(0, min(y2, y4) - max(y1, y3) + 1)
    intersection = inter_w * inter_h
    area1 = (x2 - x1 + 1) * (y2 - y1 + 1)
    area2 = (x4 - x3 + 1) * (y4 - y3 + 1)
    return intersection / (area1 + area2 - intersection)


# --- the demo's parsing (demo_v2.py) -------------------------------------------------------------


def demo_phrase_strings(text: str) -> list[str]:
    """``phrase</p> {boxes`` pieces of an answer (the original's ``extract_substrings``): the
    text is cut after its last ``}`` (an unfinished box is dropped), then each ``<p>`` up to a
    ``}`` that no ``<`` follows (so ``}<delim>{`` stays inside)."""
    end = text.rfind("}")
    if end != -1:
        text = text[: end + 1]
    return _DEMO_PHRASE.findall(text)


def _demo_box(box_text: str, width: float, height: float) -> list[float] | None:
    integers = _DEMO_INT.findall(box_text)
    if len(integers) != 4:
        return None
    return grid_to_pixels([int(v) for v in integers], width, height)


def demo_boxes(
    text: str, width: float, height: float
) -> tuple[str | None, dict[str, list[list[float]]] | list[list[float]] | None]:
    """What the demo draws for an answer on a ``width`` x ``height`` image: ``("all", {phrase:
    [pixel boxes]})`` for phrases with boxes, ``("single", [pixel box])`` for a text without
    phrases holding exactly four integers, else ``(None, None)``. A box is kept only with
    exactly four integers (negative ones included); a repeated phrase collects all its boxes.
    HTML entities are decoded first (the demo parses the chat's escaped text)."""
    text = html.unescape(text)
    pieces = demo_phrase_strings(text)
    if not pieces:
        box = _demo_box(text, width, height)
        return (None, None) if box is None else ("single", [box])
    entities: dict[str, list[list[float]]] = {}
    for piece in pieces:
        parts = piece.split(PHRASE_CLOSE)
        if len(parts) != 2:
            continue  # the original prints 'wrong string' and skips it
        phrase, boxes_text = parts
        for box_text in boxes_text.split(DELIM):
            box = _demo_box(box_text, width, height)
            if box is not None:
                entities.setdefault(phrase, []).append(box)
    return ("all", entities) if entities else (None, None)


def mask2bbox(mask: Image.Image | None) -> str:
    """The grid box around a drawn mask (the demo's ``[identify]`` flow), ``""`` for an empty
    one: the mask is resized to 100 x 100 (nearest), and the first and last rows and columns
    with a nonzero first channel bound it."""
    if mask is None:
        return ""
    grid = np.array(mask.resize([GRID, GRID], resample=Image.NEAREST))
    grid = grid[:, :, 0] if grid.ndim == 3 else grid
    rows, cols = np.any(grid, axis=1), np.any(grid, axis=0)
    if not rows.any():
        return ""
    top, bottom = np.where(rows)[0][[0, -1]]
    left, right = np.where(cols)[0][[0, -1]]
    return format_box([left, top, right, bottom])


# --- the RefCOCO evaluation's parsing (eval_ref.py) ----------------------------------------------


def clean_ref_answer(answer: str) -> str:
    """eval_ref.py's cleanup: ``<unk>`` and every space removed."""
    return answer.replace("<unk>", "").replace(" ", "").strip()


def is_ref_box(cleaned: str) -> bool:
    """Whether a cleaned answer starts with one grid box (eval_ref.py's ``re.match``; anything
    may follow). An answer that does not is resampled when resampling is on."""
    return _REF_BOX.match(cleaned) is not None


def ref_answer_box(
    cleaned: str, width: float, height: float, grid: float = GRID
) -> list[float] | None:
    """The pixel box of a cleaned answer by eval_ref.py's rule: *every* integer in it is read
    and the first four scaled; the answer gives a box only when there are exactly four (with
    more or fewer the original's IoU fails and the answer counts as a miss)."""
    integers = [int(v) for v in _REF_INT.findall(cleaned)]
    if len(integers) != 4:
        return None
    return grid_to_pixels(integers, width, height, grid)


def ref_resample_question(question: str) -> str:
    """The question eval_ref.py asks again after an unparsable answer: the expression is stored
    as a one-element list and formatted as such (``... of ['the red shape']``), so every further
    round nests it once more. Kept as the original asks it: scores depend on it."""
    expression = question.replace(REF_PREFIX, "").strip()
    return f"{REF_PREFIX} {[expression]}"

"""The demo's drawing of MiniGPT-v2 answers against what the original's
``visualize_all_bbox_together`` computed (tests/fixtures/minigptv2/box_parsing.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minigpt4.common.box_drawing import BOX_COLOURS, BOX_LINE, colour_phrases, draw_answer

FIXTURE = Path(__file__).parent / "fixtures" / "minigptv2" / "box_parsing.json"
CASES = json.loads(FIXTURE.read_text())["demo_v2"]
GREY = (128, 128, 128)


def blank() -> Image.Image:
    return Image.new("RGB", tuple(CASES["image_size"]), GREY)


def drawn_colours(view: Image.Image, rect) -> list[tuple[int, int, int]]:
    """The colours of the four edges' midpoints of a rectangle (as the original drew it)."""
    pixels = np.asarray(view)
    (x1, y1), (x2, y2) = rect
    x2, y2 = min(x2, view.width - 1), min(y2, view.height - 1)
    xm, ym = (x1 + x2) // 2, (y1 + y2) // 2
    points = [(x1, ym), (x2, ym), (xm, y2)]
    return [tuple(int(c) for c in pixels[y, x]) for x, y in points]


@pytest.mark.parametrize(
    "case", CASES["visualize_all_bbox_together"], ids=lambda c: c["generation"]
)
def test_drawn_like_the_original(case):
    view, coloured = draw_answer(blank(), case["generation"])
    assert coloured == case["generation_colored"]
    if case["returned_image"] is None:
        assert view is None
        return
    assert list(view.size) == case["returned_image"] == case["resized_image_size"]
    phrases = list(case["entities"]) if case["mode"] == "all" else [None]
    rects = case["cv2_rectangles"]
    # each phrase's boxes in that phrase's colour (the rank among distinct phrases)
    boxes_per_phrase = [len(v) for v in case["entities"].values()] if case["mode"] == "all" else [1]
    colours = [BOX_COLOURS[i] for i, n in enumerate(boxes_per_phrase) for _ in range(n)]
    assert len(colours) == len(rects) and len(phrases) == len(boxes_per_phrase)
    for rect, colour in zip(rects, colours):
        assert colour in drawn_colours(view, rect), (rect, colour)
    # nothing but the boxes and their labels changed: the image's middle far from any box
    # stays grey where no box runs
    untouched = np.asarray(view)[view.height - 3, view.width // 2 - 40 : view.width // 2 - 30]
    if all(r[1][1] < view.height - 6 for r in rects):
        assert (untouched == GREY).all()


def test_box_line_width_and_html_entities():
    """The chat's escaped text is read (&lt;...&gt;); lines are BOX_LINE wide."""
    view, coloured = draw_answer(
        blank(), "&lt;p&gt;x&lt;/p&gt; {&lt;10&gt;&lt;50&gt;&lt;60&gt;&lt;90&gt;}"
    )
    assert coloured == '<span style="color:rgb(255, 0, 0)">x</span> '
    row = np.asarray(view)[int(0.7 * view.height)]
    red = [x for x in range(view.width) if tuple(row[x]) == BOX_COLOURS[0]]
    assert len(red) == 2 * BOX_LINE and red == [50, 51, 299, 300]  # x1 and x2 inclusive, inward


def test_colours_cycle_past_sixteen_phrases():
    text = " ".join(f"<p>p{i}</p> {{<1><1><2><2>}}" for i in range(18))
    spans = colour_phrases(text).split("</span>")
    assert f"rgb{BOX_COLOURS[0]}" in spans[16] and f"rgb{BOX_COLOURS[1]}" in spans[17]


def test_no_image_nothing_drawn():
    assert draw_answer(None, "{<1><2><3><4>}") == (None, "")

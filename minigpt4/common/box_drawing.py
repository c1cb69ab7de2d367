"""MiniGPT-v2's boxes drawn on the image and its phrases coloured in the text (demo_v2.py).

The original's ``visualize_all_bbox_together``, kept where a user sees it: the image is resized
to 500 px wide, the answer's boxes (:func:`~minigpt4.common.boxes.demo_boxes`) are drawn in the
original's 16 colours, 2 px wide, with coordinates truncated to integers; each phrase (``all``
mode) gets its label on a half-transparent strip at the box's top-left corner (inside the box
when there is no room above; moved down past earlier labels; not repeated for the same phrase at
the same place); the text loses its boxes and ``<delim>`` and each ``<p>phrase</p>`` becomes a
coloured span.

Two colour rules of the original are kept as they are, because users see them: a box takes the
colour of its phrase's rank among the distinct phrases, while the text colours every ``<p>``
occurrence with the next colour in turn (a phrase that appears twice, or a phrase whose box could
not be read, shifts the text's colours against the boxes'). A text without phrases (one box:
``single`` mode, e.g. an ``[identify]`` question) is drawn without a label and not coloured.
Drawing is Pillow's, not OpenCV's: the labels' font differs from the original's Hershey font.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from minigpt4.common.boxes import compute_iou, demo_boxes

VIEW_WIDTH = 500  # the original draws on the image resized to this width
BOX_LINE = 2
LABEL_ALPHA = 0.5  # the label strip's blend with the image below it
LABEL_FONT_SIZE = 13
LABEL_PADDING = 2  # the original's text_spaces, above and below the label text
SWATCH_CHARS = 1.35  # the coloured part of a label strip, in widths of "F" (the text follows)
SAME_LABEL_IOU = 0.95
# The original's colours, as RGB tuples on its RGB image (OpenCV draws them as given).
BOX_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (210, 210, 0),
    (255, 0, 255),
    (0, 255, 255),
    (114, 128, 250),
    (0, 165, 255),
    (0, 128, 0),
    (144, 238, 144),
    (238, 238, 175),
    (255, 191, 0),
    (0, 128, 0),
    (226, 43, 138),
    (255, 0, 255),
    (0, 215, 255),
)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

_BOX_TEXT = re.compile(r"{<\d+><\d+><\d+><\d+>}|<delim>")
_PHRASE = re.compile(r"<p>(.*?)</p>")

Rect = tuple[int, int, int, int]


def view_size(width: int, height: int) -> tuple[int, int]:
    """The size the original draws at: 500 px wide, the height scaled and truncated."""
    return VIEW_WIDTH, int(VIEW_WIDTH / width * height)


def colour_phrases(text: str) -> str:
    """The answer as the demo shows it after drawing: boxes and ``<delim>`` removed, each
    ``<p>phrase</p>`` a ``<span style="color:rgb(r, g, b)">`` in the next colour in turn."""
    colours = iter(BOX_COLOURS * (1 + text.count("<p>") // len(BOX_COLOURS)))
    stripped = _BOX_TEXT.sub("", text)
    return _PHRASE.sub(
        lambda m: f'<span style="color:rgb{next(colours)}">{m.group(1)}</span>', stripped
    )


def _overlaps(a: Rect, b: Rect) -> bool:
    return not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])


class _Labeller:
    """Places and draws phrase labels, remembering where earlier ones went."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.font = ImageFont.load_default(size=LABEL_FONT_SIZE)
        left, top, right, bottom = self.font.getbbox("F")
        self.char_width, self.text_height = right - left, bottom - top
        self.strip_height = self.text_height + 2 * LABEL_PADDING
        self.swatch_width = int(SWATCH_CHARS * self.char_width)
        self.placed: list[tuple[Rect, str]] = []

    def _strip(self, box: Sequence[int], phrase: str) -> Rect | None:
        """Where the label of ``phrase`` at ``box`` goes, or None to skip it."""
        x1, y1 = box[0] - BOX_LINE // 2, box[1] - BOX_LINE // 2
        if y1 < self.strip_height:  # no room above the box: inside, below its top edge
            x1, y1 = box[0] + BOX_LINE, box[1] + BOX_LINE + self.strip_height
        width = self.swatch_width + LABEL_PADDING + int(self.font.getlength(phrase))
        strip = (x1, y1 - self.strip_height, x1 + width, y1)
        for previous, previous_phrase in self.placed:
            if previous_phrase == phrase and compute_iou(strip, previous) > SAME_LABEL_IOU:
                return None
            while _overlaps(strip, previous):
                strip = (
                    strip[0],
                    strip[1] + self.strip_height,
                    strip[2],
                    strip[3] + self.strip_height,
                )
                if strip[3] >= self.image.height:
                    top = max(0, self.image.height - self.strip_height)
                    strip = (strip[0], top, strip[2], self.image.height)
                    break
        return strip

    def draw(self, box: Sequence[int], phrase: str, colour: tuple[int, int, int]) -> None:
        strip = self._strip(box, phrase)
        if strip is None:
            return
        x1, y1, x2, y2 = strip
        swatch_end = x1 + self.swatch_width
        overlay = Image.new("RGB", self.image.size, WHITE)
        ImageDraw.Draw(overlay).rectangle((x1, y1, swatch_end, y2 - 1), fill=colour)
        region = (max(0, x1), max(0, y1), min(self.image.width, x2), min(self.image.height, y2))
        if region[0] < region[2] and region[1] < region[3]:
            blended = Image.blend(self.image.crop(region), overlay.crop(region), 1 - LABEL_ALPHA)
            self.image.paste(blended, region[:2])
        ImageDraw.Draw(self.image).text(
            (swatch_end + LABEL_PADDING, y2 - LABEL_PADDING),
            phrase,
            fill=BLACK,
            font=self.font,
            anchor="ls",
        )
        self.placed.append((strip, phrase))


def draw_answer(image: Image.Image | None, text: str) -> tuple[Image.Image | None, str]:
    """The original's ``visualize_all_bbox_together(image, text)``: the image (500 px wide)
    with the text's boxes drawn, and the coloured text (``""`` unless it holds phrases);
    ``(None, "")`` when there is no image or nothing to draw."""
    if image is None:
        return None, ""
    text = html.unescape(text)
    view = image.convert("RGB").resize(view_size(*image.size))
    mode, entities = demo_boxes(text, view.width, view.height)
    if mode is None:
        return None, ""
    groups = [("", entities)] if mode == "single" else list(entities.items())
    draw = ImageDraw.Draw(view)
    labeller = _Labeller(view) if mode == "all" else None
    for rank, (phrase, boxes) in enumerate(groups):
        colour = BOX_COLOURS[rank % len(BOX_COLOURS)]
        for box in boxes:
            x1, y1, x2, y2 = (int(v) for v in box)
            draw.rectangle(_ordered(x1, y1, x2, y2), outline=colour, width=BOX_LINE)
            if labeller is not None:
                labeller.draw((x1, y1, x2, y2), phrase, colour)
    return view, colour_phrases(text) if mode == "all" else ""


def _ordered(x1: int, y1: int, x2: int, y2: int) -> Rect:
    """Corners in the order Pillow needs (OpenCV accepts a box given right to left)."""
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)

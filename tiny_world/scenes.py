"""The shapes world with one to three shapes per image and their boxes: MiniGPT-v2's tiny world.

A scene (``MultiScene``) is a background and one to three things (``Thing``): each a colour and
shape of ``tiny_world.world`` at its own place and size, no two with the same colour and shape,
no two overlapping (their boxes stay ``GAP`` of the side apart). Things are ordered left to
right (by the left edge of the box), which is the order every text below names them in,
except the grounded caption.

Boxes are measured from the drawing (the pixels each shape covers), in pixels of the drawn image
as ``(x1, y1, x2, y2)`` with x2/y2 exclusive, so they are exact for any image size.

The texts MiniGPT-v2's tasks need, one function each: a thing's referring expression
(``expression``: "red circle"), the scene's caption (``caption``: "a red circle and a blue star
on a black background"), a grounded caption with ``<p>`` phrases and grid boxes
(``grounded_caption``) and short VQA pairs (``vqa_pairs``).

Dependencies: the standard library and PIL only, like ``world.py``. ``make_multi_sample(seed,
index)`` depends only on ``(seed, index)`` (a string-seeded generator of its own, apart from the
one-shape world's); equal arguments give equal pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tiny_world.world import (
    _SUPERSAMPLE,
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    SHAPES,
    _draw_shape,
    fix_articles,
)

MAX_THINGS = 3
EXTENT_RANGE = (0.2, 0.34)  # a thing's extent (circle diameter) as a fraction of the side
GAP = 0.02  # boxes of two things stay this fraction of the side apart
MAX_ROTATION = 20.0  # degrees
_PLACEMENT_TRIES = 200
_COUNT_WORDS = ("zero", "one", "two", "three")


@dataclass(frozen=True)
class Thing:
    """One shape: colour and shape words, centre and extent as fractions of the side, turn."""

    colour: str
    shape: str
    cx: float
    cy: float
    extent: float
    rotation: float  # radians

    def __post_init__(self) -> None:
        if self.colour not in COLOURS or self.shape not in SHAPES:
            raise ValueError(f"Thing({self.colour!r}, {self.shape!r}): unknown colour or shape")


@dataclass(frozen=True)
class MultiScene:
    """A background word and one to three things, left to right."""

    background: str
    things: tuple[Thing, ...]

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"MultiScene.background={self.background!r} is not in {BACKGROUNDS}")
        if not 1 <= len(self.things) <= MAX_THINGS:
            raise ValueError(f"MultiScene holds 1-{MAX_THINGS} things, got {len(self.things)}")


@dataclass(frozen=True)
class MultiSample:
    """One generated image with its scene and each thing's pixel box (scene order)."""

    index: int
    scene: MultiScene
    image: Image.Image
    boxes: tuple[tuple[int, int, int, int], ...]


def _bounds(thing: Thing) -> tuple[float, float, float, float]:
    """A box (fractions of the side) that holds the drawn shape whatever its turn."""
    reach = thing.extent / 2 * 1.35  # the triangle's and the star's circumradius factor
    return thing.cx - reach, thing.cy - reach, thing.cx + reach, thing.cy + reach


def _apart(a: Thing, b: Thing) -> bool:
    ax1, ay1, ax2, ay2 = _bounds(a)
    bx1, by1, bx2, by2 = _bounds(b)
    return ax2 + GAP <= bx1 or bx2 + GAP <= ax1 or ay2 + GAP <= by1 or by2 + GAP <= ay1


def _sample_thing(rng: random.Random, colour: str, shape: str) -> Thing:
    extent = rng.uniform(*EXTENT_RANGE)
    reach = extent / 2 * 1.35
    return Thing(
        colour,
        shape,
        rng.uniform(reach, 1 - reach),
        rng.uniform(reach, 1 - reach),
        extent,
        math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION)),
    )


def sample_multi_scene(rng: random.Random) -> MultiScene:
    """One to three things (count uniform), distinct colour+shape pairs, placed apart at random;
    a thing that finds no free place in ``_PLACEMENT_TRIES`` draws is left out (1 scene in 7)."""
    count = rng.randint(1, MAX_THINGS)
    pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], count)
    things: list[Thing] = []
    for colour, shape in pairs:
        for _ in range(_PLACEMENT_TRIES):
            thing = _sample_thing(rng, colour, shape)
            if all(_apart(thing, other) for other in things):
                things.append(thing)
                break
    things.sort(key=lambda t: _bounds(t)[0])
    return MultiScene(rng.choice(BACKGROUNDS), tuple(things))


def render_multi(scene: MultiScene, size: int = 224) -> tuple[Image.Image, tuple]:
    """The scene drawn ``size`` x ``size`` (2x supersampled) and each thing's pixel box."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND_RGB[scene.background])
    draw = ImageDraw.Draw(image)
    boxes = []
    for thing in scene.things:
        mask = Image.new("L", (size, size), 0)
        args = (thing.shape, thing.cx * size, thing.cy * size, thing.extent * size / 2)
        _draw_shape(ImageDraw.Draw(mask), *args, thing.rotation, 255)
        boxes.append(mask.getbbox())
        big_args = (thing.shape, thing.cx * big, thing.cy * big, thing.extent * big / 2)
        _draw_shape(draw, *big_args, thing.rotation, COLOUR_RGB[thing.colour])
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image, tuple(boxes)


def multi_sample_rng(seed: int, index: int) -> random.Random:
    """The generator of scene ``index`` for ``seed`` (string-seeded: stable across machines)."""
    return random.Random(f"shapes-world-v2:{seed}:{index}")


def make_multi_sample(seed: int, index: int, size: int = 224) -> MultiSample:
    """Scene ``index`` of ``seed``, drawn ``size`` x ``size``, with its boxes."""
    scene = sample_multi_scene(multi_sample_rng(seed, index))
    image, boxes = render_multi(scene, size)
    return MultiSample(index, scene, image, boxes)


# --- texts ---------------------------------------------------------------------------------------


def expression(thing: Thing) -> str:
    """The referring expression of a thing: "red circle" (unique within its scene)."""
    return f"{thing.colour} {thing.shape}"


def ref_sentences(thing: Thing) -> tuple[str, str]:
    """A thing's referring sentences as the REFER refs hold them: "red circle", "the red circle"
    (the evaluation asks the first)."""
    return expression(thing), f"the {expression(thing)}"


def _listing(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: MultiScene) -> str:
    """ "a red circle and a blue star on a black background" (things left to right)."""
    things = [f"a {expression(t)}" for t in scene.things]
    return fix_articles(f"{_listing(things)} on a {scene.background} background")


def grid_box(box: tuple[int, int, int, int], width: int, height: int) -> str:
    """``{<x1><y1><x2><y2>}`` of a pixel box on the 0-100 grid, truncated as the original."""
    x1, y1, x2, y2 = box
    values = (x1 / width, y1 / height, x2 / width, y2 / height)
    return "{" + "".join(f"<{int(v * 100)}>" for v in values) + "}"


def grounded_caption(sample: MultiSample) -> str:
    """The caption with each thing as a ``<p>`` phrase and its grid box, the things in an order
    drawn from the scene (the same for the same scene). Not left to right: named in that order,
    the boxes could be written in the order the image tokens hold them, and the tiny LLM
    learnt that in place of finding a thing's box by its phrase, which ``[refer]`` needs."""
    width, height = sample.image.size
    parts = [
        fix_articles(f"a <p>{expression(t)}</p> {grid_box(box, width, height)}")
        for t, box in zip(sample.scene.things, sample.boxes, strict=True)
    ]
    random.Random(repr(sample.boxes)).shuffle(parts)
    return f"{_listing(parts)} on a {sample.scene.background} background"


def vqa_pairs(scene: MultiScene) -> list[tuple[str, str]]:
    """Short questions with one right answer each: the count, each thing's colour by its shape
    (when no other thing has that shape) and shape by its colour (likewise)."""
    pairs = [("how many shapes are there?", _COUNT_WORDS[len(scene.things)])]
    shapes = [t.shape for t in scene.things]
    colours = [t.colour for t in scene.things]
    for thing in scene.things:
        if shapes.count(thing.shape) == 1:
            pairs.append((f"what colour is the {thing.shape}?", thing.colour))
        if colours.count(thing.colour) == 1:
            pairs.append((f"what shape is the {thing.colour} thing?", thing.shape))
    pairs.append(("what colour is the background?", scene.background))
    return pairs

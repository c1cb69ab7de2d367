"""The synthetic "shapes world": one filled shape on a plain background, with known captions.

Every image shows exactly one shape, described by five attributes:

- colour:     red, green, blue, yellow, purple, orange   (``COLOURS``, RGB in ``COLOUR_RGB``)
- shape:      circle, square, triangle, star             (``SHAPES``)
- size:       small, large                               (``SIZES``)
- position:   top left, top right, bottom left, bottom right, center   (``POSITIONS``)
- background: black, gray, navy                    (``BACKGROUNDS``, RGB in ``BACKGROUND_RGB``)

Colour + shape are the main attributes (24 combinations, chance ~4 %): ``scene_matches`` scores
them. Background words never collide with colour words, so the first colour word in a caption is
always the shape's colour.

Yes/no questions about one attribute (``yes_no_question``, "Is there a red shape in the image?"),
asked in pairs as MME asks them (``question_pair``: one true, one false), make the world's
benchmark (``dataset/make_synthetic.py --format mme|pope``; POPE asks about the object, i.e. the
shape: "Is there a circle in the image?").

Two caption styles:

- ``short_caption``: stage-1 style, like BLIP's synthetic captions: lower case, no final period,
  always containing "<colour> <shape>" or "<size> <colour> <shape>",
  e.g. "a large red circle in the top left corner on a gray background".
- ``long_description``: stage-2 style (the ``cc_sbu_align`` set), two or three sentences,
  e.g. "The image shows a large red circle in the top left corner. The background is plain gray.
  There is nothing else in the picture."

Dependencies: the standard library and PIL only (``dataset/make_synthetic.py`` loads this file
without importing the ``minigpt4`` package, which would pull torch and transformers).

Two ways to draw a scene: the canonical drawing (the world's own RGB values, ``COLOUR_RGB`` and
``BACKGROUND_RGB``, 2x supersampled, a square image) and, with ``make_sample(..., styled=True)``,
a drawing style sampled per image (``DrawingStyle``) as a user draws with ordinary tools: a named
shade of the colour word and of the background word (``COLOUR_SHADES``, ``BACKGROUND_SHADES``:
PIL/CSS names and matplotlib's ``tab:`` colours), a canvas of 224-512 pixels a side, square or
not, anti-aliased or hard edges, saved as PNG or as JPEG of some quality. The scene and captions
of a sample are the same either way.

Determinism: ``make_sample(seed, index)`` depends only on ``(seed, index)``; the same seed and
count give byte-identical JPEGs through ``to_jpeg_bytes`` (fixed quality, no optimisation passes).
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageDraw

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "navy")

# Far apart in RGB so that a small vision model tells them apart after JPEG and resizing.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 220, 20),
    "purple": (140, 40, 180),
    "orange": (250, 135, 20),
}
# All dark, so every shape is brighter than its background in its strong channels. With a white
# background as well (the first version of this world), the sign of the shape's contrast flipped
# between backgrounds, and a tiny ViT trained from scratch learnt outlines far more slowly: 0.55
# vs 0.85 shape accuracy after the same 1000 pre-training steps (see docs/tiny-world.md).
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (70, 70, 70),
    "navy": (20, 30, 90),
}

# Shape centre as a fraction of the image side.
POSITION_XY: dict[str, tuple[float, float]] = {
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "center": (0.5, 0.5),
}
# Shape extent (circle diameter) as a fraction of the image side; with the jitter every shape
# stays inside the image.
SIZE_FRACTION: dict[str, float] = {"small": 0.16, "large": 0.32}

JPEG_QUALITY = 95
_SUPERSAMPLE = 2  # draw at 2x then downscale: smooth edges, still deterministic

# --- drawing styles: how a user might draw the same scene ---------------------------------------

# Named shades per colour word, as PIL's ImageColor (CSS names) and matplotlib spell them; the
# ``tab:`` names are matplotlib's default colour cycle (PIL does not know them: hex values).
# Every shade differs from every background shade by at least ``MIN_CONTRAST`` in some channel.
COLOUR_SHADES: dict[str, dict[str, str]] = {
    "red": {"red": "red", "crimson": "crimson", "firebrick": "firebrick", "tab:red": "#d62728"},
    "green": {
        "green": "green",
        "lime": "lime",
        "limegreen": "limegreen",
        "forestgreen": "forestgreen",
        "darkgreen": "darkgreen",
        "seagreen": "seagreen",
        "tab:green": "#2ca02c",
    },
    "blue": {
        "blue": "blue",
        "mediumblue": "mediumblue",
        "royalblue": "royalblue",
        "dodgerblue": "dodgerblue",
        "tab:blue": "#1f77b4",
    },
    "yellow": {"yellow": "yellow", "gold": "gold"},
    "purple": {
        "purple": "purple",
        "darkviolet": "darkviolet",
        "blueviolet": "blueviolet",
        "darkmagenta": "darkmagenta",
        "rebeccapurple": "rebeccapurple",
        "mediumpurple": "mediumpurple",
        "tab:purple": "#9467bd",
    },
    "orange": {"orange": "orange", "darkorange": "darkorange", "tab:orange": "#ff7f0e"},
}
BACKGROUND_SHADES: dict[str, dict[str, str]] = {
    "black": {"black": "black"},
    "gray": {"gray": "gray", "grey": "grey", "dimgray": "dimgray", "darkgray": "darkgray"},
    "navy": {"navy": "navy", "midnightblue": "midnightblue", "darkblue": "darkblue"},
}
# Largest channel difference, 0-255, between any shade and any background shade; the closest
# pair is rebeccapurple (102, 51, 153) on dimgray (105, 105, 105), 54.
MIN_CONTRAST = 50
CANONICAL_SHARE = 0.2  # share of styled samples drawn exactly as the canonical world
CANVAS_RANGE = (224, 512)  # canvas width and height in pixels
JPEG_QUALITY_RANGE = (70, 95)


@dataclass(frozen=True)
class DrawingStyle:
    """How one image is drawn: colours (a shade name or ``"world"``), canvas, edges, format."""

    colour_name: str
    colour_rgb: tuple[int, int, int]
    background_name: str
    background_rgb: tuple[int, int, int]
    width: int
    height: int
    smooth: bool  # anti-aliased (supersampled) edges; False: PIL's hard edges
    jpeg_quality: int | None  # None: saved as PNG (lossless)


def canonical_style(scene: Scene, size: int = 224) -> DrawingStyle:
    """The world's own drawing of ``scene``: its RGB values, square, smooth edges, lossless."""
    return DrawingStyle(
        "world",
        COLOUR_RGB[scene.colour],
        "world",
        BACKGROUND_RGB[scene.background],
        size,
        size,
        True,
        None,
    )


def sample_style(scene: Scene, rng: random.Random) -> DrawingStyle:
    """A drawing style for ``scene``: the canonical one with ``CANONICAL_SHARE``, else a named
    shade of each colour word, a canvas in ``CANVAS_RANGE`` (square half the time), hard or
    smooth edges, PNG or JPEG, each uniform."""
    if rng.random() < CANONICAL_SHARE:
        return canonical_style(scene)
    colour = rng.choice(sorted(COLOUR_SHADES[scene.colour].items()))
    background = rng.choice(sorted(BACKGROUND_SHADES[scene.background].items()))
    width = rng.randint(*CANVAS_RANGE)
    height = width if rng.random() < 0.5 else rng.randint(*CANVAS_RANGE)
    smooth = rng.random() < 0.5
    quality = rng.randint(*JPEG_QUALITY_RANGE) if rng.random() < 0.5 else None
    return DrawingStyle(
        colour[0],
        ImageColor.getrgb(colour[1]),
        background[0],
        ImageColor.getrgb(background[1]),
        width,
        height,
        smooth,
        quality,
    )


_POSITION_PHRASE: dict[str, str] = {
    "top left": "the top left corner",
    "top right": "the top right corner",
    "bottom left": "the bottom left corner",
    "bottom right": "the bottom right corner",
    "center": "the center",
}


@dataclass(frozen=True)
class Scene:
    """What one image shows; every field is a word from the matching vocabulary tuple."""

    colour: str
    shape: str
    size: str
    position: str
    background: str

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("colour", self.colour, COLOURS),
            ("shape", self.shape, SHAPES),
            ("size", self.size, SIZES),
            ("position", self.position, POSITIONS),
            ("background", self.background, BACKGROUNDS),
        ):
            if value not in allowed:
                raise ValueError(f"Scene.{field}={value!r} is not one of {allowed}")


@dataclass(frozen=True)
class Sample:
    """One generated example: the scene, its image and both caption styles."""

    index: int
    scene: Scene
    image: Image.Image
    short_caption: str
    long_description: str
    style: DrawingStyle


def sample_scene(rng: random.Random) -> Scene:
    """Draw a scene, each attribute uniform and independent."""
    return Scene(
        colour=rng.choice(COLOURS),
        shape=rng.choice(SHAPES),
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS),
        background=rng.choice(BACKGROUNDS),
    )


def _polygon(cx: float, cy: float, radii: list[float], angle0: float) -> list[tuple[float, float]]:
    """Vertices at evenly spaced angles (clockwise on screen) with the given radii."""
    n = len(radii)
    pts = []
    for i, r in enumerate(radii):
        a = angle0 + 2 * math.pi * i / n
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def render(
    scene: Scene,
    size: int = 224,
    rng: random.Random | None = None,
    style: DrawingStyle | None = None,
) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image, or as ``style`` says.

    With ``rng``, the shape's position (±3 % of the side), size (±10 %) and rotation (±20°) are
    jittered so that images of the same scene differ; without it the drawing is canonical.
    With ``style``, ``size`` is unused: the canvas is the style's, the shape's extent a fraction
    of its shorter side, the position a fraction of each side (as a user places it).
    """
    if size < 16:
        raise ValueError(f"render: image size {size} is too small (need at least 16 pixels)")
    style = style or canonical_style(scene, size)
    ss = _SUPERSAMPLE if style.smooth else 1
    w, h = style.width * ss, style.height * ss
    img = Image.new("RGB", (w, h), style.background_rgb)
    fx, fy = POSITION_XY[scene.position]
    extent = SIZE_FRACTION[scene.size]
    rotation = 0.0
    if rng is not None:
        fx += rng.uniform(-0.03, 0.03)
        fy += rng.uniform(-0.03, 0.03)
        extent *= rng.uniform(0.9, 1.1)
        rotation = math.radians(rng.uniform(-20.0, 20.0))
    _draw_shape(
        ImageDraw.Draw(img),
        scene.shape,
        fx * w,
        fy * h,
        extent * min(w, h) / 2,
        rotation,
        style.colour_rgb,
    )
    if ss != 1:
        img = img.resize((style.width, style.height), Image.Resampling.LANCZOS)
    if style.jpeg_quality is not None:
        img = Image.open(io.BytesIO(to_jpeg_bytes(img, style.jpeg_quality))).convert("RGB")
    return img


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    rotation: float,
    fill: tuple[int, int, int],
) -> None:
    """Fill ``shape`` centred at (cx, cy); ``r`` is the circle's radius, the others match it."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        # Same area as the circle: side = r * sqrt(pi); circumradius = side / sqrt(2).
        rr = r * math.sqrt(math.pi) / math.sqrt(2)
        draw.polygon(_polygon(cx, cy, [rr] * 4, rotation + math.pi / 4), fill=fill)
    elif shape == "triangle":
        # Point up; a bit smaller than the circle's area so that it stays inside the image.
        rr = r * 1.35
        draw.polygon(_polygon(cx, cy, [rr] * 3, rotation - math.pi / 2), fill=fill)
    elif shape == "star":
        radii = [r * 1.2, r * 0.5] * 5
        draw.polygon(_polygon(cx, cy, radii, rotation - math.pi / 2), fill=fill)
    else:  # unreachable: Scene validates its fields
        raise ValueError(f"unknown shape {shape!r}")


_SHORT_TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} in {pos} on a {bg} background",
    "a {colour} {shape} on a {bg} background",
    "a {size} {colour} {shape} in {pos} of the image",
    "a {bg} background with a {size} {colour} {shape} in {pos}",
    "a picture of a {colour} {shape} in {pos}",
)

_LONG_TEMPLATES: tuple[str, ...] = (
    "The image shows a {size} {colour} {shape} in {pos}. The background is plain {bg}. "
    "There is nothing else in the picture.",
    "In this picture there is a single {size} {colour} {shape}, located in {pos}. "
    "It sits on a plain {bg} background.",
    "A {size} {colour} {shape} appears in {pos} of the image. The rest of the image is a "
    "plain {bg} background with no other objects.",
    "This is a simple image of one {colour} {shape} on a {bg} background. The {shape} is {size} "
    "and is placed in {pos}. No other objects are visible.",
)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiou])")


def fix_articles(text: str) -> str:
    """ "a orange" -> "an orange" (the world's only vowel-initial words are colours and shapes)."""
    return _A_BEFORE_VOWEL.sub(r"\1n ", text)


def _fill(template: str, scene: Scene) -> str:
    text = template.format(
        size=scene.size,
        colour=scene.colour,
        shape=scene.shape,
        pos=_POSITION_PHRASE[scene.position],
        bg=scene.background,
    )
    return fix_articles(text)


def short_caption(scene: Scene, rng: random.Random | None = None) -> str:
    """Stage-1 caption (lower case, no final period); the first template when ``rng`` is None."""
    template = _SHORT_TEMPLATES[0] if rng is None else rng.choice(_SHORT_TEMPLATES)
    return _fill(template, scene)


def long_description(scene: Scene, rng: random.Random | None = None) -> str:
    """Stage-2 description, 2-3 sentences; the first template when ``rng`` is None."""
    template = _LONG_TEMPLATES[0] if rng is None else rng.choice(_LONG_TEMPLATES)
    return _fill(template, scene)


_WORD = re.compile(r"[a-z]+")
_SHAPE_FORMS: dict[str, str] = {**{s: s for s in SHAPES}, **{s + "s": s for s in SHAPES}}


def parse_answer(text: str) -> dict[str, str | None]:
    """The first colour word and the first shape word (plural accepted) in ``text``, or None."""
    colour: str | None = None
    shape: str | None = None
    for word in _WORD.findall(text.lower()):
        if colour is None and word in COLOURS:
            colour = word
        if shape is None and word in _SHAPE_FORMS:
            shape = _SHAPE_FORMS[word]
        if colour is not None and shape is not None:
            break
    return {"colour": colour, "shape": shape}


def scene_matches(scene: Scene, text: str) -> bool:
    """True when ``text`` names the scene's colour and shape (first of each found)."""
    parsed = parse_answer(text)
    return parsed["colour"] == scene.colour and parsed["shape"] == scene.shape


def sample_rng(seed: int, index: int) -> random.Random:
    """The generator of sample ``index`` for ``seed``: independent of how many samples precede it.

    Seeded with a string, which Python hashes with SHA-512 (not the per-process ``hash``), so it
    is stable across runs and machines.
    """
    return random.Random(f"shapes-world:{seed}:{index}")


def style_rng(seed: int, index: int) -> random.Random:
    """The generator of sample ``index``'s drawing style (apart from the scene's and captions')."""
    return random.Random(f"shapes-world-style:{seed}:{index}")


def make_sample(seed: int, index: int, size: int = 224, styled: bool = False) -> Sample:
    """Sample ``index`` of the world drawn with ``seed``: scene, jittered image, both captions.

    ``styled``: drawn in a style sampled for it (``sample_style``) on the style's canvas, then
    resized to ``size`` x ``size`` (bicubic) as the model's processors squash any image: so the
    training crops cannot cut a shape off a long canvas. The scene, jitter and captions stay the
    same as canonical.
    """
    rng = sample_rng(seed, index)
    scene = sample_scene(rng)
    style = sample_style(scene, style_rng(seed, index)) if styled else None
    image = render(scene, size=size, rng=rng, style=style)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return Sample(
        index=index,
        scene=scene,
        image=image,
        short_caption=short_caption(scene, rng),
        long_description=long_description(scene, rng),
        style=style or canonical_style(scene, size),
    )


def to_jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Encode as baseline JPEG with fixed settings, so equal pixels give equal bytes."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()


# --- yes/no questions: the world's benchmark (MME pairs, POPE objects) ---------------------------

YES_NO_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "position", "background")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": COLOURS,
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
    "background": BACKGROUNDS,
}
MME_SUFFIX = " Please answer yes or no."  # what every MME question ends with
YES, NO = "Yes", "No"

_YES_NO_TEMPLATES: dict[str, str] = {
    "colour": "Is there a {} shape in the image?",
    "shape": "Is there a {} in the image?",
    "size": "Is there a {} shape in the image?",
    "position": "Is the shape in {} of the image?",
    "background": "Is the background of the image {}?",
}


def yes_no_question(attribute: str, value: str) -> str:
    """ "Is there a red shape in the image?" (no suffix) for ``attribute`` = ``value``."""
    if value not in ATTRIBUTE_VALUES.get(attribute, ()):
        raise ValueError(f"yes_no_question: {value!r} is not a {attribute} of this world")
    if attribute == "position":
        value = _POSITION_PHRASE[value]
    return fix_articles(_YES_NO_TEMPLATES[attribute].format(value))


def question_rng(seed: int, index: int, kind: str) -> random.Random:
    """The generator of sample ``index``'s ``kind`` questions (independent of the image's)."""
    return random.Random(f"shapes-world-questions:{seed}:{index}:{kind}")


def question_pair(scene: Scene, attribute: str, rng: random.Random) -> list[tuple[str, str]]:
    """MME's pair for one image: [(question about the scene's value, "Yes"),
    (question about another value drawn with ``rng``, "No")], without the suffix."""
    truth = getattr(scene, attribute)
    other = rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != truth])
    return [(yes_no_question(attribute, truth), YES), (yes_no_question(attribute, other), NO)]

"""A held-out set of shapes drawn as a user draws them, and the tiny model's score on it.

    python tests/drawn_shapes.py [--seed 26] [--count 400] [--options model.ckpt=PATH]

The images are drawn here, directly with ``PIL.ImageDraw`` and named colour strings, by code that
shares nothing with the world's renderer (``tiny_world/world.py``) except the vocabulary and the
colour names it documents: a canvas of random width and height (224-512 each), ``ellipse`` for
circles, ``regular_polygon`` for squares and triangles, a 5-pointed ``polygon`` of random
sharpness for stars, hard edges or anti-aliased ones (drawn at 4x and box-filtered down), saved
as PNG or JPEG of random quality and opened again. Each is asked "Describe this image." in the
demo's conversation (``tiny_world.evaluate.describe``), greedily; an answer is right on colour +
shape when its first colour and shape words are the drawing's (``world.parse_answer``) and on
position when its first position phrase is.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tiny_world import world  # noqa: E402

DEFAULT_SEED = 26  # the training data uses the world's generator only, never this one
ANTI_ALIAS = 4  # supersampling factor of the anti-aliased drawings
CENTRE = {"left": 0.25, "right": 0.75, "top": 0.25, "bottom": 0.75}
JITTER = 0.04  # of each side
EXTENT = {"small": (0.14, 0.2), "large": (0.28, 0.36)}  # circle diameter / shorter side
_POSITION = re.compile(r"top left|top right|bottom left|bottom right|cent(?:er|re)")


@dataclass(frozen=True)
class Drawing:
    colour: str  # the world's colour word
    shape: str
    position: str
    size: str
    colour_name: str  # the named colour it was drawn with
    background_name: str
    image: Image.Image


def _centre(position: str, rng: random.Random) -> tuple[float, float]:
    if position == "center":
        fx = fy = 0.5
    else:
        vertical, horizontal = position.split()
        fx, fy = CENTRE[horizontal], CENTRE[vertical]
    return fx + rng.uniform(-JITTER, JITTER), fy + rng.uniform(-JITTER, JITTER)


def _star(cx: float, cy: float, r: float, inner: float, turn: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        angle = turn - math.pi / 2 + k * math.pi / 5
        radius = r if k % 2 == 0 else r * inner
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx, cy, d, fill, rng: random.Random) -> None:
    """``d``: the circle's diameter; the other shapes cover about the same area."""
    turn = rng.uniform(-15, 15)
    if shape == "circle":
        draw.ellipse((cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2), fill=fill)
    elif shape == "square":
        draw.regular_polygon((cx, cy, d * 0.62), 4, rotation=turn, fill=fill)
    elif shape == "triangle":
        draw.regular_polygon((cx, cy + d * 0.1, d * 0.68), 3, rotation=turn, fill=fill)
    else:
        draw.polygon(_star(cx, cy, d * 0.62, rng.uniform(0.38, 0.5), math.radians(turn)), fill=fill)


def draw_one(rng: random.Random) -> Drawing:
    colour, shape = rng.choice(world.COLOURS), rng.choice(world.SHAPES)
    position, size = rng.choice(world.POSITIONS), rng.choice(world.SIZES)
    colour_name = rng.choice(sorted(world.COLOUR_SHADES[colour].values()))
    background = rng.choice(world.BACKGROUNDS)
    background_name = rng.choice(sorted(world.BACKGROUND_SHADES[background].values()))
    width, height = rng.randint(224, 512), rng.randint(224, 512)
    scale = ANTI_ALIAS if rng.random() < 0.5 else 1
    image = Image.new("RGB", (width * scale, height * scale), background_name)
    fx, fy = _centre(position, rng)
    diameter = rng.uniform(*EXTENT[size]) * min(width, height) * scale
    _draw(
        ImageDraw.Draw(image),
        shape,
        fx * width * scale,
        fy * height * scale,
        diameter,
        colour_name,
        rng,
    )
    if scale != 1:
        image = image.resize((width, height), Image.Resampling.BOX)
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=rng.randint(70, 95))
    reopened = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return Drawing(colour, shape, position, size, colour_name, background_name, reopened)


def drawings(seed: int, count: int) -> list[Drawing]:
    rng = random.Random(f"drawn-shapes:{seed}")
    return [draw_one(rng) for _ in range(count)]


def first_position(text: str) -> str | None:
    found = _POSITION.search(text.lower())
    if found is None:
        return None
    return "center" if found.group().startswith("cent") else found.group()


def score(items: list[Drawing], answers: list[str]) -> dict[str, float]:
    """Shares of answers right on colour + shape, colour, shape and position."""
    hits = {"colour_shape": 0, "colour": 0, "shape": 0, "position": 0}
    for item, answer in zip(items, answers, strict=True):
        parsed = world.parse_answer(answer)
        hits["colour"] += parsed["colour"] == item.colour
        hits["shape"] += parsed["shape"] == item.shape
        hits["colour_shape"] += parsed == {"colour": item.colour, "shape": item.shape}
        hits["position"] += first_position(answer) == item.position
    return {k: v / len(items) for k, v in hits.items()}


def evaluate(chat, seed: int = DEFAULT_SEED, count: int = 200) -> tuple[dict, list, list]:
    from tiny_world.evaluate import describe

    items = drawings(seed, count)
    answers = describe(chat, [item.image for item in items])
    return score(items, answers), items, answers


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg-path", default="eval_configs/minigpt4_tiny_eval.yaml")
    parser.add_argument("--options", nargs="+", default=[])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--show-wrong", type=int, default=8, help="wrong answers to print")
    args = parser.parse_args(argv)
    from tiny_world.evaluate import build_chat

    result, items, answers = evaluate(
        build_chat(args.cfg_path, args.options), args.seed, args.count
    )
    wrong = [
        (item, answer)
        for item, answer in zip(items, answers, strict=True)
        if world.parse_answer(answer) != {"colour": item.colour, "shape": item.shape}
        or first_position(answer) != item.position
    ]
    for item, answer in wrong[: args.show_wrong]:
        print(
            f"{item.colour_name} {item.shape} {item.position} on {item.background_name} "
            f"{item.image.size}: {answer}"
        )
    print(" ".join(f"{k} {v:.3f}" for k, v in result.items()), f"on {args.count} drawings")
    return result


if __name__ == "__main__":
    main()

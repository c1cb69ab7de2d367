"""The shapes world: vocabulary, rendering, captions, answer parsing and determinism."""

import hashlib
import itertools
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from tiny_world import world
from tiny_world.world import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    long_description,
    make_sample,
    parse_answer,
    render,
    sample_scene,
    scene_matches,
    short_caption,
    to_jpeg_bytes,
)


def test_vocabulary_is_the_specified_one():
    assert COLOURS == ("red", "green", "blue", "yellow", "purple", "orange")
    assert SHAPES == ("circle", "square", "triangle", "star")
    assert SIZES == ("small", "large")
    assert POSITIONS == ("top left", "top right", "bottom left", "bottom right", "center")
    assert BACKGROUNDS == ("black", "gray", "navy")
    # Background words must never be read as the shape's colour.
    assert not set(BACKGROUNDS) & set(COLOURS)


def test_colours_are_far_apart_from_each_other_and_from_backgrounds():
    rgb = {**world.COLOUR_RGB, **{"bg-" + k: v for k, v in world.BACKGROUND_RGB.items()}}
    assert set(world.COLOUR_RGB) == set(COLOURS)
    assert set(world.BACKGROUND_RGB) == set(BACKGROUNDS)
    for (a, ca), (b, cb) in itertools.combinations(rgb.items(), 2):
        if a.startswith("bg-") and b.startswith("bg-"):
            continue
        dist = math.dist(ca, cb)
        assert dist > 80, f"{a} {ca} and {b} {cb} are too close ({dist:.0f})"


def test_scene_rejects_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match="colour"):
        Scene("pink", "circle", "small", "center", "navy")
    with pytest.raises(ValueError, match="position"):
        Scene("red", "circle", "small", "middle", "navy")


def test_sample_scene_covers_every_value_about_uniformly():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(6000)]
    for field, values in (
        ("colour", COLOURS),
        ("shape", SHAPES),
        ("size", SIZES),
        ("position", POSITIONS),
        ("background", BACKGROUNDS),
    ):
        counts = Counter(getattr(s, field) for s in scenes)
        expected = len(scenes) / len(values)
        assert set(counts) == set(values)
        for value in values:
            # Binomial sd is < sqrt(expected); 5 sd is far beyond chance.
            assert abs(counts[value] - expected) < 5 * math.sqrt(expected), (field, counts)


def _mask(img, background):
    """Pixels clearly different from the background colour."""
    arr = np.asarray(img).astype(np.int32)
    bg = np.array(world.BACKGROUND_RGB[background])
    return np.abs(arr - bg).sum(axis=2) > 60


@pytest.mark.parametrize("position", POSITIONS)
def test_canonical_render_puts_the_colour_at_the_position(position):
    scene = Scene("blue", "circle", "small", position, "navy")
    img = render(scene, size=200)
    assert img.mode == "RGB" and img.size == (200, 200)
    arr = np.asarray(img)
    expected_xy = {
        "top left": (0.25, 0.25),
        "top right": (0.75, 0.25),
        "bottom left": (0.25, 0.75),
        "bottom right": (0.75, 0.75),
        "center": (0.5, 0.5),
    }[position]
    mask = _mask(img, "navy")
    ys, xs = np.nonzero(mask)
    # The shape's centroid lies in the named region (within 6 % of the side).
    assert abs(xs.mean() / 200 - expected_xy[0]) < 0.06
    assert abs(ys.mean() / 200 - expected_xy[1]) < 0.06
    cy, cx = int(ys.mean()), int(xs.mean())
    assert np.abs(arr[cy, cx].astype(int) - world.COLOUR_RGB["blue"]).max() <= 3
    assert tuple(arr[0, 0]) == world.BACKGROUND_RGB["navy"]


def test_large_is_larger_than_small():
    areas = {}
    for size in SIZES:
        img = render(Scene("red", "square", size, "center", "black"), size=128)
        areas[size] = _mask(img, "black").sum()
    assert 3.0 < areas["large"] / areas["small"] < 5.0  # twice the side -> ~4x the area


def test_shapes_have_their_geometric_fill_ratio():
    """Area / bounding-box area: circle pi/4, square 1, triangle 1/2, star well below 1/2."""
    ratios = {}
    for shape in SHAPES:
        img = render(Scene("green", shape, "large", "center", "navy"), size=256)
        mask = _mask(img, "navy")
        ys, xs = np.nonzero(mask)
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        ratios[shape] = mask.sum() / box
    assert abs(ratios["circle"] - math.pi / 4) < 0.04
    assert ratios["square"] > 0.93
    assert abs(ratios["triangle"] - 0.5) < 0.05
    assert ratios["star"] < 0.45


def test_jittered_shapes_stay_inside_the_image_and_differ():
    seen = set()
    for i in range(60):
        sample = make_sample(3, i, size=96)
        mask = _mask(sample.image, sample.scene.background)
        assert mask.sum() > 0
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any(), f"sample {i} ({sample.scene}) touches the border"
        seen.add(hashlib.sha256(sample.image.tobytes()).hexdigest())
    assert len(seen) == 60
    # Same scene, different jitter -> different pixels.
    scene = Scene("red", "star", "large", "center", "gray")
    a = render(scene, 64, random.Random(1)).tobytes()
    b = render(scene, 64, random.Random(2)).tobytes()
    assert a != b


def _all_scenes():
    for c, sh, si, p, bg in itertools.product(COLOURS, SHAPES, SIZES, POSITIONS, BACKGROUNDS):
        yield Scene(c, sh, si, p, bg)


def test_short_captions_name_colour_then_shape_and_nothing_else():
    rng = random.Random(0)
    templates_seen = set()
    for scene in _all_scenes():
        for r in (None, rng):
            cap = short_caption(scene, r)
            templates_seen.add(cap)
            assert cap == cap.lower() and not cap.endswith(".")
            assert re.search(rf"\b(?:{scene.size} )?{scene.colour} {scene.shape}\b", cap), cap
            words = re.findall(r"[a-z]+", cap)
            assert [w for w in words if w in COLOURS] == [scene.colour]
            assert [w for w in words if w in SHAPES] == [scene.shape]
            assert "a orange" not in cap
    # Several templates are in use.
    one = Scene("red", "circle", "small", "center", "navy")
    assert len({short_caption(one, random.Random(i)) for i in range(50)}) >= 3
    assert short_caption(Scene("red", "circle", "large", "top left", "gray")) == (
        "a large red circle in the top left corner on a gray background"
    )


def test_long_descriptions_are_two_or_three_sentences_naming_every_attribute():
    rng = random.Random(1)
    for scene in _all_scenes():
        text = long_description(scene, rng)
        sentences = [s for s in re.split(r"(?<=\.)\s+", text) if s]
        assert 2 <= len(sentences) <= 3, text
        assert all(s[0].isupper() and s.endswith(".") for s in sentences), text
        for word in (scene.colour, scene.shape, scene.size, scene.background, scene.position):
            assert word in text, (word, text)
        assert parse_answer(text) == {"colour": scene.colour, "shape": scene.shape}
    assert long_description(Scene("red", "circle", "large", "top left", "gray")) == (
        "The image shows a large red circle in the top left corner. The background is plain "
        "gray. There is nothing else in the picture."
    )


@pytest.mark.parametrize(
    "text, colour, shape",
    [
        ("I see a Blue STAR.", "blue", "star"),
        ("There are two circles; they are red.", "red", "circle"),
        ("a red square and a green circle", "red", "square"),
        ("a gray background", None, None),
        ("The picture shows a triangle.", None, "triangle"),
        ("reddish starfish", None, None),  # whole words only
        ("", None, None),
    ],
)
def test_parse_answer(text, colour, shape):
    assert parse_answer(text) == {"colour": colour, "shape": shape}


def test_scene_matches_needs_both_colour_and_shape():
    scene = Scene("purple", "triangle", "small", "bottom left", "black")
    assert scene_matches(scene, "A small purple triangle in the bottom left corner.")
    assert not scene_matches(scene, "A purple circle.")
    assert not scene_matches(scene, "A green triangle.")
    assert not scene_matches(scene, "A triangle on a black background.")


def _digest(seed: int, count: int, size: int) -> str:
    h = hashlib.sha256()
    for i in range(count):
        s = make_sample(seed, i, size)
        h.update(to_jpeg_bytes(s.image))
        h.update(s.short_caption.encode())
        h.update(s.long_description.encode())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_samples_across_processes():
    here = _digest(5, 6, 64)
    assert here == _digest(5, 6, 64)
    assert here != _digest(6, 6, 64)
    # Another interpreter with a different hash seed must agree byte for byte.
    code = (
        "import hashlib, importlib.util, sys\n"
        # the file alone (as dataset/make_synthetic.py loads it): no torch import, fast
        f"spec = importlib.util.spec_from_file_location('w', {world.__file__!r})\n"
        "w = importlib.util.module_from_spec(spec)\n"
        "sys.modules['w'] = w\n"
        "spec.loader.exec_module(w)\n"
        "make_sample, to_jpeg_bytes = w.make_sample, w.to_jpeg_bytes\n"
        "h = hashlib.sha256()\n"
        "for i in range(6):\n"
        "    s = make_sample(5, i, 64)\n"
        "    h.update(to_jpeg_bytes(s.image))\n"
        "    h.update(s.short_caption.encode())\n"
        "    h.update(s.long_description.encode())\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == here


def test_yes_no_questions_name_one_value_each():
    scene = world.Scene("orange", "star", "large", "top left", "navy")
    assert world.yes_no_question("colour", "orange") == "Is there an orange shape in the image?"
    assert world.yes_no_question("shape", "circle") == "Is there a circle in the image?"
    assert world.yes_no_question("size", "small") == "Is there a small shape in the image?"
    assert (
        world.yes_no_question("position", "top left")
        == "Is the shape in the top left corner of the image?"
    )
    assert world.yes_no_question("background", "gray") == "Is the background of the image gray?"
    with pytest.raises(ValueError, match="'pink' is not a colour"):
        world.yes_no_question("colour", "pink")
    rng = random.Random(0)
    for attribute in world.YES_NO_ATTRIBUTES:
        values = world.ATTRIBUTE_VALUES[attribute]
        for _ in range(20):
            (yes_q, yes), (no_q, no) = world.question_pair(scene, attribute, rng)
            assert (yes, no) == ("Yes", "No")
            assert yes_q == world.yes_no_question(attribute, getattr(scene, attribute))
            assert no_q in {world.yes_no_question(attribute, v) for v in values} - {yes_q}
    negatives = Counter(world.question_pair(scene, "colour", rng)[1][0] for _ in range(400))
    assert len(negatives) == len(world.COLOURS) - 1  # every other colour, about equally often
    assert min(negatives.values()) > 400 / (len(world.COLOURS) - 1) / 2


# --- drawing styles -----------------------------------------------------------------------------


def _rgb(spec: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    return ImageColor.getrgb(spec)


def test_every_shade_stands_out_from_every_background_shade():
    assert set(world.COLOUR_SHADES) == set(COLOURS)
    assert set(world.BACKGROUND_SHADES) == set(BACKGROUNDS)
    for word, shades in world.COLOUR_SHADES.items():
        for name, spec in shades.items():
            for bg_word, bg_shades in world.BACKGROUND_SHADES.items():
                for bg_name, bg_spec in bg_shades.items():
                    contrast = max(abs(a - b) for a, b in zip(_rgb(spec), _rgb(bg_spec)))
                    assert contrast >= world.MIN_CONTRAST, (word, name, bg_word, bg_name)


def test_shades_of_different_colour_words_do_not_collide():
    """No two words share a shade, and every shade is far from all shades of other words
    (the closest pair is orange (255, 165, 0) and gold (255, 215, 0), 50 apart)."""
    shades = [
        (word, name, _rgb(spec))
        for word, named in {**world.COLOUR_SHADES, **world.BACKGROUND_SHADES}.items()
        for name, spec in named.items()
    ]
    for (w1, n1, c1), (w2, n2, c2) in itertools.combinations(shades, 2):
        if w1 != w2:
            assert math.dist(c1, c2) >= 45, (w1, n1, c1, w2, n2, c2)
    # PIL's own names for the words are among the shades (the names a user types first).
    for word in (*COLOURS, *BACKGROUNDS):
        named = {**world.COLOUR_SHADES, **world.BACKGROUND_SHADES}[word]
        assert named[word] == word


def test_styled_samples_keep_scene_and_captions_and_vary_the_drawing():
    styles = []
    for i in range(200):
        plain, styled = make_sample(11, i, 96), make_sample(11, i, 96, styled=True)
        assert styled.scene == plain.scene
        assert styled.short_caption == plain.short_caption
        assert styled.long_description == plain.long_description
        assert styled.image.size == (96, 96)  # squashed as the model's processors do
        styles.append(styled.style)
    assert make_sample(11, 3, 96, styled=True).image.tobytes() == (
        make_sample(11, 3, 96, styled=True).image.tobytes()
    )
    canonical = sum(s.colour_name == "world" for s in styles)
    assert 20 <= canonical <= 65  # CANONICAL_SHARE of 200 is 40
    drawn = [s for s in styles if s.colour_name != "world"]
    assert {s.smooth for s in drawn} == {True, False}
    assert None in {s.jpeg_quality for s in drawn} and len({s.jpeg_quality for s in drawn}) > 5
    assert sum(s.width != s.height for s in drawn) > len(drawn) / 4
    lo, hi = world.CANVAS_RANGE
    assert all(lo <= s.width <= hi and lo <= s.height <= hi for s in drawn)
    assert len({s.colour_name for s in drawn}) >= 20


@pytest.mark.parametrize("position", POSITIONS)
def test_a_styled_drawing_puts_its_shade_at_the_position(position):
    scene = Scene("green", "square", "large", position, "gray")
    style = world.DrawingStyle(
        "darkgreen", (0, 100, 0), "darkgray", (169, 169, 169), 480, 240, False, None
    )
    img = render(scene, style=style)
    assert img.size == (480, 240)
    arr = np.asarray(img).astype(int)
    assert tuple(arr[0, 0]) == (169, 169, 169)
    ys, xs = np.nonzero(np.abs(arr - (0, 100, 0)).max(axis=2) == 0)
    fx, fy = world.POSITION_XY[position]
    assert abs(xs.mean() / 480 - fx) < 0.02 and abs(ys.mean() / 240 - fy) < 0.02
    # Hard edges: only the two colours, nothing in between.
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) == 2

"""Reading an image, from anywhere, into the 8-bit RGB picture the processors expect.

Every place that reads an image (the ``cc_sbu_align`` dataset, the webdataset shards, the batch
command, the demo, the chat) goes through :func:`load_image`, so they all see the same pixels:

- High-bit-depth pixels are scaled, not clipped: PIL's own ``convert("RGB")`` turns a 16-bit
  greyscale PNG (mode ``I;16``) into an all-white picture. 16-bit and 32-bit integer modes are
  read as 16-bit data (65535 is white) unless they hold larger values, which then scale by
  their maximum; float images (mode ``F``) holding values up to 1.0 are taken as 0-1 intensities.
- Transparent pixels (RGBA, LA, palette images with transparency) are shown over white, as an
  image viewer shows them, instead of revealing whatever colour the transparent pixels store.
- The EXIF orientation is applied, as browsers and gradio do, so a phone photo is upright.
- Anything else (CMYK, YCbCr, palette, 1-bit...) goes through PIL's RGB conversion.

A file that is not an image, a truncated one, or one larger than :data:`MAX_IMAGE_PIXELS`
(a decompression bomb: a small file that decodes to gigabytes) raises :class:`ImageLoadError`,
which names the file and says why.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 100 megapixels: four times a 24-megapixel photo; decoded as RGB that is 300 MB already.
MAX_IMAGE_PIXELS = 100_000_000
WHITE = (255, 255, 255)
_SIXTEEN_BIT_MAX = 65535
_EIGHT_BIT_MAX = 255
_HIGH_BIT_MODES = ("I", "F")  # I;16, I;16B, I;16L, I;16N start with "I" too
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_EXIF_ORIENTATION = 0x0112


class ImageLoadError(ValueError):
    """An image that cannot be used; ``where`` names it, ``reason`` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def load_image(
    source: str | os.PathLike | IO[bytes] | bytes | Image.Image, name: str | None = None
) -> Image.Image:
    """The image at ``source`` (a path, a binary file object, bytes or a PIL image) as 8-bit RGB.

    ``name`` is what error messages call the image (default: the path).
    """
    if isinstance(source, Image.Image):
        return to_rgb(source, name or "image")
    where = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "image")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit; the check below refuses with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                check_size(img, where)
                img.load()
                rgb = to_rgb(img, where)
                # Closing ``img`` frees its pixels: what is returned must be another object.
                return rgb.copy() if rgb is img else rgb
    except Image.DecompressionBombError as err:
        pixels = _PIL_BOMB_PIXELS.search(str(err))
        raise ImageLoadError(where, _too_large(int(pixels.group(1)) if pixels else None)) from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(where, "not an image file (or a format Pillow cannot read)") from err
    except FileNotFoundError as err:
        raise ImageLoadError(where, "file not found") from err
    except OSError as err:
        raise ImageLoadError(where, f"cannot be decoded (truncated or corrupt?): {err}") from err


def check_size(img: Image.Image, where: str) -> None:
    """Refuse images above :data:`MAX_IMAGE_PIXELS` before their pixels are decoded."""
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageLoadError(where, _too_large(width * height, f"{width}x{height}"))


def _too_large(pixels: int | None, size: str | None = None) -> str:
    shown = f"{size} = {pixels / 1e6:.0f} megapixels" if size and pixels else None
    if shown is None:
        shown = f"{pixels / 1e6:.0f} megapixels" if pixels else "too many pixels"
    return (
        f"the image is too large ({shown}; at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
        "are read, a guard against decompression bombs): downscale it first"
    )


def to_rgb(img: Image.Image, where: str = "image") -> Image.Image:
    """8-bit RGB of a decoded PIL image (see the module docstring for each mode)."""
    check_size(img, where)
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith(_HIGH_BIT_MODES):
        return _high_bit_to_rgb(img)
    if img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _high_bit_to_rgb(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float64)
    top = float(pixels.max()) if pixels.size else 0.0
    if img.mode == "F" and top <= 1.0:
        scale = float(_EIGHT_BIT_MAX)
    elif top <= _SIXTEEN_BIT_MAX:
        scale = _EIGHT_BIT_MAX / _SIXTEEN_BIT_MAX
    else:
        scale = _EIGHT_BIT_MAX / top
    grey = np.clip(np.rint(pixels * scale), 0, _EIGHT_BIT_MAX).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")

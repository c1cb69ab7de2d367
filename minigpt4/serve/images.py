"""Images of a request: ``image_url`` parts as PIL images, with size limits.

An image comes as a ``data:image/...;base64,`` URL; ``http(s)`` URLs are fetched only when the
server was started with ``--allow-remote-images``; local paths and other schemes are never read
(a request must not make the server open its own files). Every refusal is a 400 naming the
parameter (``messages[0].content[1].image_url``).

More than :data:`MAX_IMAGE_BYTES` of encoded data is refused before decoding; decoding is the
project's image loader (:func:`minigpt4.processors.image_io.load_image`: any bit depth and mode
as 8-bit RGB, and images over its pixel limit, decompression bombs, refused before their pixels
are decoded).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.error
import urllib.request

from PIL import Image

from minigpt4.processors.image_io import MAX_IMAGE_PIXELS, ImageLoadError, load_image
from minigpt4.serve.errors import bad_request

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # encoded, per image (the OpenAI API's limit)
FETCH_TIMEOUT_S = 20
TOO_LARGE = "the image is too large"  # how the image loader's size refusals begin
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)", re.DOTALL)


def image_bytes(url: str, param: str, allow_remote: bool) -> bytes:
    """The encoded image a request's ``image_url.url`` names."""
    if url.startswith("data:"):
        return _data_url_bytes(url, param)
    if url.startswith(("http://", "https://")):
        if not allow_remote:
            raise bad_request(
                f"'{param}': remote image URLs are not fetched by this server (start it with "
                "--allow-remote-images to allow them); send the image as a "
                "data:image/...;base64, URL",
                param=param,
                code="remote_images_disabled",
            )
        return fetch(url, param)
    shown = url if len(url) <= 60 else url[:57] + "..."
    raise bad_request(
        f"'{param}': {shown!r} is not a data:image/...;base64, URL (nor, when allowed, an "
        "http(s) URL); the server never reads local files",
        param=param,
    )


def _data_url_bytes(url: str, param: str) -> bytes:
    match = _DATA_URL.fullmatch(url)
    if not match or not match["mime"].startswith("image/") or ";base64" not in match["params"]:
        raise bad_request(
            f"'{param}': a data URL must look like data:image/png;base64,<data> "
            f"(got {url[:40]!r}...)",
            param=param,
        )
    data = match["data"]
    if len(data) * 3 // 4 > MAX_IMAGE_BYTES:
        raise _too_large(param, f"{len(data) * 3 // 4 / 2**20:.1f} MiB")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise bad_request(f"'{param}': the image data is not valid base64 ({err})", param) from None


def fetch(url: str, param: str) -> bytes:
    """The bytes at an http(s) ``url``, at most :data:`MAX_IMAGE_BYTES`."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
            data = resp.read(MAX_IMAGE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise bad_request(f"'{param}': could not fetch {url}: {err}", param=param) from None
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(param, f"more than {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
    return data


def _too_large(param: str, size: str) -> Exception:
    return bad_request(
        f"'{param}': the image is too large ({size}; at most {MAX_IMAGE_BYTES / 2**20:.0f} MiB "
        f"and {MAX_IMAGE_PIXELS // 1_000_000} megapixels): downscale it first",
        param=param,
        code="image_too_large",
    )


def decode_image(data: bytes, param: str) -> Image.Image:
    """Decoded 8-bit RGB image of ``data`` through the project's image loader; an oversized or
    undecodable image is a 400 saying why."""
    try:
        return load_image(data, name=f"'{param}'")
    except ImageLoadError as err:
        too_large = err.reason.startswith(TOO_LARGE)
        raise bad_request(str(err), param, "image_too_large" if too_large else None) from None

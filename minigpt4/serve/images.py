"""Images of a request: ``image_url`` parts as PIL images, with size limits.

An image comes as a ``data:image/...;base64,`` URL; ``http(s)`` URLs are fetched only when the
server was started with ``--allow-remote-images``; local paths and other schemes are never read
(a request must not make the server open its own files). Every refusal is a 400 naming the
parameter (``messages[0].content[1].image_url``).

More than :data:`MAX_IMAGE_BYTES` of encoded data is refused before decoding; decoding is the
project's image loader (:func:`minigpt4.processors.image_io.load_image`: any bit depth and mode
as 8-bit RGB, and images over its pixel limit, decompression bombs, refused before their pixels
are decoded). A request's images together may decode to at most :data:`MAX_REQUEST_PIXELS`
pixels and :data:`MAX_REQUEST_DECODED_BYTES` bytes (:class:`ImageBudget`, read from each
header before anything is decoded): a small, highly compressed image can decode to gigabytes,
and the model sees every image at 224 pixels anyway.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import io
import re
import socket
import threading
import time
import urllib.parse

from PIL import Image

from minigpt4.processors.image_io import MAX_IMAGE_PIXELS, ImageLoadError, load_image
from minigpt4.serve.errors import bad_request

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # encoded, per image (the OpenAI API's limit)
MAX_REQUEST_PIXELS = 40_000_000  # decoded, all images of a request (e.g. five 8-MP photos)
MAX_REQUEST_DECODED_BYTES = 256 * 1024 * 1024
# Bytes per pixel of a decoded image by PIL mode (modes not listed: 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "RGB": 3, "YCbCr": 3}
FETCH_TIMEOUT_S = 20  # per network read
FETCH_DEADLINE_S = 30  # the whole fetch, redirects included
MAX_REDIRECTS = 3
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
    """The bytes at an http(s) ``url``: at most :data:`MAX_IMAGE_BYTES`, within
    :data:`FETCH_DEADLINE_S` in all (a host that sends a byte now and then is cut off; a
    per-read timeout alone would wait for it indefinitely), following up to
    :data:`MAX_REDIRECTS` redirects."""
    deadline = time.monotonic() + FETCH_DEADLINE_S
    try:
        for _ in range(MAX_REDIRECTS + 1):
            status, location, data = _fetch_once(url, deadline)
            if location is None:
                break
            url = urllib.parse.urljoin(url, location)
        else:
            raise OSError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise bad_request(
            f"'{param}': fetching {url} took longer than {FETCH_DEADLINE_S} s; send the image "
            "as a data:image/...;base64, URL",
            param=param,
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise bad_request(f"'{param}': could not fetch {url}: {err}", param=param) from None
    if status != 200:
        raise bad_request(f"'{param}': could not fetch {url}: HTTP {status}", param=param)
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(param, f"more than {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
    return data


def _fetch_once(url: str, deadline: float) -> tuple[int, str | None, bytes]:
    """(status, redirect location or None, body up to MAX_IMAGE_BYTES + 1) of one GET; the
    connection is shut at ``deadline`` whatever it is waiting for (TimeoutError)."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    conn = kind(parts.hostname, parts.port, timeout=min(left, FETCH_TIMEOUT_S))
    conn.connect()  # bounded by the per-read timeout, which is within the deadline
    sock = conn.sock  # kept: a response that closes the connection takes it from conn
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off)
    timer.start()
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target)
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("location"):
            return resp.status, resp.getheader("location"), b""
        body = bytearray()
        while len(body) <= MAX_IMAGE_BYTES and (piece := resp.read1(65536)):
            body += piece
        if expired.is_set():  # the shut socket reads as the end of the body
            raise TimeoutError
        return resp.status, None, bytes(body)
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
        conn.close()


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


class ImageBudget:
    """What one request's images may decode to, spent image by image from their headers."""

    def __init__(self) -> None:
        self.pixels = 0
        self.bytes = 0

    def spend(self, data: bytes, param: str) -> None:
        """Count the image in ``data``; a 400 once the request's images are over the limits.
        An image whose header cannot be read is left to the decoder to refuse."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height, mode = image.width, image.height, image.mode
        except (OSError, ValueError, Image.DecompressionBombError):
            return
        self.pixels += width * height
        self.bytes += width * height * max(_MODE_BYTES.get(mode, 4), 3)  # and its RGB copy
        if self.pixels > MAX_REQUEST_PIXELS or self.bytes > MAX_REQUEST_DECODED_BYTES:
            raise bad_request(
                f"'{param}': the request's images are too large together ({width}x{height} "
                f"{mode} brings them to {self.pixels / 1e6:.0f} megapixels, "
                f"{self.bytes / 2**20:.0f} MiB decoded; at most "
                f"{MAX_REQUEST_PIXELS // 1_000_000} megapixels and "
                f"{MAX_REQUEST_DECODED_BYTES // 2**20} MiB per request): downscale them first",
                param=param,
                code="image_too_large",
            )

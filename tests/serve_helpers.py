"""Building chat-completions requests in tests: images as data URLs, demo-style messages."""

from __future__ import annotations

import base64
import io

from PIL import Image

# In-process clients reach the app as a local one would: a server without an API key answers
# only requests whose Host is a loopback name.
LOCAL = "http://127.0.0.1"


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes | Image.Image, mime: str = "image/png") -> str:
    if isinstance(data, Image.Image):
        data = png_bytes(data)
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def user_with_image(url: str, text: str) -> dict:
    return {"role": "user", "content": [image_part(url), {"type": "text", "text": text}]}


def conversation(url: str, questions: list[str], answers: list[str]) -> list[dict]:
    """The demo's conversation as OpenAI messages: the image with the first question, then the
    answers so far and the next questions (``len(questions) == len(answers) + 1``)."""
    messages = [user_with_image(url, questions[0])]
    for answer, question in zip(answers, questions[1:]):
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": question},
        ]
    return messages

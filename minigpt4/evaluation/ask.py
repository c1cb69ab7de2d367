"""Put benchmark items to the model: each question in a fresh conversation, batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from minigpt4.evaluation.items import Item
from minigpt4.evaluation.runner import Asker
from minigpt4.processors.image_io import load_image

QUESTION_FIELD = "{question}"


def question_text(template: str, question: str) -> str:
    """``template`` with ``{question}`` replaced (other braces are left alone)."""
    return template.replace(QUESTION_FIELD, question)


def item_image(item: Item) -> Image.Image:
    """The item's image as 8-bit RGB (the project's one image loader), naming the item."""
    return load_image(item.image_path, name=f"item {item.id}: {item.image_path}")


def answer_batch(
    chat: Any,
    images: list[Image.Image],
    questions: list[str],
    settings: dict[str, Any],
    stop: Sequence[str] = (),
) -> list[str]:
    """The chat's answers, one fresh conversation per (image, question), in one batch: the one
    call that produces every answer of an evaluation (``settings``: GenerationSettings fields;
    ``stop``: strings that end an answer, left out of it)."""
    return chat.answer_batch(images, questions, stop=stop, **settings)


def make_asker(chat: Any, template: str, settings: dict[str, Any]) -> Asker:
    """A function answering a list of items with ``chat`` (``settings``: generation)."""

    def ask(items: Sequence[Item]) -> list[str]:
        images = [item_image(item) for item in items]
        questions = [question_text(template, item.question) for item in items]
        return answer_batch(chat, images, questions, settings)

    return ask

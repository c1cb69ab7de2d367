"""Put benchmark items to the model: each question in a fresh conversation, batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from minigpt4.evaluation.items import Item
from minigpt4.evaluation.runner import Asker

QUESTION_FIELD = "{question}"


def question_text(template: str, question: str) -> str:
    """``template`` with ``{question}`` replaced (other braces are left alone)."""
    return template.replace(QUESTION_FIELD, question)


def load_image(item: Item) -> Image.Image:
    try:
        with Image.open(item.image_path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise OSError(f"item {item.id}: cannot read image {item.image_path}: {err}") from err


def answer_batch(
    chat: Any, images: list[Image.Image], questions: list[str], settings: dict[str, Any]
) -> list[str]:
    """The chat's answers, one fresh conversation per (image, question): the one call that
    produces every answer of an evaluation."""
    if hasattr(chat, "answer_batch"):
        return chat.answer_batch(images, questions, **settings)
    # Until Chat.answer_batch lands (issue 12): the batch command's path, which batches
    # conversations of equal text, once per distinct question.
    from minigpt4.inference import answer_batch as same_question_batch

    answers = [""] * len(questions)
    settings = dict(settings)
    max_length = settings.pop("max_length", 2000)
    for question in dict.fromkeys(questions):
        rows = [i for i, q in enumerate(questions) if q == question]
        tensor = torch.stack([chat.vis_processor(images[i]) for i in rows])
        out = same_question_batch(chat, tensor, question, max_length=max_length, **settings)
        for i, text in zip(rows, out, strict=True):
            answers[i] = text
    return answers


def build_chat(cfg: Any, device: str | None = None, gpu_id: int = 0) -> Any:
    """The demo's ``Chat`` on the model of a loaded eval ``Config``, as demo.py builds it."""
    from minigpt4.conversation.conversation import Chat
    from minigpt4.conversation.loading import build_model_and_processor, resolve_device

    device = resolve_device(device, gpu_id)
    model, vis_processor = build_model_and_processor(cfg, device, gpu_id)
    return Chat(model, vis_processor, device=device)


def load_config(cfg_path: str, options: Sequence[str] | None = None) -> Any:
    import argparse

    import minigpt4  # noqa: F401  (registers models and processors)
    from minigpt4.common.config import Config

    return Config(argparse.Namespace(cfg_path=cfg_path, options=list(options or [])))


def make_asker(chat: Any, template: str, settings: dict[str, Any]) -> Asker:
    """A function answering a list of items with ``chat`` (``settings``: generation)."""

    def ask(items: Sequence[Item]) -> list[str]:
        images = [load_image(item) for item in items]
        questions = [question_text(template, item.question) for item in items]
        return answer_batch(chat, images, questions, settings)

    return ask

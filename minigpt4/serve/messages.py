"""An OpenAI ``messages`` list as the demo's conversation, built through the Chat.

The demo's conversation is: upload an image ("Upload & Start Chat"), ask, get an answer, ask
again... A request replays it: for each user message, its image (if any) is uploaded as
``chat.upload_img`` does it (``chat.process_image``, the image message; the batcher encodes)
and its text asked with ``chat.ask``; each assistant message is appended as the Chat stores an
answer. So the prompt string and the context embeddings are exactly the ones the Chat builds for
the same conversation.

Rules, each refused with a 400 naming the message:

- the first user message carries the image (the demo's "upload first"); a user message holds at
  most one image, placed before its text whatever the order of its parts (the only layout the
  model was trained on: ``<Img><ImageHere></Img> question``);
- user and assistant messages alternate, starting with a user message and ending with one (the
  question to answer); every user message has text;
- ``system`` (or ``developer``) messages, only before the first user message, replace the
  template's system text (joined by newlines); without one the template's own is kept;
- no text may hold ``<ImageHere>``, the placeholder the prompt puts each image in: in a
  message it would ask for an image that was never sent (and fail the batch it joined), so it
  is refused rather than silently changed; images come as ``image_url`` parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from minigpt4.conversation.templates import IMAGE_MESSAGE
from minigpt4.models.prompt import IMAGE_PLACEHOLDER
from minigpt4.serve.errors import bad_request
from minigpt4.serve.protocol import ImagePart, Message, TextPart

SYSTEM_ROLES = ("system", "developer")


@dataclass
class Turn:
    """One message of the conversation: ``role`` "user" or "assistant"; a user turn may carry
    the URL of its image (and, once fetched and decoded, the image)."""

    role: str
    text: str
    image_url: str | None = None
    image_param: str | None = None
    image: Image.Image | None = None


@dataclass
class Plan:
    system: str | None
    turns: list[Turn]


def _text_and_images(message: Message, where: str) -> tuple[str, list[tuple[str, str]]]:
    content = message.content
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            images.append((part.image_url.url, f"{where}.content[{j}].image_url"))
    return "\n".join(texts), images


def plan_conversation(messages: list[Message]) -> Plan:
    """Check ``messages`` against the rules above; nothing is decoded or encoded yet."""
    system: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        text, images = _text_and_images(message, where)
        if IMAGE_PLACEHOLDER in text:
            raise bad_request(
                f"'{where}': the text holds {IMAGE_PLACEHOLDER}, the placeholder the server puts "
                "images in; send images as image_url parts",
                param=f"{where}.content",
                code="placeholder_in_text",
            )
        if message.role in SYSTEM_ROLES:
            if turns:
                raise bad_request(
                    f"'{where}': a {message.role} message must come before the first user "
                    "message (it replaces the conversation's system text)",
                    param=where,
                )
            if images:
                raise bad_request(f"'{where}': a system message cannot hold an image", where)
            system.append(text)
            continue
        expected = "user" if not turns or turns[-1].role == "assistant" else "assistant"
        if message.role != expected:
            raise bad_request(
                f"'{where}': expected a {expected} message here: user and assistant messages "
                f"must alternate, starting with a user message (got {message.role})",
                param=f"{where}.role",
            )
        turns.append(_turn(message.role, text, images, where, first_user=not turns))
    if not turns or turns[-1].role != "user":
        raise bad_request(
            "'messages': the last message must be the user's question to answer",
            param="messages",
        )
    return Plan("\n".join(system) if system else None, turns)


def _turn(
    role: str, text: str, images: list[tuple[str, str]], where: str, first_user: bool
) -> Turn:
    if role == "assistant":
        if images:
            raise bad_request(f"'{where}': an assistant message cannot hold an image", where)
        return Turn(role, text)
    if len(images) > 1:
        raise bad_request(
            f"'{where}': {len(images)} images in one message; the model takes one image per "
            "user message (send the others in later turns, or ask about each separately)",
            param=images[1][1],
            code="too_many_images",
        )
    if first_user and not images:
        raise bad_request(
            f"'{where}': no image: the first user message must hold the image to talk about "
            "(an image_url part with a data:image/...;base64, URL)",
            param=f"{where}.content",
            code="image_required",
        )
    if not text.strip():
        raise bad_request(f"'{where}': the user message has no text (a question)", where)
    url, param = images[0] if images else (None, None)
    return Turn(role, text, url, param)


def build_conversation(chat: Any, plan: Plan) -> tuple[Any, list[torch.Tensor]]:
    """The Chat's conversation for ``plan`` (images decoded already), ending with the question
    to answer, and its processed images.

    An image turn is what ``chat.upload_img`` does, with the encoding left to the model's
    batched answer (which encodes the images of a whole batch at once): ``chat.process_image``,
    then the image message. The model builds the prompt when it answers.
    """
    conv = chat.new_conversation()
    if plan.system is not None:
        conv.system = plan.system
    pixels: list[torch.Tensor] = []
    for turn in plan.turns:
        if turn.role == "assistant":
            conv.append_message(conv.roles[1], turn.text)
            continue
        if turn.image is not None:
            pixels.append(chat.process_image(turn.image))
            conv.append_message(conv.roles[0], IMAGE_MESSAGE)
        chat.ask(turn.text, conv)
    return conv, pixels

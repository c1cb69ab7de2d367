"""Ask as the original MiniGPT-v2 evaluation scripts ask: batch prompts built by
``prepare_texts`` in the model's own chat template, answered by the model's batch
``generate(images, texts)`` (greedy by default), or multiple-choice candidates ranked by the
model's loss (``multi_select``).

Any model the evaluator loads works: the template is the chat's (for MiniGPT-v2
``CONV_VISION_minigptv2``, where ``prepare_texts`` writes exactly the original's
``<s>[INST] <Img><ImageHere></Img> {question} [/INST]``), and an answer is cut where the
template's next turn would begin, at the separator after an Assistant message (v1's ``###``;
MiniGPT-v2's is empty, its answers end at the end of sequence, so they are the original's
``generate`` answers unchanged). A model without ``multi_select`` ranks through its own
``forward`` loss with ``reduction="none"``: the original's ``multi_select`` written on the
model's public API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from minigpt4.common.eval_utils import prepare_texts
from minigpt4.conversation.templates import Conversation, SeparatorStyle
from minigpt4.evaluation.ask import item_image, question_text
from minigpt4.evaluation.items import Item
from minigpt4.evaluation.runner import Asker

PAD_CHOICE = "none"  # the original's filler for rows with fewer choices
PAD_LOSS = 9999  # the original's loss for a filler choice: never ranked first


def batch_images(chat: Any, items: Sequence[Item]) -> torch.Tensor:
    """The items' images through the chat's image processor, as one batch."""
    return torch.cat([chat.process_image(item_image(item)) for item in items])


def batch_prompts(chat: Any, template: str, items: Sequence[Item]) -> list[str]:
    """``prepare_texts`` of the items' questions in the chat's template."""
    questions = [question_text(template, item.question) for item in items]
    return prepare_texts(questions, chat.new_conversation())


def turn_end(conversation: Conversation) -> str:
    """What the template writes after an Assistant message ("" for none)."""
    if conversation.sep_style == SeparatorStyle.TWO:
        return conversation.sep2 or ""
    return conversation.sep


def cut_at_turn_end(text: str, end: str) -> str:
    """The answer before ``end`` (the whole answer when ``end`` is empty), stripped."""
    return (text.split(end)[0] if end else text).strip()


def generate_asker(chat: Any, template: str, settings: dict[str, Any]) -> Asker:
    """Answers by the model's batch ``generate`` (``settings``: the evaluator's generation)."""
    kwargs = {
        "max_new_tokens": settings["max_new_tokens"],
        "num_beams": settings["num_beams"],
        "do_sample": settings["do_sample"],
    }
    if settings["do_sample"]:
        kwargs.update(temperature=settings["temperature"], top_p=settings["top_p"])
    end = turn_end(chat.new_conversation())

    def ask(items: Sequence[Item]) -> list[str]:
        images = batch_images(chat, items)
        answers = chat.model.generate(images, batch_prompts(chat, template, items), **kwargs)
        return [cut_at_turn_end(a, end) for a in answers]

    return ask


@torch.no_grad()
def multi_select(
    model: Any,
    images: torch.Tensor,
    instructions: Sequence[str],
    candidates: Sequence[Sequence[str]],
    num_cand: Sequence[int] | None = None,
) -> list[list[int]]:
    """The original's ``multi_select``: ``candidates[k][i]`` is choice k of row i; each row's
    choice indices from the lowest loss up. The loss is ``forward``'s per-sample loss
    (``reduction="none"``); choices past ``num_cand[i]`` are fillers and rank last."""
    losses = []
    for answers in candidates:
        samples = {"image": images, "instruction_input": list(instructions), "answer": answers}
        losses.append(model.forward(samples, reduction="none")["loss"].reshape(-1, 1))
    table = torch.cat(losses, dim=-1)
    if num_cand is not None:
        for row, count in enumerate(num_cand):
            table[row, count:] = PAD_LOSS
    return torch.argsort(table, dim=-1).tolist()


def ranking_asker(chat: Any, template: str) -> Asker:
    """Answers a multiple-choice item (``extra["choices"]``) with its best-ranked choice."""
    select = getattr(chat.model, "multi_select", None)
    if select is None:

        def select(*args: Any, **kwargs: Any) -> list[list[int]]:
            return multi_select(chat.model, *args, **kwargs)

    def ask(items: Sequence[Item]) -> list[str]:
        choices = [list(item.extra["choices"]) for item in items]
        num_cand = [len(c) for c in choices]
        padded = [c + [PAD_CHOICE] * (max(num_cand) - len(c)) for c in choices]
        candidates = [list(column) for column in zip(*padded)]
        images = batch_images(chat, items)
        ranks = select(images, batch_prompts(chat, template, items), candidates, num_cand=num_cand)
        return [c[r[0]] for c, r in zip(choices, ranks, strict=True)]

    return ask

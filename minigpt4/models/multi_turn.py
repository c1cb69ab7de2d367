"""Training on multi-turn conversations (MiniGPT-v2's conversation datasets), as the original.

A conversation sample carries ``conv_q`` and ``conv_a``: the questions and the answers of every
turn joined by ``connect_sym`` (the datasets use ``!@#``). Every question is formatted into the
model's ``prompt_template``; the first one becomes the prompt around the image (as an instruction
would), and the text to learn is ``answer_1 </s> <s> question_2 answer_2 </s> ...``: each later
question is tokenized as ``"<s>" + question`` (no label), each answer as ``answer + end_sym``
(labelled).

Rows are right-padded with the pad id; as in the original, the attention mask is ``id != pad``
(a pad piece inside an answer is not attended to but stays a label) and rows longer than
``max_txt_len`` are cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from minigpt4.models.prompt import IGNORE_INDEX
from minigpt4.models.tokenizer_base import Tokenizer

CONVERSATION_KEYS = ("conv_q", "conv_a", "connect_sym")


def is_conversation(samples: Mapping[str, Any]) -> bool:
    """Whether ``samples`` is a batch of multi-turn conversations."""
    return "conv_q" in samples


def split_turns(
    samples: Mapping[str, Any], prompt_template: str
) -> tuple[list[list[str]], list[list[str]]]:
    """Per sample: its questions (formatted into ``prompt_template``) and its answers."""
    missing = [k for k in CONVERSATION_KEYS if k not in samples]
    if missing:
        raise ValueError(f"a conversation batch needs {list(CONVERSATION_KEYS)}; {missing} missing")
    sym = samples["connect_sym"][0]
    template = prompt_template or "{}"
    questions = [[template.format(q) for q in text.split(sym)] for text in samples["conv_q"]]
    answers = [text.split(sym) for text in samples["conv_a"]]
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        if len(q) != len(a):
            raise ValueError(
                f"conversation {i} has {len(q)} questions but {len(a)} answers (split at {sym!r})"
            )
    return questions, answers


def _turn_ids(
    tokenizer: Tokenizer, questions: Sequence[str], answers: Sequence[str], end_sym: str
) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for i, answer in enumerate(answers):
        if i:
            question = tokenizer.encode(tokenizer.bos_token + questions[i])
            ids += question
            labels += [IGNORE_INDEX] * len(question)
        answer_ids = tokenizer.encode(answer + end_sym)
        ids += answer_ids
        labels += answer_ids
    return ids, labels


def conversation_targets(
    tokenizer: Tokenizer,
    questions: Sequence[Sequence[str]],
    answers: Sequence[Sequence[str]],
    end_sym: str,
    max_txt_len: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and labels [B, T] of the text after each conversation's prompt."""
    rows = [_turn_ids(tokenizer, q, a, end_sym) for q, a in zip(questions, answers, strict=True)]
    width = min(max(len(ids) for ids, _ in rows), max_txt_len)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        n = min(len(row_ids), width)
        ids[i, :n] = torch.tensor(row_ids[:n])
        labels[i, :n] = torch.tensor(row_labels[:n])
    mask = (ids != pad).long()
    return ids.to(device), mask.to(device), labels.to(device)

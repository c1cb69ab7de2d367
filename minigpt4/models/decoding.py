"""The decoding loop of every answer that is not a beam search: one forward pass per token
through the LLM's own ``forward`` with a KV cache, each row choosing its next token itself.

It replaces transformers' ``generate`` for greedy and sampled answers because at the sizes where
a token is cheap (the tiny models, short answers of small LLMs) ``generate``'s per-token
bookkeeping costs as much as the forward pass: on the tiny LLaMA 32 greedy tokens take 51 ms
through ``generate`` and 26 ms through the same forward in this loop. It computes what
``generate`` computes for these answers: the same inputs (position ids from the left padding,
the attention mask dropped when nothing is padded, logits of the last position only), scores in
fp32, then in transformers' order the repetition penalty on the generated tokens, the minimum
length (end-of-sequence barred) and the suppressed ids, and then each row's choice. Unlike
``generate``, every setting is the row's own, so rows with different penalties or minimum
lengths are generated together.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import DynamicCache, StoppingCriteria


class ScoreRules:
    """What is done to the next-token scores before a row chooses (transformers' order), with
    each row's own repetition penalty and minimum length."""

    def __init__(
        self,
        repetition_penalty: Sequence[float],
        min_new_tokens: Sequence[int],
        end_ids: int | Sequence[int] | None,
        suppressed_from: int | None,
    ) -> None:
        """Per row: ``repetition_penalty`` and ``min_new_tokens`` (below it, ``end_ids``, the
        end-of-sequence id(s), are barred); ``suppressed_from``: ids from this one on are never
        chosen (None: none barred)."""
        self.penalty = torch.tensor(repetition_penalty, dtype=torch.float32)[:, None]
        self.penalised = bool(self.penalty.ne(1.0).any())
        self.min_new_tokens = torch.tensor(min_new_tokens)
        self.end_ids = _id_list(end_ids)
        self.suppressed_from = suppressed_from

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``ids``: the tokens generated so far [B, n]; ``scores``: [B, V] fp32."""
        if self.penalised and ids.shape[1]:
            penalty = self.penalty.to(scores.device)
            picked = scores.gather(1, ids)
            picked = torch.where(picked < 0, picked * penalty, picked / penalty)
            scores = scores.scatter(1, ids, picked)
        short = self.min_new_tokens > ids.shape[1]  # on the CPU: no device sync
        if self.end_ids and bool(short.any()):
            barred = short.to(scores.device)[:, None]
            scores = scores.clone()
            scores[:, self.end_ids] = scores[:, self.end_ids].masked_fill(barred, float("-inf"))
        if self.suppressed_from is not None and self.suppressed_from < scores.shape[1]:
            scores = scores.clone()
            scores[:, self.suppressed_from :] = float("-inf")
        return scores


def _id_list(ids: int | Sequence[int] | None) -> list[int]:
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def _keeps_logits(llm: nn.Module) -> bool:
    """Whether the LLM (under a peft wrapper, its base model) can compute the last position's
    logits only, as ``generate`` asks it to."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def decode(
    llm: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    rules: ScoreRules,
    choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    stops: Sequence[StoppingCriteria],
    on_tokens: Callable[[torch.Tensor], None] | None,
    pad_token_id: int,
) -> torch.Tensor:
    """The generated ids [B, n] (n <= ``max_new_tokens``) for left-padded context ``embeds``
    [B, L, H] with its ``mask`` [B, L]. Each step ``choose(ids, scores)`` gives the rows' tokens,
    ``stops`` (called as transformers calls stopping criteria) finish rows, whose later tokens
    are ``pad_token_id``; ``on_tokens`` receives each step's tokens [B] after the stop checks.
    The loop ends when every row is finished."""
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    attention = None if bool(mask.all()) else mask
    inputs: dict = {"inputs_embeds": embeds}
    if _keeps_logits(llm):
        inputs["logits_to_keep"] = 1
    cache = DynamicCache(config=llm.config)
    ids = mask.new_empty((mask.shape[0], 0))
    unfinished = torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)
    for _ in range(max_new_tokens):
        out = llm(
            **inputs, attention_mask=attention, position_ids=positions, cache=cache, use_cache=True
        )
        scores = out.logits[:, -1].to(dtype=torch.float32, copy=True)
        del out
        tokens = choose(ids, rules(ids, scores)).where(unfinished, pad_token_id)
        ids = torch.cat([ids, tokens[:, None]], dim=1)
        for stop in stops:
            unfinished &= ~torch.as_tensor(stop(ids, None), device=ids.device)
        if on_tokens is not None:
            on_tokens(tokens)
        if not unfinished.any():
            break
        inputs.pop("inputs_embeds", None)
        inputs["input_ids"] = tokens[:, None]
        positions = positions[:, -1:] + 1
        if attention is not None:
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], 1)
    return ids

"""Prompt assembly: text with image placeholders + image embeddings -> LLM inputs.

Two uses, one set of rules (the original's):

- generation (the chat): :func:`context_embeddings` splits the prompt at each ``<ImageHere>``,
  tokenizes the text segments (BOS on the first one only), embeds them and puts each image's
  embeddings in place of its placeholder;
- training: :func:`wrap_prompts` builds ``prompt before + image + prompt after`` per sample
  (no BOS; rows with shorter prompts are right-padded with the pad token's embedding and
  masked), then :func:`training_inputs` lays out each row as
  ``[BOS][prompt][answer + end_sym, right-padded][prompt padding]`` with labels on the answer
  only. With one prompt for the whole batch (MiniGPT-4 v1 always) there is no prompt padding and
  this is exactly v1's ``[BOS][prompt][answer][padding]``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import torch

from minigpt4.common.utils import resolve_path
from minigpt4.models.tokenizer_base import Tokenizer

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<ImageHere>"
IGNORE_INDEX = -100

Embed = Callable[[torch.Tensor], torch.Tensor]  # token ids [..., T] -> embeddings [..., T, H]


def segment_ids(tokenizer: Tokenizer, prompt: str) -> list[list[int]]:
    """Token ids of the text around each image placeholder; BOS (if the tokenizer has one)
    starts the first segment only."""
    segments = prompt.split(IMAGE_PLACEHOLDER)
    return [tokenizer.encode(seg, add_bos=(i == 0)) for i, seg in enumerate(segments)]


def check_image_count(seg_ids: Sequence[Sequence[int]], images: int) -> None:
    """A prompt of ``seg_ids`` (:func:`segment_ids`) has a placeholder for each of ``images``."""
    if len(seg_ids) != images + 1:
        raise ValueError(
            f"the conversation has {len(seg_ids) - 1} image placeholders but "
            f"{images} images were uploaded"
        )


def _embed_ids(embed: Embed, ids: Sequence[int], device: torch.device) -> torch.Tensor:
    return embed(torch.tensor([list(ids)], dtype=torch.long, device=device))


def context_embeddings(
    tokenizer: Tokenizer, embed: Embed, prompt: str, images: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Embeddings [1, L, H] of ``prompt`` with ``images[i]`` ([1, Q, H]) at placeholder i."""
    seg_ids = segment_ids(tokenizer, prompt)
    check_image_count(seg_ids, len(images))
    device = images[0].device if images else torch.device("cpu")
    segments = [_embed_ids(embed, ids, device) for ids in seg_ids]
    mixed: list[torch.Tensor] = []
    for seg, image in zip(segments[:-1], images):
        mixed += [seg, image.to(dtype=seg.dtype)]
    mixed.append(segments[-1])
    return torch.cat(mixed, dim=1)


def _split_once(prompt: str) -> tuple[str, str]:
    parts = prompt.split(IMAGE_PLACEHOLDER)
    if len(parts) != 2:
        raise ValueError(f"a prompt must contain {IMAGE_PLACEHOLDER} exactly once; got {prompt!r}")
    return parts[0], parts[1]


def wrap_prompts(
    tokenizer: Tokenizer,
    embed: Embed,
    img_embeds: torch.Tensor,
    prompts: Sequence[str],
    max_context_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's prompt around its image: embeddings [B, L, H] and mask [B, L] (long).

    Rows are right-padded to the longest with the pad token's embedding; ``max_context_len``
    cuts every row (the LLaMA-2 model's 3800).
    """
    device = img_embeds.device
    rows = []
    for image, prompt in zip(img_embeds, prompts, strict=True):
        before, after = _split_once(prompt)
        rows.append(
            torch.cat(
                [
                    _embed_ids(embed, tokenizer.encode(before), device)[0],
                    image,
                    _embed_ids(embed, tokenizer.encode(after), device)[0],
                ]
            )
        )
    return _right_pad(rows, tokenizer, embed, max_context_len)


def wrap_text_prompts(
    tokenizer: Tokenizer,
    embed: Embed,
    prompts: Sequence[str],
    device: torch.device,
    max_context_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`wrap_prompts` of a batch without images (MiniGPT-v2's text-only instructions):
    each prompt's tokens, no BOS, right-padded as the original's ``prompt_wrap`` does."""
    rows = [_embed_ids(embed, tokenizer.encode(prompt), device)[0] for prompt in prompts]
    return _right_pad(rows, tokenizer, embed, max_context_len)


def _right_pad(
    rows: list[torch.Tensor], tokenizer: Tokenizer, embed: Embed, max_context_len: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [L_i, H] as [B, L, H] right-padded with the pad token's embedding, and the mask."""
    device = rows[0].device
    width = max(r.shape[0] for r in rows)
    if max_context_len is not None:
        width = min(width, max_context_len)
    pad = _embed_ids(embed, [tokenizer.pad_token_id], device)[0, 0]
    embeds = pad.expand(len(rows), width, -1).clone()
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        n = min(row.shape[0], width)
        embeds[i, :n] = row[:n]
        mask[i, :n] = 1
    return embeds, mask


def training_inputs(
    cond: torch.Tensor,
    cond_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    embed: Embed,
    bos_id: int | None,
    pad_id: int,
    targets: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``inputs_embeds``, ``attention_mask`` and ``labels`` of the training forward.

    Per row: [BOS][prompt (cond_mask ones)][answer ids, right-padded][prompt padding]; labels are
    ``targets`` where given (conversations), else the answer ids except pad ids, -100 everywhere
    else. ``bos_id`` None (a tokenizer without BOS, e.g. Qwen): the row starts with the prompt.
    """
    device = cond.device
    answer_embeds = embed(answer_ids)
    if targets is None:
        targets = answer_ids.masked_fill(answer_ids == pad_id, IGNORE_INDEX)
    bos = [] if bos_id is None else [bos_id]
    bos_embed = _embed_ids(embed, bos, device)[0]
    one = torch.ones(len(bos), dtype=cond_mask.dtype, device=device)
    embeds, masks, labels = [], [], []
    for i in range(cond.shape[0]):
        n = int(cond_mask[i].sum())
        rest = cond.shape[1] - n
        embeds.append(torch.cat([bos_embed, cond[i, :n], answer_embeds[i], cond[i, n:]]))
        masks.append(torch.cat([one, cond_mask[i, :n], answer_mask[i], cond_mask[i, n:]]))
        ignored = torch.full((len(bos) + n,), IGNORE_INDEX, dtype=torch.long, device=device)
        tail = torch.full((rest,), IGNORE_INDEX, dtype=torch.long, device=device)
        labels.append(torch.cat([ignored, targets[i], tail]))
    return {
        "inputs_embeds": torch.stack(embeds),
        "attention_mask": torch.stack(masks),
        "labels": torch.stack(labels),
    }


def load_prompts(prompt_path: str, prompt_template: str) -> list[str]:
    """Lines of ``prompt_path`` containing ``<ImageHere>``, each formatted into the template."""
    path = resolve_path(prompt_path)
    with open(path, encoding="utf-8") as f:
        raw_prompts = f.read().splitlines()
    filtered = [p for p in raw_prompts if IMAGE_PLACEHOLDER in p]
    if not filtered:
        raise ValueError(f"{path} (model.prompt_path) has no line containing {IMAGE_PLACEHOLDER}")
    prompt_list = [prompt_template.format(p) for p in filtered]
    logger.info("Load %d training prompts", len(prompt_list))
    logger.info("Prompt Example \n%s", random.choice(prompt_list))
    return prompt_list

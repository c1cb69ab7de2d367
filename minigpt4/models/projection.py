"""From ViT features to LLM input tokens: the two image-token paths of MiniGPT-4.

- ``has_qformer: True`` (MiniGPT-4 v1): the Q-Former's learned queries attend to all ViT tokens;
  its ``num_query_token`` outputs (768 wide) go through ``llama_proj``.
- ``has_qformer: False`` (MiniGPT-4 LLaMA-2): the CLS token is dropped and every 4 consecutive
  patch tokens (in row order, so 4 horizontal neighbours) are concatenated into one token:
  256 patches of 1408 become 64 tokens of 5632, which go through ``llama_proj``.
"""

from __future__ import annotations

import torch
from torch import nn

NEIGHBOURS = 4  # patch tokens concatenated into one image token without a Q-Former


def qformer_queries(
    qformer: nn.Module, query_tokens: torch.Tensor, image_embeds: torch.Tensor
) -> torch.Tensor:
    """Q-Former outputs [B, Q, D] for ViT features [B, N, W] (after ``ln_vision``)."""
    image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    out = qformer(
        query_embeds=query_tokens.expand(image_embeds.shape[0], -1, -1),
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_atts,
        return_dict=True,
    )
    return out.last_hidden_state


def grouped_patches(image_embeds: torch.Tensor) -> torch.Tensor:
    """ViT features [B, 1 + N, W] -> [B, N / 4, 4 W]: CLS dropped, 4 neighbours concatenated."""
    patches = image_embeds[:, 1:, :]
    batch, count, width = patches.shape
    if count % NEIGHBOURS:
        raise ValueError(
            f"{count} patch tokens cannot be grouped by {NEIGHBOURS} (has_qformer: False needs a "
            "patch count divisible by 4, e.g. 224 px images with 14 px patches)"
        )
    return patches.reshape(batch, count // NEIGHBOURS, width * NEIGHBOURS)


def image_feature_width(has_qformer: bool, vit_width: int, qformer_width: int) -> int:
    """Input width of ``llama_proj``."""
    return qformer_width if has_qformer else vit_width * NEIGHBOURS


def image_token_count(has_qformer: bool, num_query_token: int, num_patches: int) -> int:
    """How many LLM input tokens one image becomes."""
    return num_query_token if has_qformer else num_patches // NEIGHBOURS

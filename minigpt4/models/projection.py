"""From ViT features to LLM input tokens: the image-to-token adapter, chosen by configuration.

``model.image_adapter`` names it (the original's ``has_qformer: True`` / ``False`` still works and
maps to ``qformer`` / ``group``):

- ``qformer`` (MiniGPT-4 v1, Vicuna v0): the Q-Former's learned queries attend to all ViT tokens;
  its ``num_query_token`` outputs (768 wide) go through ``llama_proj``.
- ``group`` (MiniGPT-4 LLaMA-2, MiniGPT-v2): the CLS token is dropped and every
  ``model.group_size`` (4) consecutive patch tokens (in row order, so horizontal neighbours) are
  concatenated into one token: at 224 px 256 patches of 1408 become 64 tokens of 5632, at 448 px
  1024 patches become 256 tokens.

An adapter builds its modules on the model under the original's names (``Qformer`` and
``query_tokens`` at the top, so every checkpoint keeps its keys), says how wide its tokens are and
how many an image gives, which weight files and trainable parts it adds, and loads its weights.
The model, the loader, the trainable parts and the memory estimate ask it; none of them branches
on the kind.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

NEIGHBOURS = 4  # the original's group size: patch tokens concatenated into one image token
ADAPTER_NAMES = ("qformer", "group")
QFORMER_PARTS = ("Qformer", "query_tokens")  # what freeze_qformer: False trains


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


def grouped_patches(image_embeds: torch.Tensor, group_size: int = NEIGHBOURS) -> torch.Tensor:
    """ViT features [B, 1 + N, W] -> [B, N / g, g W]: CLS dropped, g neighbours concatenated."""
    patches = image_embeds[:, 1:, :]
    batch, count, width = patches.shape
    if count % group_size:
        raise ValueError(
            f"{count} patch tokens cannot be grouped by {group_size} (model.image_adapter: group "
            f"needs a patch count divisible by model.group_size; change model.image_size or "
            "model.group_size)"
        )
    return patches.reshape(batch, count // group_size, width * group_size)


class QFormerAdapter:
    """BLIP-2's Q-Former and its learned queries (weights: ``model.q_former_model``)."""

    name = "qformer"

    def build(self, model: nn.Module, config: Any) -> int:
        """Add ``Qformer`` and ``query_tokens`` to ``model``; return the token width."""
        from minigpt4.models.qformer import build_qformer

        qcfg = config.qformer_config
        model.Qformer = build_qformer(qcfg, config.vit_config.embed_dim)
        model.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_token, qcfg.hidden_size))
        model.query_tokens.data.normal_(mean=0.0, std=0.02)  # BLIP-2's init
        return qcfg.hidden_size

    def features(self, model: nn.Module, image_embeds: torch.Tensor) -> torch.Tensor:
        return qformer_queries(model.Qformer, model.query_tokens, image_embeds)

    def tokens_per_image(self, config: Any) -> int:
        return config.num_query_token

    def weight_files(self, config: Any) -> list[tuple[str, str]]:
        """``(config key, configured value)`` of the files this adapter loads."""
        return [("model.q_former_model", config.q_former_model)]

    def trainable_parts(self, config: Any) -> tuple[str, ...]:
        return () if config.freeze_qformer else QFORMER_PARTS

    def load(self, model: nn.Module, config: Any, fetch_file) -> None:
        """Load the Q-Former file (``fetch_file(config_key, value)`` gives its local path)."""
        from minigpt4.models.loading.parts import load_blip2

        logger.info("Loading Q-Former")
        path = fetch_file("model.q_former_model", config.q_former_model)
        model.load_report["model.q_former_model"] = load_blip2(model, path)
        if config.freeze_qformer:
            logger.info("freeze Qformer")
        logger.info("Loading Q-Former Done")


class GroupAdapter:
    """``group_size`` consecutive patch tokens concatenated (no weights of its own)."""

    name = "group"

    def __init__(self, group_size: int = NEIGHBOURS) -> None:
        self.group_size = group_size

    def build(self, model: nn.Module, config: Any) -> int:
        return config.vit_config.embed_dim * self.group_size

    def features(self, model: nn.Module, image_embeds: torch.Tensor) -> torch.Tensor:
        return grouped_patches(image_embeds, self.group_size)

    def tokens_per_image(self, config: Any) -> int:
        return config.vit_config.num_patches // self.group_size

    def weight_files(self, config: Any) -> list[tuple[str, str]]:
        return []

    def trainable_parts(self, config: Any) -> tuple[str, ...]:
        return ()

    def load(self, model: nn.Module, config: Any, fetch_file) -> None:
        logger.info("Do not use Q-Former here.")


def make_adapter(name: str, group_size: int) -> QFormerAdapter | GroupAdapter:
    """The adapter named by ``model.image_adapter``."""
    if name == "qformer":
        return QFormerAdapter()
    if name == "group":
        return GroupAdapter(group_size)
    raise ValueError(f"model.image_adapter must be one of {list(ADAPTER_NAMES)}; got {name!r}")

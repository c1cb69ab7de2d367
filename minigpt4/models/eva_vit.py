"""EVA ViT-g as BLIP-2 / MiniGPT-4 use it, built from timm's maintained ``Eva``.

BLIP-2 keeps 39 of EVA-CLIP-g's 40 blocks and returns every token of the last one (CLS + patches)
without a final norm; its LayerNorms use eps 1e-6. timm's ``Eva`` computes the same thing when
built with these settings, and its parameter names are the LAVIS ones, so ``eva_vit_g.pth`` loads
into it as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
from timm.models.eva import Eva, EvaAttention
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaVitConfig:
    """Sizes of the EVA ViT; the defaults are EVA ViT-g as BLIP-2 uses it."""

    img_size: int = 224
    patch_size: int = 14
    embed_dim: int = 1408
    depth: int = 39
    num_heads: int = 16  # 1408 // 88: head width 88
    mlp_ratio: float = 4.3637  # int(1408 * 4.3637) = 6144

    @classmethod
    def from_dict(cls, values: Mapping | None, img_size: int | None = None) -> EvaVitConfig:
        """Defaults overridden by ``values`` (model key ``vit_config``); unknown keys: error."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"model.vit_config: unknown key(s) {unknown}; allowed keys are {sorted(known)}"
            )
        if img_size is not None and values.setdefault("img_size", img_size) != img_size:
            # vit_config is the more specific key (test / variant sizes); say which one won.
            logger.warning(
                "model.vit_config.img_size (%s) overrides model.image_size (%s)",
                values["img_size"],
                img_size,
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2


class EvaViT(Eva):
    """timm ``Eva`` returning the tokens of the last block (no norm, no pooling, no head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def init_weights(self, needs_reset: bool = True) -> None:
        """timm's random init, skipped on the meta device (``MiniGPT4.build_empty`` and the
        memory check build there): it computes no value there, yet torch's meta kernels made it
        most of the build (0.9 s for ViT-g, 6x a tiny ViT's build on the CPU)."""
        if self.patch_embed.proj.weight.is_meta:
            return
        super().init_weights(needs_reset=needs_reset)


def create_eva_vit_g(
    config: EvaVitConfig | None = None,
    drop_path_rate: float = 0.0,
    use_checkpoint: bool = False,
) -> EvaViT:
    """A randomly initialised EVA ViT (weights: ``minigpt4.models.loading.parts.load_eva_vit``)."""
    config = config or EvaVitConfig()
    model = EvaViT(
        img_size=config.img_size,
        patch_size=config.patch_size,
        num_classes=0,
        global_pool="",
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        qkv_bias=True,
        qkv_fused=True,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=drop_path_rate,
        use_abs_pos_emb=True,
        use_rot_pos_emb=False,
        use_post_transformer_norm=False,
        use_fc_norm=False,
    )
    if use_checkpoint:
        model.set_grad_checkpointing(True)
    return model


def convert_weights_to_fp16(model: nn.Module) -> None:
    """Cast weight and bias of every Conv1d/Conv2d/Linear to fp16, exactly what the original casts.

    Everything else (cls_token, pos_embed, LayerNorms, the attention q_bias/v_bias) stays fp32.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()


def qkv_through_linear(vit: nn.Module) -> None:
    """Make every EVA attention in ``vit`` compute ``qkv`` by calling its ``nn.Linear`` and
    adding the q/v bias after, instead of ``F.linear`` on the Linear's weight (timm's default
    with a separate bias), so that a Linear that computes differently
    (:mod:`minigpt4.models.upcast_linear`) applies there too. The sum is the same up to one
    rounding of the product in the run's dtype."""
    for module in vit.modules():
        if isinstance(module, EvaAttention):
            module.qkv_bias_separate = True

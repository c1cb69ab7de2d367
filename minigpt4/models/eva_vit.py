"""EVA ViT-g as BLIP-2 / MiniGPT-4 use it, built from timm's maintained ``Eva``.

BLIP-2 keeps 39 of EVA-CLIP-g's 40 blocks and returns every token of the last one (CLS + patches)
without a final norm; its LayerNorms use eps 1e-6. timm's ``Eva`` computes the same thing when
built with these settings, and its parameter names are the LAVIS ones, so ``eva_vit_g.pth`` loads
into it as it is.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from timm.models.eva import Eva
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


def create_eva_vit_g(
    config: EvaVitConfig | None = None,
    drop_path_rate: float = 0.0,
    use_checkpoint: bool = False,
) -> EvaViT:
    """Build a randomly initialised EVA ViT; load weights with :func:`load_eva_vit_state_dict`."""
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


def interpolate_pos_embed(
    pos_embed: torch.Tensor, num_patches: int, num_extra_tokens: int = 1
) -> torch.Tensor:
    """Resize a checkpoint's ``pos_embed`` grid to ``num_patches`` (bicubic), keeping CLS."""
    embed_dim = pos_embed.shape[-1]
    orig_size = math.isqrt(pos_embed.shape[-2] - num_extra_tokens)
    new_size = math.isqrt(num_patches)
    if orig_size == new_size:
        return pos_embed
    logger.info(
        "Position interpolate from %dx%d to %dx%d", orig_size, orig_size, new_size, new_size
    )
    extra = pos_embed[:, :num_extra_tokens]
    grid = pos_embed[:, num_extra_tokens:]
    grid = grid.reshape(-1, orig_size, orig_size, embed_dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(), size=(new_size, new_size), mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    return torch.cat((extra, grid.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def load_eva_vit_state_dict(
    model: EvaViT, state_dict: Mapping[str, torch.Tensor], source: str
) -> list[str]:
    """Load an ``eva_vit_g.pth``-layout state dict strictly; return the keys that were ignored.

    Ignored (and returned): blocks beyond the model's depth (EVA-CLIP-g's 40th block) and keys the
    model does not have. Missing keys and shape mismatches raise ``ValueError`` naming ``source``.
    """
    state_dict = dict(state_dict)
    depth = len(model.blocks)
    ignored = []
    for key in list(state_dict):
        match = _BLOCK_KEY.match(key)
        if match and int(match.group(1)) >= depth:
            ignored.append(key)
            del state_dict[key]
    if "pos_embed" in state_dict and state_dict["pos_embed"].ndim == 3:
        expected_tokens = model.pos_embed.shape[1]
        if state_dict["pos_embed"].shape[1] != expected_tokens:
            state_dict["pos_embed"] = interpolate_pos_embed(
                state_dict["pos_embed"], model.patch_embed.num_patches
            )
    expected = model.state_dict()
    ignored += sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    mismatched = [
        f"{key}: file {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or mismatched:
        raise ValueError(
            f"{source} does not fit the EVA ViT built from the config "
            f"(depth {depth}, width {model.embed_dim}): "
            + (f"missing {len(missing)} key(s) {_preview(missing)}; " if missing else "")
            + (f"mismatched shapes {_preview(mismatched)}; " if mismatched else "")
            + "check model.vit_config / model.vit_model_path."
        )
    model.load_state_dict({k: state_dict[k] for k in expected}, strict=True)
    return sorted(ignored)


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"

"""The tiny world's frozen parts as plain modules, and their files in the real layouts.

The vision side is built exactly like MiniGPT-4's at small sizes: an EVA-style ViT (timm ``Eva``
with the EVA ViT-g options: q/v bias, LN eps 1e-6, absolute position embedding, no final norm,
all tokens out), ``ln_vision`` (LayerNorm eps 1e-5), a BLIP-2 Q-Former (transformers
``Blip2QFormerModel``, cross-attention every 2nd layer, LN eps 1e-12) and learnt query tokens.
Files are written in the layouts of ``eva_vit_g.pth`` (flat) and
``blip2_pretrained_flant5xxl.pth`` (``{"model": {Qformer.bert.*, query_tokens, ln_vision.*}}``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from timm.models.eva import Eva
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

# CLIP normalisation used by blip2_image_train / blip2_image_eval.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
QFORMER_MAX_POSITIONS = 512  # BERT's; only the position_ids buffer in the file depends on it


@dataclass(frozen=True)
class VisionSizes:
    """Sizes of the tiny vision side (the keys of the model config's vit_config/qformer_config)."""

    image_size: int = 112
    patch_size: int = 14
    vit_embed_dim: int = 64
    vit_depth: int = 3
    vit_num_heads: int = 4
    vit_mlp_ratio: float = 4.3637  # EVA ViT-g's ratio
    qformer_hidden_size: int = 64
    qformer_num_hidden_layers: int = 4
    qformer_num_attention_heads: int = 4
    qformer_intermediate_size: int = 256
    cross_attention_freq: int = 2
    num_query_token: int = 32

    def vit_config(self) -> dict:
        return {
            "img_size": self.image_size,
            "patch_size": self.patch_size,
            "embed_dim": self.vit_embed_dim,
            "depth": self.vit_depth,
            "num_heads": self.vit_num_heads,
            "mlp_ratio": self.vit_mlp_ratio,
        }

    def qformer_config(self) -> dict:
        return {
            "hidden_size": self.qformer_hidden_size,
            "num_hidden_layers": self.qformer_num_hidden_layers,
            "num_attention_heads": self.qformer_num_attention_heads,
            "intermediate_size": self.qformer_intermediate_size,
            "cross_attention_freq": self.cross_attention_freq,
            "layer_norm_eps": 1e-12,
        }

    def to_dict(self) -> dict:
        return asdict(self)


class TinyVision(nn.Module):
    """ViT -> ln_vision -> Q-Former query path: images [B,3,S,S] -> query states [B,Q,H]."""

    def __init__(self, sizes: VisionSizes) -> None:
        super().__init__()
        self.sizes = sizes
        self.visual_encoder = Eva(
            img_size=sizes.image_size,
            patch_size=sizes.patch_size,
            embed_dim=sizes.vit_embed_dim,
            depth=sizes.vit_depth,
            num_heads=sizes.vit_num_heads,
            mlp_ratio=sizes.vit_mlp_ratio,
            qkv_bias=True,
            norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
            use_post_transformer_norm=False,
            num_classes=0,
            global_pool="",
        )
        self.ln_vision = nn.LayerNorm(sizes.vit_embed_dim)  # eps 1e-5 like MiniGPT-4's
        self.qformer = Blip2QFormerModel(
            Blip2QFormerConfig(
                hidden_size=sizes.qformer_hidden_size,
                num_hidden_layers=sizes.qformer_num_hidden_layers,
                num_attention_heads=sizes.qformer_num_attention_heads,
                intermediate_size=sizes.qformer_intermediate_size,
                cross_attention_frequency=sizes.cross_attention_freq,
                encoder_hidden_size=sizes.vit_embed_dim,
                layer_norm_eps=1e-12,
                max_position_embeddings=QFORMER_MAX_POSITIONS,
            )
        )
        self.query_tokens = nn.Parameter(
            torch.randn(1, sizes.num_query_token, sizes.qformer_hidden_size) * 0.02
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(image)[0]

    def forward_with_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query states [B, Q, H], ViT tokens after ln_vision [B, 1 + patches, D])."""
        feats = self.ln_vision(self.visual_encoder.forward_features(image))
        queries = self.query_tokens.expand(image.shape[0], -1, -1)
        out = self.qformer(
            query_embeds=queries,
            encoder_hidden_states=feats,
            encoder_attention_mask=torch.ones(feats.shape[:2], dtype=torch.long),
        )
        return out.last_hidden_state, feats


def qformer_to_lavis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``Blip2QFormerModel`` names -> LAVIS ``Qformer.bert.*`` names."""
    out = {}
    for key, value in state.items():
        if key.startswith("layernorm."):
            new = "embeddings.LayerNorm." + key[len("layernorm.") :]
        else:
            new = key.replace(".attention.attention.", ".attention.self.")
            new = new.replace(".crossattention.attention.", ".crossattention.self.")
        out["Qformer.bert." + new] = value
    return out


def qformer_from_lavis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`qformer_to_lavis` for the ``Qformer.bert.*`` keys (others are skipped)."""
    out = {}
    for key, value in state.items():
        if not key.startswith("Qformer.bert.") or key.endswith("position_ids"):
            continue
        new = key[len("Qformer.bert.") :]
        if new.startswith("embeddings.LayerNorm."):
            new = "layernorm." + new[len("embeddings.LayerNorm.") :]
        else:
            new = new.replace(".attention.self.", ".attention.attention.")
            new = new.replace(".crossattention.self.", ".crossattention.attention.")
        out[new] = value
    return out


def _save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_vision(vision: TinyVision, out_dir: Path) -> tuple[Path, Path]:
    """Write ``eva_vit_g.pth`` and ``blip2_pretrained_flant5xxl.pth`` (fp32, contiguous)."""
    vit = {
        k: v.detach().clone().contiguous() for k, v in vision.visual_encoder.state_dict().items()
    }
    blip2 = qformer_to_lavis(
        {k: v.detach().clone().contiguous() for k, v in vision.qformer.state_dict().items()}
    )
    blip2["Qformer.bert.embeddings.position_ids"] = torch.arange(QFORMER_MAX_POSITIONS)[None]
    blip2["query_tokens"] = vision.query_tokens.detach().clone()
    for k, v in vision.ln_vision.state_dict().items():
        blip2["ln_vision." + k] = v.detach().clone()
    vit_path, blip2_path = out_dir / "eva_vit_g.pth", out_dir / "blip2_pretrained_flant5xxl.pth"
    _save(vit, vit_path)
    _save({"model": blip2}, blip2_path)
    return vit_path, blip2_path


def load_vision(sizes: VisionSizes, vit_path: Path, blip2_path: Path) -> TinyVision:
    """Build :class:`TinyVision` from the two files, strictly (every key must match)."""
    vision = TinyVision(sizes)
    vision.visual_encoder.load_state_dict(torch.load(vit_path, map_location="cpu"), strict=True)
    blip2 = torch.load(blip2_path, map_location="cpu")["model"]
    vision.qformer.load_state_dict(qformer_from_lavis(blip2), strict=True)
    vision.ln_vision.load_state_dict(
        {k[len("ln_vision.") :]: v for k, v in blip2.items() if k.startswith("ln_vision.")}
    )
    with torch.no_grad():
        vision.query_tokens.copy_(blip2["query_tokens"])
    return vision.eval()

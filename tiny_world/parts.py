"""The tiny world's frozen parts as plain modules, and their files in the real layouts.

The vision side is built exactly like MiniGPT-4's at small sizes: an EVA-style ViT (timm ``Eva``
with the EVA ViT-g options: q/v bias, LN eps 1e-6, absolute position embedding, no final norm,
all tokens out), ``ln_vision`` (LayerNorm eps 1e-5), a BLIP-2 Q-Former (transformers
``Blip2QFormerModel``, cross-attention every 2nd layer, LN eps 1e-12) and learnt query tokens.
Files are written in the layouts of ``eva_vit_g.pth`` (flat) and
``blip2_pretrained_flant5xxl.pth`` (``{"model": {Qformer.bert.*, query_tokens, ln_vision.*}}``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from minigpt4.models.eva_vit import EvaVitConfig, create_eva_vit_g
from minigpt4.models.qformer import QFormerConfig, build_qformer
from minigpt4.models.weights import (
    blip2_state,
    eva_vit_state,
    load_blip2,
    load_eva_vit,
    save_weights,
)


@dataclass(frozen=True)
class ViTSizes:
    """Sizes of the tiny EVA-style ViT (the keys of the model config's ``vit_config``)."""

    image_size: int = 112
    patch_size: int = 14
    vit_embed_dim: int = 64
    vit_depth: int = 3
    vit_num_heads: int = 4
    vit_mlp_ratio: float = 4.3637  # EVA ViT-g's ratio

    def vit_config(self) -> dict:
        return {
            "img_size": self.image_size,
            "patch_size": self.patch_size,
            "embed_dim": self.vit_embed_dim,
            "depth": self.vit_depth,
            "num_heads": self.vit_num_heads,
            "mlp_ratio": self.vit_mlp_ratio,
        }


@dataclass(frozen=True)
class VisionSizes(ViTSizes):
    """Sizes of the tiny vision side: the ViT's and the Q-Former's (``qformer_config``)."""

    qformer_hidden_size: int = 64
    qformer_num_hidden_layers: int = 4
    qformer_num_attention_heads: int = 4
    qformer_intermediate_size: int = 256
    cross_attention_freq: int = 2
    num_query_token: int = 32

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


def add_pretraining_arguments(
    parser: argparse.ArgumentParser, out: str, seed: int, defaults: ViTSizes
) -> None:
    """The options every vision pre-training tool takes: where, which images, how long, and
    the ViT's sizes."""
    parser.add_argument("--out", default=out)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--train-count", type=int, default=4000)
    parser.add_argument("--val-count", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--patch-size", type=int, default=defaults.patch_size)
    parser.add_argument("--vit-width", type=int, default=defaults.vit_embed_dim)
    parser.add_argument("--vit-depth", type=int, default=defaults.vit_depth)
    parser.add_argument("--vit-heads", type=int, default=defaults.vit_num_heads)


def pretraining_options(args: argparse.Namespace) -> dict:
    """The ``pretrain`` arguments the options of :func:`add_pretraining_arguments` set."""
    names = ("seed", "train_count", "val_count", "steps", "batch_size", "lr", "eval_every")
    return {name: getattr(args, name) for name in names}


def vit_sizes(args: argparse.Namespace) -> dict:
    """The :class:`ViTSizes` fields the options of :func:`add_pretraining_arguments` set."""
    return {
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "vit_embed_dim": args.vit_width,
        "vit_depth": args.vit_depth,
        "vit_num_heads": args.vit_heads,
    }


class TinyVision(nn.Module):
    """ViT -> ln_vision -> Q-Former query path: images [B,3,S,S] -> query states [B,Q,H]."""

    def __init__(self, sizes: VisionSizes) -> None:
        super().__init__()
        self.sizes = sizes
        # The same builders MiniGPT4 uses, so the files load into it key for key.
        self.visual_encoder = create_eva_vit_g(EvaVitConfig(**sizes.vit_config()))
        self.ln_vision = nn.LayerNorm(sizes.vit_embed_dim)  # eps 1e-5 like MiniGPT-4's
        self.Qformer = build_qformer(QFormerConfig(**sizes.qformer_config()), sizes.vit_embed_dim)
        self.query_tokens = nn.Parameter(
            torch.randn(1, sizes.num_query_token, sizes.qformer_hidden_size) * 0.02
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(image)[0]

    def forward_with_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query states [B, Q, H], ViT tokens after ln_vision [B, 1 + patches, D])."""
        feats = self.ln_vision(self.visual_encoder.forward_features(image))
        queries = self.query_tokens.expand(image.shape[0], -1, -1)
        out = self.Qformer(
            query_embeds=queries,
            encoder_hidden_states=feats,
            encoder_attention_mask=torch.ones(feats.shape[:2], dtype=torch.long),
        )
        return out.last_hidden_state, feats


def save_vision(vision: TinyVision, out_dir: Path) -> tuple[Path, Path]:
    """Write ``eva_vit_g.pth`` and ``blip2_pretrained_flant5xxl.pth`` in the real layouts."""
    vit_path, blip2_path = out_dir / "eva_vit_g.pth", out_dir / "blip2_pretrained_flant5xxl.pth"
    save_weights(eva_vit_state(vision.visual_encoder), str(vit_path))
    save_weights(blip2_state(vision), str(blip2_path))
    return vit_path, blip2_path


def load_vision(sizes: VisionSizes, vit_path: Path, blip2_path: Path) -> TinyVision:
    """Build :class:`TinyVision` from the two files, strictly (every key must match)."""
    vision = TinyVision(sizes)
    load_eva_vit(vision.visual_encoder, str(vit_path))
    load_blip2(vision, str(blip2_path))
    return vision.eval()

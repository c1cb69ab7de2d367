"""Build the frozen ViT of the tiny LLaMA-2 MiniGPT-4: no Q-Former, grouped patch tokens.

    python -m tiny_world.build_vision_grouped --out tiny_world/checkpoint_llama2

The LLaMA-2 variant feeds ``llama_proj`` the ViT's patch tokens after ``ln_vision`` (CLS
dropped), every 4 consecutive tokens (row order: 4 horizontal neighbours) concatenated into one.
At 112 px and patch 14 that is 64 patches -> 16 image tokens of 4 x width. ``ln_vision`` is not
in any file of that variant: it is a fresh LayerNorm (weight 1, bias 0, eps 1e-5), frozen with
the ViT. So the ViT is pre-trained through that same fixed normalisation, and only
``eva_vit_g.pth`` is written.

As for the v1 vision side (``build_vision``), the ViT learns the world's attributes from labels,
without any language, and every head is thrown away afterwards:

- group heads: one linear classifier per attribute reads *every* group token on its own, so each
  of the 16 image tokens carries the whole scene (colour, shape, size, position, background);
- the max-pooled patch heads and the per-patch shape labels of ``build_vision``, which give the
  ViT a short path to shapes.

Writes ``eva_vit_g.pth`` (the real flat layout) and ``vision_sizes.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from minigpt4.common.atomic_write import atomic_write_text
from minigpt4.models.eva_vit import EvaVitConfig, create_eva_vit_g
from minigpt4.models.projection import NEIGHBOURS, grouped_patches
from minigpt4.models.weights import eva_vit_state, load_eva_vit, save_weights
from tiny_world import build_vision, world
from tiny_world.build_vision import ATTRIBUTES, VOCAB
from tiny_world.parts import (
    ViTSizes,
    add_pretraining_arguments,
    pretraining_options,
    vit_sizes,
)

logger = logging.getLogger(__name__)

DEFAULT_SEED = 3000  # pre-training images; validation images at DEFAULT_SEED + VAL_SEED_OFFSET


@dataclass(frozen=True)
class GroupedSizes(ViTSizes):
    """Sizes of the tiny ViT of the LLaMA-2 variant (the eval config's ``vit_config``) and how
    many patch tokens make one image token."""

    group_size: int = NEIGHBOURS

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // self.group_size


class GroupedVision(nn.Module):
    """ViT -> fresh frozen ``ln_vision`` -> groups: images [B,3,S,S] -> [B, tokens, g x width]."""

    def __init__(self, sizes: GroupedSizes) -> None:
        super().__init__()
        self.sizes = sizes
        self.visual_encoder = create_eva_vit_g(EvaVitConfig(**sizes.vit_config()))
        # As the LLaMA-2 variant builds it: nn.LayerNorm's init, never loaded, never trained.
        self.ln_vision = nn.LayerNorm(sizes.vit_embed_dim)
        self.ln_vision.requires_grad_(False)

    def forward_with_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(group tokens [B, tokens, g x width], ViT tokens after ln_vision [B, 1 + patches, D])."""
        feats = self.ln_vision(self.visual_encoder.forward_features(image))
        return grouped_patches(feats, self.sizes.group_size), feats


class GroupHeads(nn.Module):
    """One linear classifier per attribute, applied to every group token."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({a: nn.Linear(width, len(VOCAB[a])) for a in ATTRIBUTES})

    def forward(self, groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits [B, tokens, classes] per attribute."""
        return {a: head(groups) for a, head in self.heads.items()}


def attribute_loss(
    logits: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Cross entropy of every token's logits [B, tokens, classes] against its image's label,
    summed over the attributes."""
    loss = torch.zeros(())
    for a, lg in logits.items():
        t = target[a][:, None].expand(-1, lg.shape[1])
        loss = loss + nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), t.reshape(-1))
    return loss


@torch.no_grad()
def group_accuracy(
    vision: GroupedVision, heads: GroupHeads, images: torch.Tensor, target: dict
) -> dict[str, float]:
    """Per attribute, the share of (image, group token) pairs classified right on their own."""
    vision.eval()
    right = dict.fromkeys(ATTRIBUTES, 0.0)
    for start in range(0, len(images), 128):
        logits = heads(vision.forward_with_features(images[start : start + 128])[0])
        for a, lg in logits.items():
            t = target[a][start : start + 128, None]
            right[a] += (lg.argmax(-1) == t).float().mean(1).sum().item()
    vision.train()
    return {a: right[a] / len(images) for a in ATTRIBUTES}


def _prepare(sizes: GroupedSizes, seed: int, train_count: int, val_count: int) -> dict:
    """Training views (plain resize and train crop of each image), their labels, validation."""
    images, scenes, backgrounds = build_vision.load_world_images(seed, train_count)
    val_images, val_scenes, _ = build_vision.load_world_images(
        seed + build_vision.VAL_SEED_OFFSET, val_count
    )
    to_eval = build_vision.eval_transform(sizes.image_size)
    to_train = build_vision.train_transform(sizes.image_size)
    views = torch.stack(
        [torch.stack([to_eval(im) for im in images]), torch.stack([to_train(im) for im in images])]
    )
    return {
        "views": views,
        "y": build_vision.labels(scenes),
        "patch_y": torch.stack(
            [build_vision.patch_labels(v, scenes, backgrounds, sizes.patch_size) for v in views]
        ),
        "val_x": torch.stack([to_eval(im) for im in val_images]),
        "val_y": build_vision.labels(val_scenes),
    }


def _init_positions(vision: GroupedVision, sizes: GroupedSizes) -> None:
    """The 2-D sine-cosine start of ``build_vision`` (where a patch is, readable at once)."""
    grid = sizes.image_size // sizes.patch_size
    pos = vision.visual_encoder.pos_embed
    with torch.no_grad():
        pos[0, 1:] = build_vision.sincos_2d(grid, pos.shape[-1]) * build_vision.POS_EMBED_SCALE
        pos[0, :1] = 0


def pretrain(
    sizes: GroupedSizes,
    seed: int,
    train_count: int,
    val_count: int,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int = 500,
) -> tuple[GroupedVision, dict[str, float]]:
    """Pre-train the ViT with group, pooled and per-patch heads; returns it and the validation
    accuracy of single group tokens."""
    torch.manual_seed(seed)
    vision = GroupedVision(sizes)
    _init_positions(vision, sizes)
    width = sizes.vit_embed_dim
    heads = GroupHeads(width * sizes.group_size)
    vit_heads = build_vision.ViTHeads(width)
    patch_head = nn.Linear(width, len(world.SHAPES) + 1)
    data = _prepare(sizes, seed, train_count, val_count)
    params = [
        p for m in (vision, heads, vit_heads, patch_head) for p in m.parameters() if p.requires_grad
    ]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    t0, acc = time.time(), {}
    vision.train()
    for step in range(1, steps + 1):
        idx = torch.randint(train_count, (batch_size,), generator=gen)
        view = torch.randint(2, (batch_size,), generator=gen)
        groups, tokens = vision.forward_with_features(data["views"][view, idx])
        target = {a: t[idx] for a, t in data["y"].items()}
        loss = attribute_loss(heads(groups), target) + attribute_loss(vit_heads(tokens), target)
        dense = patch_head(tokens[:, 1:])
        loss = loss + nn.functional.cross_entropy(
            dense.reshape(-1, dense.shape[-1]), data["patch_y"][view, idx].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            acc = group_accuracy(vision, heads, data["val_x"], data["val_y"])
            logger.info(
                "step %d/%d  loss %.3f  val (single group tokens) %s  (%.0f s)",
                step,
                steps,
                loss.item(),
                " ".join(f"{a} {v:.3f}" for a, v in acc.items()),
                time.time() - t0,
            )
    return vision.eval(), acc


def save(vision: GroupedVision, out: Path) -> Path:
    """Write ``eva_vit_g.pth`` (flat, the real layout) and ``vision_sizes.json`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eva_vit_g.pth"
    save_weights(eva_vit_state(vision.visual_encoder), str(path))
    atomic_write_text(json.dumps(asdict(vision.sizes), indent=2) + "\n", out / "vision_sizes.json")
    return path


def load(sizes: GroupedSizes, vit_path: Path) -> GroupedVision:
    """:class:`GroupedVision` with the ViT of ``vit_path`` (strictly) and a fresh ln_vision."""
    vision = GroupedVision(sizes)
    load_eva_vit(vision.visual_encoder, str(vit_path))
    return vision.eval()


def main(argv: list[str] | None = None) -> dict[str, float]:
    d = GroupedSizes()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_pretraining_arguments(parser, "tiny_world/checkpoint_llama2", DEFAULT_SEED, d)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    sizes = GroupedSizes(**vit_sizes(args))
    t0 = time.time()
    vision, acc = pretrain(sizes, **pretraining_options(args))
    path = save(vision, Path(args.out))
    logger.info("ViT written to %s in %.0f s; val accuracy %s", path, time.time() - t0, acc)
    return acc


if __name__ == "__main__":
    main()

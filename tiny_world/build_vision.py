"""Build the tiny world's frozen vision side: EVA-style ViT + ln_vision + Q-Former + query tokens.

    python -m tiny_world.build_vision --out tiny_world/checkpoint

A randomly initialised tiny ViT does not keep the shape of a small object in its query outputs
in a form a linear layer can read, so the vision side is pre-trained briefly, as BLIP-2's was
pre-trained before MiniGPT-4 ever saw it, here with labels instead of image-text losses, and
without any language:

- attribute heads: query ``i`` is assigned ``ATTRIBUTES[i % 5]``; a linear head per attribute
  classifies it from each of its queries;
- per-patch labels on the ViT tokens: which shape covers the patch (or background), computed
  from the pixels and the known background colour: many labels per image (``--silhouette-weight``
  adds the patch's silhouette as a further target; it did not help in our runs and is off);
- the same attribute labels on the ViT tokens directly, max-pooled over the patches
  (``ViTHeads``): a short gradient path into the ViT, so that it learns outlines before the
  Q-Former has learnt where to look. Without it the query heads reached 0.58 shape accuracy
  after 1500 steps, with it 0.91;
- the ViT's position embedding starts from a 2-D sine-cosine table (as MAE's), scaled by
  ``POS_EMBED_SCALE`` so that it is not drowned by the patch content in the first LayerNorm.

All heads are discarded. Writes ``eva_vit_g.pth`` and ``blip2_pretrained_flant5xxl.pth`` in the
real layouts plus ``vision_sizes.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from minigpt4.common.atomic_write import atomic_write_text
from minigpt4.processors.blip_processors import CLIP_MEAN, CLIP_STD
from tiny_world import parts, world

logger = logging.getLogger(__name__)

ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "position", "background")
VOCAB: dict[str, tuple[str, ...]] = {
    "colour": world.COLOURS,
    "shape": world.SHAPES,
    "size": world.SIZES,
    "position": world.POSITIONS,
    "background": world.BACKGROUNDS,
}
# Seeds of the pre-training images; keep them away from the seeds the alignment uses.
DEFAULT_SEED = 1000
VAL_SEED_OFFSET = 500_000
TRAIN_MIN_SCALE = 0.8  # same crop range as the tiny stage-1 config's vis processor
# Colour distance (0..1, largest channel) from the background that marks a pixel foreground:
# below the least contrast of any styled shade (world.MIN_CONTRAST), above JPEG's noise.
FOREGROUND_DELTA = 48 / 255
PATCH_FOREGROUND = 0.15
SILHOUETTE_CELL = 2  # pixels per side of a silhouette cell
# With the table at its natural scale (entries in [-1, 1]) positions were still at chance after
# 500 steps; at 8x they were read perfectly by then.
POS_EMBED_SCALE = 8.0


def eval_transform(image_size: int) -> transforms.Compose:
    """What ``blip2_image_eval`` does: bicubic resize to a square, CLIP normalisation."""
    return transforms.Compose(
        [
            transforms.Resize(
                (image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def train_transform(image_size: int, min_scale: float = TRAIN_MIN_SCALE) -> transforms.Compose:
    """What ``blip2_image_train`` does: random resized crop, CLIP normalisation."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                image_size,
                scale=(min_scale, 1.0),
                interpolation=transforms.InterpolationMode.BICUBIC,
            ),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def load_world_images(
    seed: int, count: int, styled: bool = False
) -> tuple[list[Image.Image], list[world.Scene], list[tuple[int, int, int]]]:
    """World samples as the datasets store them (224 px JPEG, decoded again), their scenes and
    background colours (``styled``: drawn in sampled styles, ``world.make_sample``)."""
    images, scenes, backgrounds = [], [], []
    for i in range(count):
        sample = world.make_sample(seed, i, styled=styled)
        images.append(Image.open(io.BytesIO(world.to_jpeg_bytes(sample.image))).convert("RGB"))
        scenes.append(sample.scene)
        backgrounds.append(sample.style.background_rgb)
    return images, scenes, backgrounds


def labels(scenes: Sequence[world.Scene]) -> dict[str, torch.Tensor]:
    return {a: torch.tensor([VOCAB[a].index(getattr(s, a)) for s in scenes]) for a in ATTRIBUTES}


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position embeddings [grid*grid, dim] (half the channels per axis)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts_ = []
    for coord in (ys.flatten(), xs.flatten()):
        angle = coord[:, None].float() * omega[None]
        parts_ += [angle.sin(), angle.cos()]
    emb = torch.cat(parts_, dim=1)
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[1]))


def _foreground(image: torch.Tensor, background: tuple[int, int, int]) -> torch.Tensor:
    """Pixels of a normalised image farther than ``FOREGROUND_DELTA`` from the background."""
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    bg = torch.tensor(background, dtype=torch.float32)[:, None, None] / 255
    return ((image * std + mean - bg).abs().amax(0) > FOREGROUND_DELTA).float()


def silhouettes(
    images: torch.Tensor, backgrounds: Sequence[tuple[int, int, int]], patch: int
) -> torch.Tensor:
    """Per patch, the foreground share of each ``SILHOUETTE_CELL``-pixel cell: [N, patches, cells].

    A dense, local, unambiguous target: it teaches the patch embedding to see the outline of a
    shape of any colour on any background, from which the shape is then learnt much faster.
    """
    out = []
    for image, background in zip(images, backgrounds, strict=True):
        fg = _foreground(image, background)
        cells = nn.functional.avg_pool2d(fg[None, None], SILHOUETTE_CELL)[0, 0]
        k = patch // SILHOUETTE_CELL
        g = cells.shape[0] // k
        out.append(cells.reshape(g, k, g, k).permute(0, 2, 1, 3).reshape(g * g, k * k))
    return torch.stack(out)


def patch_labels(
    images: torch.Tensor,
    scenes: Sequence[world.Scene],
    backgrounds: Sequence[tuple[int, int, int]],
    patch: int,
) -> torch.Tensor:
    """Per patch: the shape's index where the shape covers it, ``len(SHAPES)`` on background.

    Foreground = pixels away from the image's known background colour (after normalisation is
    undone); a patch is the shape's when at least ``PATCH_FOREGROUND`` of it is foreground.
    """
    out = []
    for image, scene, background in zip(images, scenes, backgrounds, strict=True):
        fg = _foreground(image, background)
        frac = nn.functional.avg_pool2d(fg[None, None], patch)[0, 0].flatten()
        label = torch.full_like(frac, len(world.SHAPES), dtype=torch.long)
        label[frac >= PATCH_FOREGROUND] = world.SHAPES.index(scene.shape)
        out.append(label)
    return torch.stack(out)


class ViTHeads(nn.Module):
    """One linear classifier per attribute on the ViT's patch tokens, max-pooled."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({a: nn.Linear(width, len(VOCAB[a])) for a in ATTRIBUTES})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits [B, 1, classes] per attribute from tokens [B, 1 + patches, D] (CLS unused)."""
        pooled = tokens[:, 1:].amax(1)
        return {a: head(pooled)[:, None] for a, head in self.heads.items()}


class AttributeHeads(nn.Module):
    """One linear classifier per attribute, applied to each query assigned to it."""

    def __init__(self, hidden: int, num_query: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({a: nn.Linear(hidden, len(VOCAB[a])) for a in ATTRIBUTES})
        self.groups = {
            a: [i for i in range(num_query) if ATTRIBUTES[i % len(ATTRIBUTES)] == a]
            for a in ATTRIBUTES
        }

    def forward(self, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits [B, queries_of_attribute, classes] per attribute."""
        return {a: self.heads[a](queries[:, idx]) for a, idx in self.groups.items()}


def _loss_and_correct(
    logits: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    loss = torch.zeros(())
    correct = {}
    for a, lg in logits.items():
        t = target[a][:, None].expand(-1, lg.shape[1])
        loss = loss + nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), t.reshape(-1))
        correct[a] = (lg.mean(1).argmax(-1) == target[a]).float().sum().item()
    return loss, correct


@torch.no_grad()
def evaluate_heads(
    vision: parts.TinyVision, heads: AttributeHeads, images: torch.Tensor, target: dict
) -> dict[str, float]:
    """Attribute accuracy on preprocessed ``images`` (heads averaged over their queries)."""
    vision.eval()
    totals = dict.fromkeys(ATTRIBUTES, 0.0)
    for start in range(0, len(images), 128):
        sl = slice(start, start + 128)
        _, correct = _loss_and_correct(
            heads(vision(images[sl])), {a: t[sl] for a, t in target.items()}
        )
        for a in ATTRIBUTES:
            totals[a] += correct[a]
    return {a: totals[a] / len(images) for a in ATTRIBUTES}


def pretrain(
    sizes: parts.VisionSizes,
    seed: int,
    train_count: int,
    val_count: int,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int = 250,
    init: Path | None = None,
    silhouette_weight: float = 0.0,
    styled: bool = False,
) -> tuple[parts.TinyVision, dict[str, float]]:
    """Pre-train the vision side with attribute heads; returns it and its validation accuracy.

    ``init``: a folder with ``eva_vit_g.pth`` and ``blip2_pretrained_flant5xxl.pth`` to go on
    from (new heads, new schedule) instead of a random start. ``silhouette_weight``: weight of
    the per-patch silhouette loss (0: off, as for the shipped files). ``styled``: train and
    validate on images drawn in sampled styles (``world.make_sample(..., styled=True)``).
    """
    torch.manual_seed(seed)
    vision = parts.TinyVision(sizes)
    if init is not None:
        vision = parts.load_vision(
            sizes, init / "eva_vit_g.pth", init / "blip2_pretrained_flant5xxl.pth"
        )
    with torch.no_grad():
        # A fixed 2-D sin-cos start (as MAE uses) instead of N(0, 0.02): where a patch is, is
        # then readable from the first step, which speeds up learning positions and shapes.
        grid = sizes.image_size // sizes.patch_size
        pos = vision.visual_encoder.pos_embed
        if init is None:
            pos[0, 1:] = sincos_2d(grid, pos.shape[-1]) * POS_EMBED_SCALE
            pos[0, :1] = 0
    heads = AttributeHeads(sizes.qformer_hidden_size, sizes.num_query_token)
    vit_heads = ViTHeads(sizes.vit_embed_dim)
    images, scenes, backgrounds = load_world_images(seed, train_count, styled)
    val_images, val_scenes, _ = load_world_images(seed + VAL_SEED_OFFSET, val_count, styled)
    to_eval, to_train = eval_transform(sizes.image_size), train_transform(sizes.image_size)
    val_x = torch.stack([to_eval(im) for im in val_images])
    val_y = labels(val_scenes)
    # Two fixed views per image, a plain resize and a crop as the stage-1 train processor makes
    # them: computed once, since transforms on 2 CPU cores cost as much as the model.
    views = torch.stack(
        [torch.stack([to_eval(im) for im in images]), torch.stack([to_train(im) for im in images])]
    )
    y = labels(scenes)
    patch_y = torch.stack([patch_labels(v, scenes, backgrounds, sizes.patch_size) for v in views])
    patch_head = nn.Linear(sizes.vit_embed_dim, len(world.SHAPES) + 1)
    params = [
        *vision.parameters(),
        *heads.parameters(),
        *vit_heads.parameters(),
        *patch_head.parameters(),
    ]
    if silhouette_weight:
        sil_y = torch.stack([silhouettes(v, backgrounds, sizes.patch_size) for v in views])
        sil_head = nn.Linear(sizes.vit_embed_dim, sil_y.shape[-1])
        params += list(sil_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    acc: dict[str, float] = {}
    vision.train()
    for step in range(1, steps + 1):
        idx = torch.randint(train_count, (batch_size,), generator=gen)
        view = torch.randint(2, (batch_size,), generator=gen)
        queries, tokens = vision.forward_with_features(views[view, idx])
        target = {a: t[idx] for a, t in y.items()}
        loss, _ = _loss_and_correct(heads(queries), target)
        loss = loss + _loss_and_correct(vit_heads(tokens), target)[0]
        # Dense shape labels on every patch token: many more labels per image than the one
        # per query group, which is what makes shapes learnable in minutes.
        dense = patch_head(tokens[:, 1:])
        loss = loss + nn.functional.cross_entropy(
            dense.reshape(-1, dense.shape[-1]), patch_y[view, idx].reshape(-1)
        )
        if silhouette_weight:
            loss = loss + silhouette_weight * nn.functional.binary_cross_entropy_with_logits(
                sil_head(tokens[:, 1:]), sil_y[view, idx]
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            acc = evaluate_heads(vision, heads, val_x, val_y)
            vision.train()
            logger.info(
                "step %d/%d  loss %.3f  val %s  (%.0f s)",
                step,
                steps,
                loss.item(),
                " ".join(f"{a} {v:.3f}" for a, v in acc.items()),
                time.time() - t0,
            )
    return vision.eval(), acc


def main(argv: list[str] | None = None) -> dict[str, float]:
    d = parts.VisionSizes()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts.add_pretraining_arguments(parser, "tiny_world/checkpoint", DEFAULT_SEED, d)
    parser.add_argument("--init", type=Path, help="go on from the vision files in this folder")
    parser.add_argument(
        "--silhouette-weight", type=float, default=0.0, help="per-patch silhouette loss (0: off)"
    )
    parser.add_argument(
        "--styled", action="store_true", help="images drawn in sampled styles (named shades...)"
    )
    parser.add_argument("--qformer-width", type=int, default=d.qformer_hidden_size)
    parser.add_argument("--qformer-layers", type=int, default=d.qformer_num_hidden_layers)
    parser.add_argument("--qformer-heads", type=int, default=d.qformer_num_attention_heads)
    parser.add_argument("--qformer-ffn", type=int, default=d.qformer_intermediate_size)
    parser.add_argument("--num-query-token", type=int, default=d.num_query_token)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    sizes = parts.VisionSizes(
        **parts.vit_sizes(args),
        qformer_hidden_size=args.qformer_width,
        qformer_num_hidden_layers=args.qformer_layers,
        qformer_num_attention_heads=args.qformer_heads,
        qformer_intermediate_size=args.qformer_ffn,
        num_query_token=args.num_query_token,
    )
    t0 = time.time()
    vision, acc = pretrain(
        sizes,
        **parts.pretraining_options(args),
        init=args.init,
        silhouette_weight=args.silhouette_weight,
        styled=args.styled,
    )
    out = Path(args.out)
    parts.save_vision(vision, out)
    atomic_write_text(json.dumps(sizes.to_dict(), indent=2) + "\n", out / "vision_sizes.json")
    logger.info("vision side written to %s in %.0f s; val accuracy %s", out, time.time() - t0, acc)
    return acc


if __name__ == "__main__":
    main()

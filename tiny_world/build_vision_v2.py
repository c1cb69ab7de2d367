"""Build the frozen ViT of the tiny MiniGPT-v2: grouped patch tokens that hold slot words.

    python -m tiny_world.build_vision_v2 --out tiny_world/checkpoint_v2

MiniGPT-v2 feeds ``llama_proj`` the ViT's patch tokens after a fresh, never loaded
``ln_vision`` (CLS dropped), 4 consecutive tokens concatenated into one: at 140 px and patch 14,
100 patches -> ``SLOT_LEN`` (25) image tokens. The ViT is pre-trained, without any language,
through that same fixed normalisation so that image token ``i`` tells slot word ``i`` of
:mod:`tiny_world.v2_layouts` (background, then each thing left to right: colour, shape and its
grid box, then the filler).

Each slot word has a fixed random **prototype** in the group tokens' space (per 64-wide chunk
zero mean and norm 8, as ``ln_vision`` leaves a token; seeded, never trained, no relation to any
LLM embedding), and token ``i`` is pulled onto the prototype of its word (mean squared error,
plus cross entropy of its similarities to all prototypes): coordinates onto a Gaussian blend of
their neighbours' prototypes (width ``COORD_SIGMA``), so nearly right boxes cost little. The
prototypes are linearly independent, so one linear map (``llama_proj``, the same for every
position) can send each onto any embedding the LLM reads as that word, and a blend onto the
same blend of embeddings, which is what the LLM was trained on. A linear classifier instead
(tried first) leaves features that a linear map sends onto the words badly (least squares: 47 %
error) and the finetune found no boxes (docs/tiny-world.md).
``--objective classifier`` trains that classifier instead (the shipped ViT's first round);
``--init`` goes on from a ViT already written. ``eva_vit_g.pth`` (the real flat layout) and
``vision_sizes.json`` are written.

Images are the finetune data's: ``scenes.make_multi_sample`` at 224 px, stored as JPEG as
``make_synthetic.py`` stores them, resized as ``blip2_image_eval`` resizes them.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from minigpt4.processors.blip_processors import CLIP_MEAN, CLIP_STD
from tiny_world import build_vision_grouped, scenes, v2_layouts
from tiny_world.build_vision_grouped import GroupedSizes, GroupedVision
from tiny_world.v2_layouts import COORDINATE_CLASS0, GRID, SLOT_LEN, SLOT_WORDS
from tiny_world.world import to_jpeg_bytes

logger = logging.getLogger(__name__)

DEFAULT_SEED = 5000  # pre-training images; validation images at DEFAULT_SEED + 1
SOURCE_SIZE = 224  # the scenes' drawn size (make_synthetic's)
COORD_SIGMA = 1.0  # grid units
PROTOTYPE_SEED = 0


def default_sizes() -> GroupedSizes:
    return GroupedSizes(image_size=140, patch_size=14, vit_embed_dim=64, vit_depth=4)


def load_images(seed: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 3, size, size] (drawn, JPEG, bicubic resize) and slot classes [N, 25]."""
    images = np.empty((count, 3, size, size), dtype=np.uint8)
    classes = torch.empty((count, SLOT_LEN), dtype=torch.long)
    for i in range(count):
        sample = scenes.make_multi_sample(seed, i, SOURCE_SIZE)
        decoded = Image.open(io.BytesIO(to_jpeg_bytes(sample.image))).convert("RGB")
        resized = decoded.resize((size, size), Image.Resampling.BICUBIC)
        images[i] = np.asarray(resized).transpose(2, 0, 1)
        classes[i] = torch.tensor(v2_layouts.slot_classes(sample))
    return torch.from_numpy(images), classes


def normalise(images: torch.Tensor) -> torch.Tensor:
    """What ToTensor + Normalize(CLIP) make of uint8 images."""
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    return (images.float() / 255 - mean) / std


def soft_targets(classes: torch.Tensor) -> torch.Tensor:
    """[..., len(SLOT_WORDS)]: one-hot, coordinates a Gaussian over the grid."""
    target = nn.functional.one_hot(classes, len(SLOT_WORDS)).float()
    is_coord = (classes >= COORDINATE_CLASS0) & (classes <= COORDINATE_CLASS0 + GRID)
    value = (classes - COORDINATE_CLASS0).float()[..., None]
    gauss = torch.exp(-((torch.arange(GRID + 1).float() - value) ** 2) / (2 * COORD_SIGMA**2))
    gauss = gauss / gauss.sum(-1, keepdim=True)
    coords = slice(COORDINATE_CLASS0, COORDINATE_CLASS0 + GRID + 1)
    target[..., coords] = torch.where(is_coord[..., None], gauss, target[..., coords])
    return target


def prototypes(seed: int, sizes: GroupedSizes) -> torch.Tensor:
    """[len(SLOT_WORDS), group x width]: each 64-wide chunk zero-mean with norm sqrt(width)."""
    gen = torch.Generator().manual_seed(seed)
    width = sizes.vit_embed_dim
    p = torch.randn((len(SLOT_WORDS), sizes.group_size, width), generator=gen)
    p = p - p.mean(-1, keepdim=True)
    p = p / p.norm(dim=-1, keepdim=True) * width**0.5
    return p.reshape(len(SLOT_WORDS), -1)


def similarity(tokens: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Logits [..., words]: cosine similarity x sqrt(dim) (both sides have norm sqrt(dim))."""
    return tokens @ protos.T / protos.shape[-1] ** 0.5


def scorer(objective: str, sizes: GroupedSizes) -> tuple[nn.Module | None, Callable]:
    """(trainable head or None, tokens -> logits over SLOT_WORDS) of ``objective``; the
    classifier is drawn from torch's global generator, the prototypes from their own."""
    if objective == "classifier":
        head = nn.Linear(sizes.vit_embed_dim * sizes.group_size, len(SLOT_WORDS))
        return head, head
    protos = prototypes(PROTOTYPE_SEED, sizes)
    return None, lambda tokens: similarity(tokens, protos)


@torch.no_grad()
def accuracy(vision: GroupedVision, score: Callable, images, classes) -> dict[str, float]:
    """Words right (non-coordinate slots), coordinates within 2 grid units, and the share of
    things whose predicted box has IoU > 0.5 with the true one (from single tokens' argmax)."""
    vision.eval()
    pred = torch.cat(
        [
            score(vision.forward_with_features(normalise(images[s : s + 128]))[0]).argmax(-1)
            for s in range(0, len(images), 128)
        ]
    )
    vision.train()
    is_coord = classes >= COORDINATE_CLASS0
    is_coord &= classes <= COORDINATE_CLASS0 + GRID
    close = (pred - classes).abs() <= 2
    ious = []
    for b in range(len(classes)):
        for t in range(scenes.MAX_THINGS):
            at = 1 + t * v2_layouts.THING_WORDS
            want = classes[b, at + 2 : at + 6] - COORDINATE_CLASS0
            if not bool(is_coord[b, at + 2]):
                continue
            got = (pred[b, at + 2 : at + 6] - COORDINATE_CLASS0).clamp(0, GRID)
            ious.append(_iou(got.tolist(), want.tolist()) > 0.5)
    return {
        "words": (pred == classes)[~is_coord].float().mean().item(),
        "coords_within_2": close[is_coord].float().mean().item(),
        "box_iou_0.5": float(np.mean(ious)),
    }


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pretrain(sizes: GroupedSizes, args: argparse.Namespace) -> tuple[GroupedVision, dict]:
    torch.manual_seed(args.seed)
    vision = GroupedVision(sizes)
    build_vision_grouped._init_positions(vision, sizes)
    head, score = scorer(args.objective, sizes)
    if args.init:
        vision = build_vision_grouped.load(sizes, Path(args.init) / "eva_vit_g.pth").train()
    protos = prototypes(PROTOTYPE_SEED, sizes)
    t0 = time.time()
    images, classes = load_images(args.seed, args.train_count, sizes.image_size)
    val_images, val_classes = load_images(args.seed + 1, args.val_count, sizes.image_size)
    logger.info("%d + %d images drawn in %.0f s", len(images), len(val_images), time.time() - t0)
    modules = [vision] if head is None else [vision, head]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    gen = torch.Generator().manual_seed(args.seed)
    acc: dict = {}
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(images), (args.batch_size,), generator=gen)
        tokens = vision.forward_with_features(normalise(images[idx]))[0]
        target = soft_targets(classes[idx])
        loss = -(target * score(tokens).log_softmax(-1)).sum(-1).mean()
        if head is None:
            loss = loss + (tokens - target @ protos).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = accuracy(vision, score, val_images, val_classes)
            logger.info(
                "step %d/%d  loss %.3f  val %s  (%.0f s)",
                step,
                args.steps,
                loss.item(),
                acc,
                time.time() - t0,
            )
    return vision.eval(), acc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tiny_world/checkpoint_v2")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--init", default=None, help="go on from the ViT in this folder")
    parser.add_argument("--objective", choices=("prototypes", "classifier"), default="prototypes")
    parser.add_argument("--train-count", type=int, default=12000)
    parser.add_argument("--val-count", type=int, default=300)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    vision, acc = pretrain(default_sizes(), args)
    path = build_vision_grouped.save(vision, Path(args.out))
    logger.info("ViT written to %s; val %s", path, acc)
    return acc


if __name__ == "__main__":
    main()

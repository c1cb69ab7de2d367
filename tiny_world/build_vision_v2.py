"""Build the frozen ViT of the tiny MiniGPT-v2: grouped patch tokens that hold slot words.

    python -m tiny_world.build_vision_v2 --objective classifier --out tiny_world/checkpoint_v2
    python -m tiny_world.build_vision_v2 --init tiny_world/checkpoint_v2 --seed 5002 \
        --steps 8000 --out tiny_world/checkpoint_v2
    python -m tiny_world.build_vision_v2 --init tiny_world/checkpoint_v2 --seed 5003 \
        --steps 8000 --tie 6 --out tiny_world/checkpoint_v2

MiniGPT-v2 feeds ``llama_proj`` the ViT's patch tokens after a fresh, never loaded
``ln_vision`` (CLS dropped), 4 consecutive tokens concatenated into one: at 140 px and patch 14,
100 patches -> ``SLOT_LEN`` (25) image tokens. The ViT is pre-trained, without any language,
through that same fixed normalisation so that image token ``i`` tells slot ``i`` of
:mod:`tiny_world.v2_layouts`: its word (background, then each thing left to right: colour, shape
and its grid box, then the filler) and its tags (a coordinate's thing's colour and shape, a
filler's background).

Three rounds. First (``--objective classifier``) one linear classifier shared by the 25 tokens
(shared, as ``llama_proj`` is one map for every position): each token's word (its tags left out
of that softmax; coordinates with a Gaussian soft target of width ``COORD_SIGMA``, so nearly
right boxes cost little) and, among colours and among shapes, its tags. Then (the default
objective, from the first round's ViT on new images) each slot word gets a fixed **prototype**
in the group tokens' space (per 64-wide chunk zero mean and norm 8, as ``ln_vision`` leaves a
token; seeded, unrelated to any LLM embedding; random for words, smooth along the grid for
coordinates: ``prototypes``), its similarities replace
the classifier, and each token is also pulled onto its word's prototype (a coordinate's: the
Gaussian blend of its neighbours') plus ``TAG_WEIGHT`` x its tags'. The prototypes are linearly
independent, so one linear map can send each (at any scale) onto any embedding the LLM reads as
that word, and such a sum onto the sum of embeddings that the LLM was trained on.
From scratch the prototype round learns boxes far more slowly than the classifier; after the
classifier round alone a linear map sends the tokens onto the words worse and the finetune found
fewer boxes (docs/tiny-world.md). In the first round ``ThingHeads`` give the ViT a short path to
each thing's shape, colour and box from its own patches (shapes right for 0.93 of the things
instead of 0.49). A third round (``--tie``) reads each image in the best of the block orders
that only swap things whose left edges nearly tie (``best_orders``). The heads and prototypes
are thrown away.
``eva_vit_g.pth`` (the real flat layout) and ``vision_sizes.json`` are written.

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
from tiny_world import build_vision_grouped, scenes, v2_layouts, world
from tiny_world.build_vision import FOREGROUND_DELTA, PATCH_FOREGROUND
from tiny_world.build_vision_grouped import GroupedSizes, GroupedVision
from tiny_world.v2_layouts import COORDINATE_CLASS0, GRID, SLOT_LEN, SLOT_WORDS
from tiny_world.world import to_jpeg_bytes

logger = logging.getLogger(__name__)

DEFAULT_SEED = 5000  # pre-training images; validation images at DEFAULT_SEED + 1
SOURCE_SIZE = 224  # the scenes' drawn size (make_synthetic's)
COORD_SIGMA = 1.0  # grid units
# The tags' share of a token's prototype target: small, so that the word (a coordinate's blend
# above all) dominates the token; llama_proj, linear, scales each prototype back onto its word.
TAG_WEIGHT = 0.3
PROTOTYPE_SEED = 0
ANCHOR_STEP, ANCHOR_WIDTH = 2, 2.0  # grid units: the coordinate prototypes' smoothness


def default_sizes() -> GroupedSizes:
    return GroupedSizes(image_size=140, patch_size=14, vit_embed_dim=64, vit_depth=4)


def load_images(
    seed: int, count: int, size: int, patch: int, tie: int = 0
) -> dict[str, torch.Tensor]:
    """uint8 images [N, 3, size, size] (drawn, JPEG, bicubic resize), slot classes [N, 25], tag
    weights [N, 25, len(SLOT_WORDS)], each patch's thing (``patch_owners``) [N, patches] and
    which block orders may stand for the scene (``v2_layouts.tie_orders``) [N, orders]."""
    images = np.empty((count, 3, size, size), dtype=np.uint8)
    classes = torch.empty((count, SLOT_LEN), dtype=torch.long)
    tags, owners = [], []
    orders = torch.zeros((count, len(v2_layouts.THING_ORDERS)), dtype=torch.bool)
    for i in range(count):
        sample = scenes.make_multi_sample(seed, i, SOURCE_SIZE)
        decoded = Image.open(io.BytesIO(to_jpeg_bytes(sample.image))).convert("RGB")
        resized = np.asarray(decoded.resize((size, size), Image.Resampling.BICUBIC))
        images[i] = resized.transpose(2, 0, 1)
        classes[i] = torch.tensor(v2_layouts.slot_classes(sample))
        tags.append(v2_layouts.slot_tags(sample))
        owners.append(patch_owners(sample, resized, patch))
        orders[i, v2_layouts.tie_orders(v2_layouts.grid_boxes(sample), tie)] = True
    return {
        "images": torch.from_numpy(images),
        "classes": classes,
        "tags": v2_layouts.tag_weights(tags),
        "owners": torch.stack(owners),
        "orders": orders,
    }


def patch_owners(sample: scenes.MultiSample, image: np.ndarray, patch: int) -> torch.Tensor:
    """Per patch of ``image`` (HWC uint8, the resized drawing): the index of the thing covering
    at least ``PATCH_FOREGROUND`` of it (the most covering), else -1. Foreground: pixels away
    from the background colour; a pixel belongs to the thing whose box holds it (boxes never
    overlap)."""
    size = image.shape[0]
    background = np.array(world.BACKGROUND_RGB[sample.scene.background])
    fg = np.abs(image.astype(np.int16) - background).max(-1) > FOREGROUND_DELTA * 255
    scale = size / sample.image.size[0]
    grid = size // patch
    owner = torch.full((grid * grid,), -1, dtype=torch.long)
    best = torch.zeros(grid * grid)
    for k, box in enumerate(sample.boxes):
        x1, y1, x2, y2 = (round(v * scale) for v in box)
        mine = np.zeros_like(fg)
        mine[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = True
        share = torch.from_numpy((fg & mine).astype(np.float32))
        share = nn.functional.avg_pool2d(share[None, None], patch)[0, 0].flatten()
        better = (share >= PATCH_FOREGROUND) & (share > best)
        owner[better] = k
        best = torch.maximum(best, share)
    return owner


class ThingHeads(nn.Module):
    """The ViT's short path to things (as ``build_vision`` gives the v1 ViT): per patch, the
    shape of the thing covering it; per thing, its colour, shape and grid box (a Gaussian soft
    target per coordinate) from its patches' mean. Dense, local targets, from which shapes and
    places are learnt much faster than from the slot words alone."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.patch = nn.Linear(width, len(world.SHAPES) + 1)
        self.colour = nn.Linear(width, len(world.COLOURS))
        self.shape = nn.Linear(width, len(world.SHAPES))
        self.box = nn.Linear(width, 4 * (GRID + 1))

    def loss(self, feats: torch.Tensor, owners: torch.Tensor, classes: torch.Tensor):
        """Cross entropies from ViT tokens [B, 1 + patches, D], owners [B, patches] and slot
        classes [B, SLOT_LEN]."""
        patches = feats[:, 1:]
        things = torch.arange(scenes.MAX_THINGS)
        at = 1 + things * v2_layouts.THING_WORDS  # each thing's colour slot
        colour = classes[:, at] - SLOT_WORDS.index(world.COLOURS[0])
        shape = classes[:, at + 1] - SLOT_WORDS.index(world.SHAPES[0])
        shape_or_bg = torch.where(
            owners >= 0, shape.gather(1, owners.clamp(min=0)), len(world.SHAPES)
        )
        dense = self.patch(patches)
        loss = nn.functional.cross_entropy(dense.flatten(0, 1), shape_or_bg.flatten())
        mask = (owners[:, None, :] == things[None, :, None]).float()  # [B, things, patches]
        count = mask.sum(-1)
        pooled = (mask @ patches) / count.clamp(min=1)[..., None]
        present = count > 0
        pooled = pooled[present]
        loss = loss + nn.functional.cross_entropy(self.colour(pooled), colour[present])
        loss = loss + nn.functional.cross_entropy(self.shape(pooled), shape[present])
        box = classes[:, at[:, None] + torch.arange(2, 6)][present]  # [things, 4] classes
        box_logits = self.box(pooled).reshape(-1, 4, GRID + 1).log_softmax(-1)
        target = soft_targets(box)[..., COORDINATE_CLASS0 : COORDINATE_CLASS0 + GRID + 1]
        return loss - (target * box_logits).sum(-1).mean()


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
    """[len(SLOT_WORDS), group x width]: each 64-wide chunk zero-mean with norm sqrt(width).

    Words get random prototypes; coordinates smooth ones along the grid (Gaussian blends, width
    ``ANCHOR_WIDTH``, of random anchors every ``ANCHOR_STEP`` grid units), so that the ViT's
    tokens, which know a thing's place smoothly, keep its box: with random ones the prototype
    round lost most boxes."""
    gen = torch.Generator().manual_seed(seed)
    width = sizes.vit_embed_dim
    p = torch.randn((len(SLOT_WORDS), sizes.group_size, width), generator=gen)
    anchors = torch.arange(0, GRID + 1, ANCHOR_STEP).float()
    values = torch.randn(len(anchors), sizes.group_size * width,
                         generator=torch.Generator().manual_seed(seed + 1))  # fmt: skip
    blend = torch.exp(-((torch.arange(GRID + 1).float()[:, None] - anchors) ** 2)
                      / (2 * ANCHOR_WIDTH**2))  # fmt: skip
    coords = slice(COORDINATE_CLASS0, COORDINATE_CLASS0 + GRID + 1)
    p[coords] = (blend @ values).reshape(GRID + 1, sizes.group_size, width)
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


def slot_loss(tokens, logits, classes, tags, protos: torch.Tensor | None) -> torch.Tensor:
    """Cross entropy of each token's word (its tags left out of the softmax), of the coordinate
    slots' colour and shape tags (each among its kind), and with ``protos`` the squared distance
    to the mixture of prototypes the LLM reads as that slot (word + tags)."""
    main = soft_targets(classes)
    loss = -(main * logits.masked_fill(tags > 0, -1e4).log_softmax(-1)).sum(-1).mean()
    for kind in (world.COLOURS, world.SHAPES):
        idx = torch.tensor([SLOT_WORDS.index(w) for w in kind])
        tagged = tags[..., idx].sum(-1) > 0
        want = tags[..., idx][tagged].argmax(-1)
        loss = loss + nn.functional.cross_entropy(logits[..., idx][tagged], want)
    if protos is not None:
        loss = loss + (tokens - (main + TAG_WEIGHT * tags) @ protos).pow(2).mean()
    return loss


ORDER_MAPS = torch.tensor([v2_layouts.order_map(o) for o in v2_layouts.THING_ORDERS])


@torch.no_grad()
def best_orders(logits, classes, tags, orders) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes, tags) with each image's things in the block order, among its allowed
    ``orders`` [B, orders], whose words its tokens' ``logits`` score best (the identity
    where no other is allowed): things whose left edges nearly tie may come in either order,
    but each block must hold one thing, so the slot never pairs one's box with another's
    colour (as DETR matches its predictions to the objects before the loss)."""
    costs = []
    for where in ORDER_MAPS:
        picked = logits.masked_fill(tags[:, where] > 0, -1e4).log_softmax(-1)
        costs.append(-(soft_targets(classes[:, where]) * picked).sum((-1, -2)))
    best = torch.stack(costs, 1).masked_fill(~orders, torch.inf).argmin(1)
    where = ORDER_MAPS[best]  # [B, SLOT_LEN]
    return classes.gather(1, where), tags.gather(1, where[..., None].expand_as(tags))


@torch.no_grad()
def accuracy(vision: GroupedVision, score: Callable, data: dict) -> dict[str, float]:
    """From single tokens' best-scoring words: words right (non-coordinate slots), shapes right
    (shape slots), coordinates within 2 grid units, the coordinate slots' colour and shape tags
    right, and the share of things whose predicted box has IoU > 0.5 with the true one; each
    image's things in its best allowed block order (``best_orders``)."""
    vision.eval()
    images, classes = data["images"], data["classes"]
    scores = torch.cat(
        [
            score(vision.forward_with_features(normalise(images[s : s + 128]))[0])
            for s in range(0, len(images), 128)
        ]
    )
    vision.train()
    classes, tags = best_orders(scores, classes, data["tags"], data["orders"])
    coords = slice(COORDINATE_CLASS0, COORDINATE_CLASS0 + GRID + 1)
    is_coord = (classes >= COORDINATE_CLASS0) & (classes <= COORDINATE_CLASS0 + GRID)
    word_scores = scores.masked_fill(tags > 0, -torch.inf)
    word_scores[..., coords] = -torch.inf
    words = word_scores.argmax(-1)
    pred = torch.where(is_coord, scores[..., coords].argmax(-1) + COORDINATE_CLASS0, words)
    is_shape = torch.isin(classes, torch.tensor([SLOT_WORDS.index(s) for s in world.SHAPES]))
    ious = []
    for b in range(len(classes)):
        for t in range(scenes.MAX_THINGS):
            at = 1 + t * v2_layouts.THING_WORDS
            if bool(is_coord[b, at + 2]):
                want = classes[b, at + 2 : at + 6] - COORDINATE_CLASS0
                got = pred[b, at + 2 : at + 6] - COORDINATE_CLASS0
                ious.append(_iou(got.tolist(), want.tolist()) > 0.5)
    return {
        "words": (pred == classes)[~is_coord].float().mean().item(),
        "shapes": (pred == classes)[is_shape].float().mean().item(),
        "coords_within_2": ((pred - classes).abs() <= 2)[is_coord].float().mean().item(),
        "tags": _tags_right(scores, tags)[is_coord].float().mean().item(),
        "box_iou_0.5": float(np.mean(ious)),
    }


def _tags_right(scores: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """[N, SLOT_LEN]: the best-scoring colour and shape are the slot's tags (where it has any)."""
    right = torch.ones(scores.shape[:-1], dtype=torch.bool)
    for group in (world.COLOURS, world.SHAPES):
        idx = torch.tensor([SLOT_WORDS.index(w) for w in group])
        best = scores[..., idx].argmax(-1)
        right &= tags[..., idx].gather(-1, best[..., None])[..., 0] > 0
    return right


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
    # the short path teaches the first round; in the second it would pull the same patch
    # tokens away from the prototypes (the boxes were lost)
    thing_heads = ThingHeads(sizes.vit_embed_dim) if head is not None else None
    t0 = time.time()
    data = load_images(args.seed, args.train_count, sizes.image_size, sizes.patch_size, args.tie)
    val = load_images(args.seed + 1, args.val_count, sizes.image_size, sizes.patch_size, args.tie)
    drawn = time.time() - t0
    logger.info("%d + %d images drawn in %.0f s", args.train_count, args.val_count, drawn)
    modules = [vision] if head is None else [vision, thing_heads, head]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    gen = torch.Generator().manual_seed(args.seed)
    acc: dict = {}
    for step in range(1, args.steps + 1):
        idx = torch.randint(args.train_count, (args.batch_size,), generator=gen)
        tokens, feats = vision.forward_with_features(normalise(data["images"][idx]))
        logits, canonical = score(tokens), data["classes"][idx]
        classes, tags = best_orders(logits, canonical, data["tags"][idx], data["orders"][idx])
        loss = slot_loss(tokens, logits, classes, tags, protos if head is None else None)
        if thing_heads is not None:
            loss = loss + thing_heads.loss(feats, data["owners"][idx], canonical)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = accuracy(vision, score, val)
            logger.info(
                "step %d/%d  loss %.3f  val %s  (%.0f s)",
                step,
                args.steps,
                loss.item(),
                " ".join(f"{k} {v:.3f}" for k, v in acc.items()),
                time.time() - t0,
            )
    return vision.eval(), acc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tiny_world/checkpoint_v2")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--init", default=None, help="go on from the ViT in this folder")
    parser.add_argument("--objective", choices=("prototypes", "classifier"), default="prototypes")
    parser.add_argument("--train-count", type=int, default=24000)
    parser.add_argument("--val-count", type=int, default=300)
    parser.add_argument("--steps", type=int, default=16000)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument(
        "--tie", type=int, default=0,
        help="things whose left edges lie within this many grid units may come in either order",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    vision, acc = pretrain(default_sizes(), args)
    path = build_vision_grouped.save(vision, Path(args.out))
    logger.info("ViT written to %s; val %s", path, acc)
    return acc


if __name__ == "__main__":
    main()

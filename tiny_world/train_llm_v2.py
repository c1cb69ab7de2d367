"""Train the tiny MiniGPT-v2's LLM, text only, on the v2 layouts with slot words.

    python -m tiny_world.train_llm_v2 --tokenizer tiny_world/checkpoint_v2/llama \\
        --out tiny_world/checkpoint_v2/llama

Sequences are :mod:`tiny_world.v2_layouts`' (both layouts, all five tasks). The slot is what a
linear ``llama_proj`` will make of the vision side's image tokens: its word's embedding plus its
tags' (``v2_layouts.slot_tags``: a coordinate also carries its thing's colour and shape, a
filler the background), and never exactly that: each coordinate is a Gaussian blend of the
embeddings of neighbouring coordinates around the true one (width drawn up to ``--coord-blur``;
the answer stays the true value), and every slot gets noise (``--slot-noise`` x the embeddings'
RMS). ``[identify]`` questions ask for a box
moved by up to ``--box-jitter`` per coordinate (the answer: the thing of the nearest box).
With ``--tie``, the blocks of things whose left edges nearly tie come in either order.
A fresh LLM's grid coordinates start smooth along the grid (``--coord-periods``), so that an
asked box can be matched against the slots' boxes.

Scenes come from a pool of ``--scenes`` drawn at 100 px (one pixel = one grid unit), tasks and
templates drawn per sequence. Writes an HF LLaMA folder (the tokenizer's files copied in).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import torch

from minigpt4.common.boxes import clean_ref_answer, compute_iou, ref_answer_box
from tiny_world import scenes, v2_layouts
from tiny_world.evaluate_v2 import named_pairs
from tiny_world.train_llm import build_model, cosine_schedule, pad, write_llm_folder
from tiny_world.v2_layouts import COORDINATE_CLASS0, GRID, IGNORE, SLOT_LEN, SLOT_WORDS

logger = logging.getLogger(__name__)

DEFAULT_SEED = 4000
SCENE_SIZE = 100  # pixels: the grid's own resolution
TASK_WEIGHTS = {"refer": 0.35, "identify": 0.25, "caption": 0.1, "grounding": 0.2, "vqa": 0.1}
COORD_PERIODS = [4.0, 6.5, 10.0, 16.0, 25.0, 40.0, 64.0, 100.0, 160.0]
LAYOUT_WEIGHTS = {"train": 0.6, "infer": 0.4}


def scene_pool(seed: int, count: int) -> list[scenes.MultiSample]:
    return [scenes.make_multi_sample(seed, i, size=SCENE_SIZE) for i in range(count)]


def smooth_coordinates(model, coordinate_ids: list[int], periods: list[float], seed: int) -> None:
    """Start the grid coordinates' input embeddings smooth along the grid: each row its random
    start plus sines and cosines of the coordinate at ``periods`` (grid units) in a random
    subspace, of the same norm. Neighbouring coordinates then start alike, so attention can
    match an asked box against the slots' boxes (``[identify]``) from the first step; from
    random rows the tiny LLM named a random thing of the scene."""
    table = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(seed)
    values = torch.arange(len(coordinate_ids)).float()[:, None]
    angles = 2 * math.pi * values / torch.tensor(periods)[None]
    code = torch.cat([angles.cos(), angles.sin()], dim=1)  # [coordinates, 2 x periods]
    basis, _ = torch.linalg.qr(torch.randn(table.shape[1], code.shape[1], generator=gen))
    smooth = code @ basis.T  # rows of norm sqrt(len(periods))
    rows = table.detach()[coordinate_ids]
    scale = rows.norm(dim=1).mean() / math.sqrt(len(periods))
    with torch.no_grad():
        table[coordinate_ids] = rows + scale * smooth


def make_batch(
    maker, pool, rng: random.Random, size: int, jitter: int, weights: dict, tie: int = 0
):
    """(ids, labels, mask, slot start [B], slot classes [B, SLOT_LEN], tag weights [B, SLOT_LEN,
    len(SLOT_WORDS)]); tasks by ``weights``; with ``tie``, the blocks of things whose left
    edges lie within ``tie`` grid units in an order drawn from ``v2_layouts.tie_orders`` (the
    texts unchanged)."""
    seqs, starts, classes, tags = [], [], [], []
    for _ in range(size):
        sample = rng.choice(pool)
        task = rng.choices(list(weights), weights=list(weights.values()))[0]
        layout = rng.choices(list(LAYOUT_WEIGHTS), weights=list(LAYOUT_WEIGHTS.values()))[0]
        ids, labels = maker.make(layout, task, sample, rng, jitter)
        words, keys = v2_layouts.slot_classes(sample), v2_layouts.slot_tags(sample)
        starts.append(_find(ids, [maker.slot_ids[c] for c in words]))
        if tie:
            orders = v2_layouts.tie_orders(v2_layouts.grid_boxes(sample), tie)
            where = v2_layouts.order_map(v2_layouts.THING_ORDERS[rng.choice(orders)])
            words, keys = [words[i] for i in where], [keys[i] for i in where]
        classes.append(words)
        tags.append(keys)
        seqs.append((ids, labels))
    ids, labels, mask = pad(seqs, maker.tok.eos_token_id)
    tag_weights = v2_layouts.tag_weights(tags)
    return ids, labels, mask, torch.tensor(starts), torch.tensor(classes), tag_weights


def _find(ids: list[int], slot: list[int]) -> int:
    for start in range(len(ids) - len(slot) + 1):
        if ids[start : start + len(slot)] == slot:
            return start
    raise ValueError("slot not found in the sequence")


def slot_weights(classes: torch.Tensor, blur: float, gen: torch.Generator) -> torch.Tensor:
    """[B, SLOT_LEN, len(SLOT_WORDS)]: one-hot rows, coordinates blurred over their
    neighbours by a Gaussian of a width drawn in [0, blur] per slot."""
    weights = torch.nn.functional.one_hot(classes, len(SLOT_WORDS)).float()
    is_coord = (classes >= COORDINATE_CLASS0) & (classes <= COORDINATE_CLASS0 + GRID)
    value = (classes - COORDINATE_CLASS0).float()[..., None]
    sigma = torch.rand(classes.shape, generator=gen)[..., None] * blur + 1e-3
    grid = torch.arange(GRID + 1).float()
    blurred = torch.exp(-((grid - value) ** 2) / (2 * sigma**2))
    blurred = blurred / blurred.sum(-1, keepdim=True)
    coords = slice(COORDINATE_CLASS0, COORDINATE_CLASS0 + GRID + 1)
    weights[..., coords] = torch.where(is_coord[..., None], blurred, weights[..., coords])
    return weights


def input_embeddings(model, maker, ids, starts, classes, tags, args, gen) -> torch.Tensor:
    """The rows' embeddings with the slot's tags added, blurred and noised (see the module's
    doc)."""
    table = model.get_input_embeddings()
    embeds = table(ids)
    words = table(torch.tensor(maker.slot_ids))  # [len(SLOT_WORDS), H]
    slot = (slot_weights(classes, args.coord_blur, gen) + tags) @ words
    if args.slot_noise:
        rms = table.weight.detach().pow(2).mean().sqrt()
        slot = slot + args.slot_noise * rms * torch.randn(slot.shape, generator=gen)
    where = (starts[:, None] + torch.arange(SLOT_LEN)[None])[..., None].expand_as(slot)
    return embeds.scatter(1, where, slot)


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits, labels = logits[:, :-1], labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE
    )


def greedy_answer(model, maker, instruction: str, sample: scenes.MultiSample) -> str:
    """The LLM's greedy answer in the inference layout with the scene's exact slot (its words
    and tags, no blur, no noise)."""
    classes = v2_layouts.slot_classes(sample)
    slot = [maker.slot_ids[c] for c in classes]
    ids, labels = maker.encode("infer", instruction, "", slot)
    prompt = [i for i, label in zip(ids, labels, strict=True) if label == IGNORE]
    exact = argparse.Namespace(coord_blur=0.0, slot_noise=0.0)
    embeds = input_embeddings(
        model,
        maker,
        torch.tensor([prompt]),
        torch.tensor([_find(prompt, slot)]),
        torch.tensor([classes]),
        v2_layouts.tag_weights([v2_layouts.slot_tags(sample)]),
        exact,
        None,
    )
    out = model.generate(
        inputs_embeds=embeds,
        attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
        max_new_tokens=60,
        do_sample=False,
        eos_token_id=maker.tok.eos_token_id,
        pad_token_id=maker.tok.eos_token_id,
    )
    return maker.tok.decode(out[0], skip_special_tokens=True).strip()


@torch.no_grad()
def word_slot_accuracy(model, maker, seed: int, count: int) -> dict[str, float]:
    """Greedy inference-layout answers with exact slots: refer (IoU > 0.5), identify (the first
    colour + shape named is the thing's) and caption (exact text)."""
    model.eval()
    rng = random.Random(f"tiny-v2-check:{seed}")
    pool = scene_pool(seed + 1, count)
    right = dict.fromkeys(("refer", "identify", "caption"), 0)
    for sample in pool:
        for task in right:
            instruction, answer = v2_layouts.task_texts(task, sample, rng, 2)
            text = greedy_answer(model, maker, instruction, sample)
            if task == "refer":
                got = ref_answer_box(clean_ref_answer(text), GRID, GRID)
                want = ref_answer_box(clean_ref_answer(answer), GRID, GRID)
                right[task] += got is not None and compute_iou(got, want) > 0.5
            elif task == "identify":
                right[task] += named_pairs(text)[:1] == named_pairs(answer)[:1]
            else:
                right[task] += text == answer
    model.train()
    return {task: hits / count for task, hits in right.items()}


def train(args: argparse.Namespace):
    tok = v2_layouts.load_tokenizer(args.tokenizer)
    maker = v2_layouts.V2SequenceMaker(tok)
    model = build_model(tok, args)
    if args.coord_periods and not args.init:
        coordinate_ids = maker.slot_ids[COORDINATE_CLASS0 : COORDINATE_CLASS0 + GRID + 1]
        smooth_coordinates(model, coordinate_ids, args.coord_periods, args.seed)
    pool = scene_pool(args.seed, args.scenes)
    rng = random.Random(f"tiny-llm-v2:{args.seed}")
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(args.steps))
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        ids, labels, mask, starts, classes, tags = make_batch(
            maker, pool, rng, args.batch_size, args.box_jitter, args.task_weights, args.tie
        )
        embeds = input_embeddings(model, maker, ids, starts, classes, tags, args, gen)
        loss = loss_of(model(inputs_embeds=embeds, attention_mask=mask).logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.log_every == 0:
            logger.info(
                "step %d/%d  loss %.4f  (%.0f s)", step, args.steps, loss.item(), time.time() - t0
            )
        if args.check_every and step and step % args.check_every == 0:
            logger.info("  word slots: %s", word_slot_accuracy(model, maker, args.seed, 50))
    checks = word_slot_accuracy(model, maker, args.seed, 100)
    logger.info(
        "step %d  loss %.4f  word slots %s  (%.0f s)",
        args.steps,
        loss.item(),
        checks,
        time.time() - t0,
    )
    return model.eval(), checks


def _weights(value: str) -> dict[str, float]:
    pairs = [item.split("=") for item in value.split(",")]
    weights = {task: float(w) for task, w in pairs}
    unknown = set(weights) - set(v2_layouts.TASKS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown tasks {sorted(unknown)}; the tasks are {v2_layouts.TASKS}"
        )
    return weights


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default="tiny_world/checkpoint_v2/llama")
    parser.add_argument("--out", default="tiny_world/checkpoint_v2/llama")
    parser.add_argument("--init", default=None, help="go on from the LLM in this folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument("--scenes", type=int, default=20000)
    parser.add_argument("--coord-blur", type=float, default=1.5)
    parser.add_argument("--slot-noise", type=float, default=0.3)
    parser.add_argument("--box-jitter", type=int, default=3)
    parser.add_argument(
        "--tie", type=int, default=0,
        help="slot blocks of things whose left edges lie within this many grid units come in "
        "either order (the ViT's --tie)",
    )  # fmt: skip
    parser.add_argument(
        "--coord-periods",
        type=lambda v: [float(p) for p in v.split(",")] if v else [],
        default=COORD_PERIODS,
        help="periods (grid units) of the coordinates' smooth start, comma-separated; '' for none",
    )
    parser.add_argument(
        "--task-weights",
        type=_weights,
        default=TASK_WEIGHTS,
        help="task=weight,... (default: %(default)s)",
    )
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--check-every", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    model, checks = train(args)
    write_llm_folder(model, args, {**checks, **_init_recipe(args.init)})
    return checks


def _init_recipe(folder: str | None) -> dict:
    """The recipe of the LLM ``--init`` went on from (its ``tiny_world_llm.json``), so that the
    written folder tells every round it took."""
    record = Path(folder, "tiny_world_llm.json") if folder else None
    if record is None or not record.exists():
        return {}
    return {"init_recipe": json.loads(record.read_text())}


if __name__ == "__main__":
    main()

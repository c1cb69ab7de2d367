"""Train the tiny world's LLM: a small ``LlamaForCausalLM`` that learnt the world's language.

    python -m tiny_world.train_llm --tokenizer tiny_world/checkpoint/llama \\
        --out tiny_world/checkpoint/llama

Text only, no images. Every training sequence has the layout MiniGPT-4 will later feed the LLM,
token for token, with one difference: where MiniGPT-4 puts the ``num_query_token`` projected image
embeddings, these sequences hold as many *words* describing the scene (its colour, shape, size,
position and background words, drawn at random with repetition, in random order: a bag of
words). The LLM so learns to read its captions and answers off that slot. It never sees a pixel;
teaching it to read *images* is left to MiniGPT-4's ``llama_proj``, which must learn to map the
Q-Former's query vectors to embeddings the LLM reads like those words.

Four layouts, each tokenized exactly as MiniGPT-4 tokenizes it (segments tokenized separately,
BOS only at the start):
- stage 1: ``<s> [slot] caption\\n``
- stage 2: ``<s> ###Human: <Img> [slot] </Img> <instruction> ###Assistant: <description>###``
- demo:    ``<s> <CONV_VISION system>###Human: <Img> [slot] </Img> <question>###Assistant:``
  ``<answer>###`` (sometimes with a follow-up question and answer).
- yesno:   the demo's conversation with 1-6 yes/no questions (``--yes-no-turns``; "Is there a
  red shape in the image? Please answer yes or no."), each answered "Yes" or "No", some after
  "Describe this image." and its answer (``--yes-no-described``).
and a fifth that is no MiniGPT-4 layout, a drill: ``<s> [slot] red Yes, circle No, ...\\n``.
``--template llama2`` makes the LLaMA-2 Chat variant's layouts instead (stage 1, stage 2 and demo
in the ``[INST]`` template, :mod:`tiny_world.llama2_layouts`), for its 16 grouped image tokens.

The defaults make the description-only LLM (stage 1, stage 2 and demo layouts); the shipped LLM
is ``YES_NO_RECIPE`` run from it with ``--init``, which teaches yes/no answers as well. They need
a comparison (is the question's word among the slot's?), which the tiny LLM did not find in the
conversations (chance for 400-2000 steps; docs/tiny-world.md). The drill warm-up, where the
answer follows the word it is about, is what made it find it on word slots; a loss term of the
answers' own keeps them weighing. What made it work through MiniGPT-4's stages is a slot that
looks like what a linear ``llama_proj`` makes of the image: each embedding a random mixture of
the scene's words (``--slot-mix``), plus a share of an absent word (``--slot-distract``, so that
a trace of "blue" is not a "Yes") and Gaussian noise (``--slot-noise``). Yes/no conversations
that start with the image's description (``--yes-no-described``) and 3000 steps keep the demo's
follow-up answers right (0.91 of them without; docs/tiny-world.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from minigpt4.common.atomic_write import atomic_write_files
from tiny_world import text, world

logger = logging.getLogger(__name__)

DEFAULT_SEED = 2000
DEFAULT_SLOT_LEN = 32  # = num_query_token of the vision side
IGNORE = -100
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
# The mix after the warm-ups (none by default). The defaults, without "yesno" and "drill", made the
# description-only LLM; the shipped one is YES_NO_RECIPE's run from it with --init (docs).
LAYOUT_WEIGHTS = {"stage1": 0.3, "stage2": 0.35, "demo": 0.35, "yesno": 0.0, "drill": 0.0}
YES_NO_RECIPE = (
    "--steps 3000 --drill-warmup 250 --yes-no-warmup 300 --yes-no-weight 0.5 "
    "--drill-weight 0.4 --slot-noise 0.5 --mix-decision-loss --slot-mix 1.0 --slot-distract 0.3 "
    "--yes-no-described 0.5"
)
FOLLOW_UP_PROB = 0.3
YES_NO_MAX_TURNS = 6  # yes/no questions per "yesno" conversation: 1 to this many
MME_SUFFIX_PROB = 0.75  # the other yes/no questions are asked bare, as POPE asks them
DRILL_ITEMS = 8  # "value: Yes/No" items per drill sequence
YES_NO_CHECK_PAIRS = 40  # MME pairs per attribute in the yes/no check
TEMPLATES = ("vicuna", "llama2")  # --template: whose layouts the sequences have


class SequenceMaker:
    """Builds tokenized training sequences (ids, labels) for random scenes."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        slot_len: int,
        follow_up_prob: float = FOLLOW_UP_PROB,
        yes_no_turns: int = YES_NO_MAX_TURNS,
        described_prob: float = 0.0,
    ) -> None:
        self.tok = tokenizer
        self.slot_len = slot_len
        self.follow_up_prob = follow_up_prob
        self.yes_no_turns = yes_no_turns
        self.described_prob = described_prob
        self.bos = tokenizer.bos_token_id
        self.prompts = [text.PROMPT_TEMPLATE.format(p) for p in text.alignment_prompts()]
        self.answer_pieces = [self.ids(a)[0] for a in (world.YES, world.NO)]
        # The word pieces of every attribute value, e.g. "top left" -> [▁top, ▁left].
        self.attribute_pieces: dict[str, dict[str, list[int]]] = {}
        for name, values in (
            ("colour", world.COLOURS),
            ("shape", world.SHAPES),
            ("size", world.SIZES),
            ("position", world.POSITIONS),
            ("background", world.BACKGROUNDS),
        ):
            self.attribute_pieces[name] = {v: self.ids(v) for v in values}
        # Every attribute word piece, once (the distractors of --slot-distract are drawn here).
        self.word_pieces = sorted(
            {p for pieces in self.attribute_pieces.values() for ids in pieces.values() for p in ids}
        )
        # A yes/no decision follows "Assistant:" (conversations) or the value word (drills).
        self.decision_after = [self.ids("Assistant:")[-1]] + self.word_pieces

    def ids(self, s: str, bos: bool = False) -> list[int]:
        return self.tok(s, add_special_tokens=bos).input_ids

    def slot(self, scene: world.Scene, rng: random.Random) -> list[int]:
        """``slot_len`` word pieces describing ``scene``: random attribute, random piece of it."""
        names = list(self.attribute_pieces)
        return [
            rng.choice(self.attribute_pieces[name][getattr(scene, name)])
            for name in (rng.choice(names) for _ in range(self.slot_len))
        ]

    def make(self, layout: str, scene: world.Scene, rng: random.Random) -> tuple[list, list]:
        """(input ids, labels) of one sequence; the BOS and the slot are never supervised."""
        slot = self.slot(scene, rng)
        if layout == "stage1":
            head = [self.bos]
            tail = self.ids(world.short_caption(scene, rng) + text.STAGE1_END_SYM)
        elif layout == "stage2":
            before, after = rng.choice(self.prompts).split(text.IMAGE_PLACEHOLDER)
            head = [self.bos] + self.ids(before)
            tail = self.ids(after) + self.ids(
                world.long_description(scene, rng) + text.STAGE2_END_SYM
            )
        elif layout == "demo":
            before, after = self.demo_split()
            head = self.ids(before, bos=True)
            question, answer = self._turn(scene, rng, first=True)
            after += " " + question + text.CONV_SEP + "Assistant:"
            if rng.random() < self.follow_up_prob:
                q2, a2 = self._turn(scene, rng, first=False)
                after += " " + answer + text.CONV_SEP + "Human: " + q2 + text.CONV_SEP
                after += "Assistant:"
                answer = a2
            # The chat tokenizes the text after the image as one segment and the model
            # generates the answer after it: the answer's pieces start with "▁" like here.
            tail = self.ids(after) + self.ids(answer + text.CONV_SEP)
        elif layout == "drill":
            head = [self.bos]
            items = [yes_no_value(scene, rng) for _ in range(DRILL_ITEMS)]
            tail = self.ids(", ".join(f"{v} {a}" for _, v, a in items) + text.STAGE1_END_SYM)
        elif layout == "yesno":
            head, tail = self._yes_no_conversation(scene, rng)
        else:
            raise ValueError(f"unknown layout {layout!r}")
        ids = head + slot + tail
        labels = [IGNORE] * (len(head) + len(slot)) + tail
        return ids, labels

    def demo_split(self) -> tuple[str, str]:
        """The demo's first message, before and after the image slot."""
        return (text.CONV_SYSTEM + text.CONV_SEP + "Human: " + text.IMAGE_MESSAGE).split(
            text.IMAGE_PLACEHOLDER
        )

    def _yes_no_conversation(self, scene: world.Scene, rng: random.Random) -> tuple[list, list]:
        """(head, tail) of a demo conversation of yes/no questions, each answer "Yes" or "No"."""
        before, after = self.demo_split()
        turns = [yes_no_turn(scene, rng) for _ in range(rng.randint(1, self.yes_no_turns))]
        # drawn only when asked for, so that runs without it repeat the earlier ones exactly
        if self.described_prob > 0 and rng.random() < self.described_prob:
            turns.insert(0, (text.DEMO_QUESTION, world.long_description(scene, rng)))
        after += " " + turns[0][0] + text.CONV_SEP + "Assistant:"
        for (_, answer), (question, _) in zip(turns, turns[1:]):
            after += " " + answer + text.CONV_SEP + "Human: " + question + text.CONV_SEP
            after += "Assistant:"
        return self.ids(before, bos=True), self.ids(after) + self.ids(turns[-1][1] + text.CONV_SEP)

    def _turn(self, scene: world.Scene, rng: random.Random, first: bool) -> tuple[str, str]:
        if first and rng.random() < 0.7:
            return text.DEMO_QUESTION, world.long_description(scene, rng)
        question, template = rng.choice(text.FOLLOW_UPS)
        return question, text.follow_up_answer(template, scene)


def yes_no_value(scene: world.Scene, rng: random.Random) -> tuple[str, str, str]:
    """A random attribute and a value of it, the scene's or another with equal odds: (attribute,
    value, "Yes" or "No")."""
    attribute = rng.choice(world.YES_NO_ATTRIBUTES)
    truth = getattr(scene, attribute)
    if rng.random() < 0.5:
        return attribute, truth, world.YES
    other = rng.choice([v for v in world.ATTRIBUTE_VALUES[attribute] if v != truth])
    return attribute, other, world.NO


def yes_no_turn(scene: world.Scene, rng: random.Random) -> tuple[str, str]:
    """A yes/no question about a random attribute, true or false with equal odds, and its answer."""
    attribute, value, answer = yes_no_value(scene, rng)
    question = world.yes_no_question(attribute, value)
    if rng.random() < MME_SUFFIX_PROB:
        question += world.MME_SUFFIX
    return question, answer


def batch(
    maker: SequenceMaker, rng: random.Random, size: int, pad_id: int, weights: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    layouts = rng.choices(list(weights), weights=list(weights.values()), k=size)
    seqs = [maker.make(layout, world.sample_scene(rng), rng) for layout in layouts]
    return pad(seqs, pad_id)


def pad(seqs: list[tuple[list, list]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded (ids, labels, attention mask) of (ids, labels) pairs."""
    size = len(seqs)
    length = max(len(ids) for ids, _ in seqs)
    ids = torch.full((size, length), pad_id)
    labels = torch.full((size, length), IGNORE)
    mask = torch.zeros((size, length), dtype=torch.long)
    for row, (i, lab) in enumerate(seqs):
        ids[row, : len(i)] = torch.tensor(i)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(i)] = 1
    return ids, labels, mask


def slot_embeddings(
    model: LlamaForCausalLM,
    ids: torch.Tensor,
    labels: torch.Tensor,
    slot_len: int,
    noise: float,
    mix: float = 0.0,
    distract: float = 0.0,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Input embeddings with the slot made to look like projected image embeddings, which a
    linear ``llama_proj`` makes as mixtures, never exactly a word's embedding: each slot
    embedding moved ``mix`` of the way to a random convex combination of the slot's (all words
    of the scene), plus ``distract`` x the embedding of a word of ``pool`` (the attribute words)
    that the slot lacks, plus Gaussian noise (``noise`` x the embeddings' RMS)."""
    table = model.get_input_embeddings()
    embeds = table(ids)
    if noise <= 0 and mix <= 0 and distract <= 0:
        return embeds
    end = (labels != IGNORE).int().argmax(1)  # the first supervised position: after the slot
    take = (end - slot_len)[:, None] + torch.arange(slot_len)[None]  # [B, slot_len] positions
    where = take[..., None].expand(-1, -1, embeds.shape[-1])
    slot = embeds.gather(1, where)
    if mix > 0:
        weights = torch.distributions.Dirichlet(torch.ones(slot_len)).sample(take.shape)
        slot = (1 - mix) * slot + mix * (weights @ slot)
    if distract > 0:
        present = (ids.gather(1, take)[..., None] == pool[None, None]).any(1)  # [B, len(pool)]
        absent = pool[torch.multinomial((~present).float(), slot_len, replacement=True)]
        slot = slot + distract * table(absent)
    rms = table.weight.detach().pow(2).mean().sqrt()
    # drawn for the whole batch, as the shipped LLM's run drew it (same numbers, same LLM)
    slot = slot + noise * rms * torch.randn_like(embeds).gather(1, where)
    return embeds.scatter(1, where, slot)


def lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, decisions: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token cross entropy, mean over the labels; with ``decisions`` (a mask [B, T] of
    label positions), that subset's own mean is added, so that a few yes/no answers weigh as
    much as all other tokens together without slowing those down."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE
    )
    if decisions is not None and bool(decisions[:, 1:].any()):
        picked = decisions[:, 1:]
        loss = loss + torch.nn.functional.cross_entropy(logits[picked], labels[picked])
    return loss


def decision_accuracy(maker: SequenceMaker, ids, logits, labels) -> float:
    """Share of the batch's yes/no decisions predicted right (nan without any)."""
    decision = decision_mask(maker, ids, labels)[:, 1:]
    right = logits[:, :-1].argmax(-1) == labels[:, 1:]
    return (right[decision].float().mean()).item()


def decision_mask(maker: SequenceMaker, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The labels that are yes/no decisions: a "Yes"/"No" piece right after "Assistant:" (in a
    conversation) or after a value word (in a drill)."""
    decision = torch.isin(labels, torch.tensor(maker.answer_pieces))
    decision[:, 1:] &= torch.isin(ids[:, :-1], torch.tensor(maker.decision_after))
    decision[:, 0] = False
    return decision


@torch.no_grad()
def slot_reading_accuracy(
    model: LlamaForCausalLM, maker: SequenceMaker, seed: int, count: int
) -> float:
    """Greedy answers to the demo question with a word slot: share naming colour and shape."""
    model.eval()
    rng = random.Random(f"tiny-llm-check:{seed}")
    stop = maker.ids(text.CONV_SEP)[-1]
    before, after = maker.demo_split()
    after += " " + text.DEMO_QUESTION + text.CONV_SEP + "Assistant:"
    hits = 0
    for _ in range(count):
        scene = world.sample_scene(rng)
        ids = maker.ids(before, bos=True) + maker.slot(scene, rng) + maker.ids(after)
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=60,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=maker.tok.eos_token_id,
        )
        answer = maker.tok.decode(out[0, len(ids) :]).split(text.CONV_SEP)[0]
        hits += world.scene_matches(scene, answer)
    model.train()
    return hits / count


@torch.no_grad()
def yes_no_accuracy(
    model: LlamaForCausalLM, maker: SequenceMaker, seed: int, count: int
) -> dict[str, float]:
    """Per attribute: share of MME pairs (true, false question; fresh demo conversations with a
    word slot) whose greedy first answer token is the right one of "Yes" / "No"."""
    model.eval()
    rng = random.Random(f"tiny-llm-yes-no-check:{seed}")
    before, after = maker.demo_split()
    first = dict(zip((world.YES, world.NO), maker.answer_pieces))
    seqs, answers, attributes = [], [], []
    for attribute in world.YES_NO_ATTRIBUTES:
        for _ in range(count):
            scene = world.sample_scene(rng)
            slot = maker.slot(scene, rng)
            for question, answer in world.question_pair(scene, attribute, rng):
                tail = after + " " + question + world.MME_SUFFIX + text.CONV_SEP + "Assistant:"
                ids = maker.ids(before, bos=True) + slot + maker.ids(tail)
                seqs.append((ids, ids))
                answers.append(first[answer])
                attributes.append(attribute)
    ids, _, mask = pad(seqs, maker.tok.eos_token_id)
    logits = torch.cat(
        [model(input_ids=i, attention_mask=m).logits for i, m in zip(ids.split(64), mask.split(64))]
    )
    last = logits[torch.arange(len(seqs)), mask.sum(1) - 1]
    right = (last.argmax(-1) == torch.tensor(answers)).tolist()
    model.train()
    return {
        a: sum(r for r, b in zip(right, attributes) if b == a) / (2 * count)
        for a in world.YES_NO_ATTRIBUTES
    }


def build_model(tok: PreTrainedTokenizerBase, args: argparse.Namespace) -> LlamaForCausalLM:
    """A fresh LLM of the size flags, or with ``--init`` the one in that folder."""
    torch.manual_seed(args.seed)
    if args.init:
        return LlamaForCausalLM.from_pretrained(args.init)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def layout_weights(args: argparse.Namespace, step: int) -> dict[str, float]:
    """The mix of layouts at ``step``: yes/no conversations only during the warm-up."""
    if step < args.drill_warmup:
        return {"drill": 1.0}
    if step < args.drill_warmup + args.yes_no_warmup:
        return {"yesno": 1.0, "drill": args.drill_weight}
    return {**LAYOUT_WEIGHTS, "yesno": args.yes_no_weight, "drill": args.drill_weight}


def cosine_schedule(steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    return lr_at


def log_checks(model: LlamaForCausalLM, maker: SequenceMaker, seed: int) -> dict[str, float]:
    yes_no = yes_no_accuracy(model, maker, seed, YES_NO_CHECK_PAIRS)
    logger.info("  yes/no on word slots: %s", "  ".join(f"{a} {v:.2f}" for a, v in yes_no.items()))
    return yes_no


def make_sequence_maker(args: argparse.Namespace) -> tuple[PreTrainedTokenizerBase, SequenceMaker]:
    """The tokenizer and sequence maker of ``--template``: v1's conversation (``vicuna``, read by
    transformers' tokenizer) or LLaMA-2 Chat's (``llama2``, the project's LLaMA tokenizer)."""
    if args.template == "llama2":
        from tiny_world import llama2_layouts

        tok = llama2_layouts.load_tokenizer(args.tokenizer)
        return tok, llama2_layouts.Llama2SequenceMaker(tok, args.slot_len, args.follow_up_prob)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    maker = SequenceMaker(
        tok, args.slot_len, args.follow_up_prob, args.yes_no_turns, args.yes_no_described
    )
    return tok, maker


def train(args: argparse.Namespace) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase, dict]:
    """Train the LLM as ``args`` (``main``'s flags) say; returns it, its tokenizer and checks."""
    tok, maker = make_sequence_maker(args)
    model = build_model(tok, args)
    rng = random.Random(f"tiny-llm:{args.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(args.steps))
    pool = torch.tensor(maker.word_pieces)
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        weights = layout_weights(args, step)
        ids, labels, mask = batch(maker, rng, args.batch_size, tok.eos_token_id, weights)
        embeds = slot_embeddings(
            model,
            ids,
            labels,
            args.slot_len,
            args.slot_noise,
            args.slot_mix,
            args.slot_distract,
            pool,
        )
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        in_warmup = step < args.drill_warmup + args.yes_no_warmup
        decisions = (
            decision_mask(maker, ids, labels) if in_warmup or args.mix_decision_loss else None
        )
        loss = lm_loss(logits, labels, decisions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.log_every == 0:
            logger.info(
                "step %d/%d  loss %.4f  decisions %.2f  (%.0f s)",
                step,
                args.steps,
                loss.item(),
                decision_accuracy(maker, ids, logits, labels),
                time.time() - t0,
            )
            if args.check_every and step % args.check_every == 0:
                log_checks(model, maker, args.seed)
    logger.info(
        "step %d/%d  loss %.4f  (%.0f s)", args.steps, args.steps, loss.item(), time.time() - t0
    )
    reading = slot_reading_accuracy
    if args.template == "llama2":
        from tiny_world.llama2_layouts import slot_reading_accuracy as reading
    checks = {"slot_reading_accuracy": reading(model, maker, args.seed, 100)}
    logger.info(
        "reads colour+shape off a word slot in %.0f%% of 100 demo answers",
        100 * checks["slot_reading_accuracy"],
    )
    if args.template == "vicuna":
        checks["yes_no_accuracy"] = log_checks(model, maker, args.seed)
    return model.eval(), tok, checks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=f"yes/no answers as well: {YES_NO_RECIPE}"
    )
    parser.add_argument("--tokenizer", default="tiny_world/checkpoint/llama")
    parser.add_argument("--out", default="tiny_world/checkpoint/llama")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--steps", type=int, default=1200, help="all steps, warm-ups included")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=172)
    parser.add_argument("--slot-len", type=int, default=DEFAULT_SLOT_LEN)
    parser.add_argument(
        "--template",
        choices=TEMPLATES,
        default="vicuna",
        help="the layouts of MiniGPT-4 v1 (vicuna) or of its LLaMA-2 Chat variant (llama2: "
        "descriptions and follow-ups only; --slot-len 16 for its 16 grouped image tokens)",
    )
    parser.add_argument(
        "--init",
        help="start from the LLM in this folder (e.g. the shipped one) instead of a fresh one "
        "of the size flags",
    )
    parser.add_argument(
        "--yes-no-weight",
        type=float,
        default=LAYOUT_WEIGHTS["yesno"],
        help="weight of yes/no conversations in the mix (the other three: 1.0)",
    )
    parser.add_argument(
        "--drill-weight",
        type=float,
        default=LAYOUT_WEIGHTS["drill"],
        help="weight of yes/no drills in the mix and in the yes/no warm-up",
    )
    parser.add_argument("--drill-warmup", type=int, default=0, help="first steps on drills only")
    parser.add_argument(
        "--yes-no-warmup",
        type=int,
        default=0,
        help="then steps on yes/no conversations and drills only",
    )
    parser.add_argument(
        "--mix-decision-loss",
        action="store_true",
        help="keep the yes/no answers' own loss term after the warm-ups",
    )
    parser.add_argument(
        "--slot-noise",
        type=float,
        default=0.0,
        help="Gaussian noise on the slot's embeddings, x their RMS",
    )
    parser.add_argument(
        "--slot-mix",
        type=float,
        default=0.0,
        help="move each slot embedding this share of the way to a random mixture of the slot's",
    )
    parser.add_argument(
        "--slot-distract",
        type=float,
        default=0.0,
        help="add this share of an absent attribute word's embedding to each slot embedding",
    )
    parser.add_argument(
        "--follow-up-prob",
        type=float,
        default=FOLLOW_UP_PROB,
        help="share of demo conversations that go on with a follow-up question",
    )
    parser.add_argument(
        "--yes-no-turns",
        type=int,
        default=YES_NO_MAX_TURNS,
        help="yes/no questions per yes/no conversation: 1 to this many",
    )
    parser.add_argument(
        "--yes-no-described",
        type=float,
        default=0.0,
        help="share of yes/no conversations that start with the image's description",
    )
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--check-every",
        type=int,
        default=0,
        help="also check yes/no answers every N steps (a multiple of --log-every)",
    )
    args = parser.parse_args(argv)
    yes_no = args.yes_no_weight or args.drill_weight or args.drill_warmup or args.yes_no_warmup
    if args.template == "llama2" and (yes_no or args.check_every):
        parser.error("--template llama2 has no yes/no layouts (drills, yes/no weights, checks)")
    if args.yes_no_turns < 1:
        parser.error(f"--yes-no-turns must be at least 1, not {args.yes_no_turns}")
    if not 0 <= args.yes_no_described <= 1:
        parser.error(f"--yes-no-described is a share: 0 to 1, not {args.yes_no_described}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    model, tok, checks = train(args)
    write_llm_folder(model, args, checks)
    return checks


def write_llm_folder(model, args: argparse.Namespace, checks: dict) -> None:
    """``args.out``: the model, the tokenizer folder's files and the recipe with its checks.

    Written beside, then moved in file by file: a crash while writing leaves the old folder, and
    --init may name --out (the weights it was read from stay mapped until replaced).
    """
    out = Path(args.out)
    with atomic_write_files(out) as tmp:
        model.save_pretrained(tmp)
        # The tokenizer folder's own files (tokenizer.model, as LLaMA ships it), not a re-export.
        for name in TOKENIZER_FILES:
            shutil.copyfile(Path(args.tokenizer) / name, Path(tmp) / name)
        skip = ("tokenizer", "out", "log_every", "check_every")
        record = {**{k: v for k, v in vars(args).items() if k not in skip}, **checks}
        (Path(tmp) / "tiny_world_llm.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("LLM written to %s", out)


if __name__ == "__main__":
    main()

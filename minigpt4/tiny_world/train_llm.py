"""Train the tiny world's LLM: a small ``LlamaForCausalLM`` that learnt the world's language.

    python -m minigpt4.tiny_world.train_llm --tokenizer minigpt4/tiny_world/checkpoint/llama \\
        --out minigpt4/tiny_world/checkpoint/llama

Text only, no images. Every training sequence has the layout MiniGPT-4 will later feed the LLM,
token for token, with one difference: where MiniGPT-4 puts the ``num_query_token`` projected image
embeddings, these sequences hold as many *words* describing the scene (its colour, shape, size,
position and background words, drawn at random with repetition, in random order: a bag of
words). The LLM so learns to read its captions and answers off that slot. It never sees a pixel;
teaching it to read *images* is left to MiniGPT-4's ``llama_proj``, which must learn to map the
Q-Former's query vectors to embeddings the LLM reads like those words.

Three layouts, each tokenized exactly as MiniGPT-4 tokenizes it (segments tokenized separately,
BOS only at the start):
- stage 1: ``<s> [slot] caption\\n``
- stage 2: ``<s> ###Human: <Img> [slot] </Img> <instruction> ###Assistant: <description>###``
- demo:    ``<s> <CONV_VISION system>###Human: <Img> [slot] </Img> <question>###Assistant:``
  ``<answer>###`` (sometimes with a follow-up question and answer).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from minigpt4.tiny_world import text, world

logger = logging.getLogger(__name__)

DEFAULT_SEED = 2000
DEFAULT_SLOT_LEN = 32  # = num_query_token of the vision side
IGNORE = -100
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
LAYOUT_WEIGHTS = {"stage1": 0.3, "stage2": 0.35, "demo": 0.35}
FOLLOW_UP_PROB = 0.3


class SequenceMaker:
    """Builds tokenized training sequences (ids, labels) for random scenes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, slot_len: int) -> None:
        self.tok = tokenizer
        self.slot_len = slot_len
        self.bos = tokenizer.bos_token_id
        self.prompts = [text.PROMPT_TEMPLATE.format(p) for p in text.alignment_prompts()]
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
            before, after = (
                text.CONV_SYSTEM + text.CONV_SEP + "Human: " + text.IMAGE_MESSAGE
            ).split(text.IMAGE_PLACEHOLDER)
            head = self.ids(before, bos=True)
            question, answer = self._turn(scene, rng, first=True)
            after += " " + question + text.CONV_SEP + "Assistant:"
            if rng.random() < FOLLOW_UP_PROB:
                q2, a2 = self._turn(scene, rng, first=False)
                after += " " + answer + text.CONV_SEP + "Human: " + q2 + text.CONV_SEP
                after += "Assistant:"
                answer = a2
            # The chat tokenizes the text after the image as one segment and the model
            # generates the answer after it: the answer's pieces start with "▁" like here.
            tail = self.ids(after) + self.ids(answer + text.CONV_SEP)
        else:
            raise ValueError(f"unknown layout {layout!r}")
        ids = head + slot + tail
        labels = [IGNORE] * (len(head) + len(slot)) + tail
        return ids, labels

    def _turn(self, scene: world.Scene, rng: random.Random, first: bool) -> tuple[str, str]:
        if first and rng.random() < 0.7:
            return text.DEMO_QUESTION, world.long_description(scene, rng)
        question, template = rng.choice(text.FOLLOW_UPS)
        return question, text.follow_up_answer(template, scene)


def batch(
    maker: SequenceMaker, rng: random.Random, size: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    layouts = rng.choices(list(LAYOUT_WEIGHTS), weights=list(LAYOUT_WEIGHTS.values()), k=size)
    seqs = [maker.make(layout, world.sample_scene(rng), rng) for layout in layouts]
    length = max(len(ids) for ids, _ in seqs)
    ids = torch.full((size, length), pad_id)
    labels = torch.full((size, length), IGNORE)
    mask = torch.zeros((size, length), dtype=torch.long)
    for row, (i, lab) in enumerate(seqs):
        ids[row, : len(i)] = torch.tensor(i)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(i)] = 1
    return ids, labels, mask


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


@torch.no_grad()
def slot_reading_accuracy(
    model: LlamaForCausalLM, maker: SequenceMaker, seed: int, count: int
) -> float:
    """Greedy answers to the demo question with a word slot: share naming colour and shape."""
    model.eval()
    rng = random.Random(f"tiny-llm-check:{seed}")
    stop = maker.ids(text.CONV_SEP)[-1]
    before, after = (text.CONV_SYSTEM + text.CONV_SEP + "Human: " + text.IMAGE_MESSAGE).split(
        text.IMAGE_PLACEHOLDER
    )
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


def train(
    tokenizer_dir: str,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    slot_len: int,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase, float]:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    maker = SequenceMaker(tok, slot_len)
    rng = random.Random(f"tiny-llm:{seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    for step in range(steps):
        ids, labels, mask = batch(maker, rng, batch_size, tok.eos_token_id)
        loss = lm_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            logger.info(
                "step %d/%d  loss %.4f  (%.0f s)", step, steps, loss.item(), time.time() - t0
            )
    acc = slot_reading_accuracy(model, maker, seed, 100)
    logger.info("reads colour+shape off a word slot in %.0f%% of 100 demo answers", 100 * acc)
    return model.eval(), tok, acc


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default="minigpt4/tiny_world/checkpoint/llama")
    parser.add_argument("--out", default="minigpt4/tiny_world/checkpoint/llama")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=172)
    parser.add_argument("--slot-len", type=int, default=DEFAULT_SLOT_LEN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    model, tok, acc = train(
        args.tokenizer,
        args.seed,
        args.steps,
        args.batch_size,
        args.lr,
        args.hidden,
        args.layers,
        args.heads,
        args.intermediate,
        args.slot_len,
    )
    out = Path(args.out)
    model.save_pretrained(out)
    # The tokenizer folder's own files (tokenizer.model, as LLaMA ships it), not a re-export.
    if Path(args.tokenizer).resolve() != out.resolve():
        for name in TOKENIZER_FILES:
            shutil.copyfile(Path(args.tokenizer) / name, out / name)
    (out / "tiny_world_llm.json").write_text(
        json.dumps(
            {
                **{k: v for k, v in vars(args).items() if k not in ("tokenizer", "out")},
                "slot_reading_accuracy": acc,
            },
            indent=2,
        )
        + "\n"
    )
    logger.info("LLM written to %s", out)
    return acc


if __name__ == "__main__":
    main()

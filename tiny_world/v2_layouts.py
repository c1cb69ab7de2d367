"""The tiny MiniGPT-v2's slot words and the LLM's training sequences in MiniGPT-v2's layouts.

The LLM (``train_llm_v2``) is trained text only on exactly what ``minigpt_v2`` feeds it, with
the ``SLOT_LEN`` image tokens replaced by **object-centric slot words**: the background word,
then each thing of the scene left to right as its colour, shape and grid box (``<x1>``,
``<y1>``, ``<x2>``, ``<y2>``, single pieces of the tokenizer), then ``FILLER`` up to
``SLOT_LEN``. The vision side (``build_vision_v2``) learns to put those words' classes into the
same positions of its grouped patch tokens; the finetune's ``llama_proj`` + LoRA then has to map
one into the other.

Two layouts, token for token the model's (the project's LLaMA tokenizer, segments apart):

- training rows: ``[BOS] "[INST] <Img>" [slot] "</Img> {instruction}  [/INST]" answer</s>``
  (the datasets' ``<Img><ImageHere></Img> {instruction} `` in ``prompt_template`` ``[INST] {}
  [/INST]``, no BOS in the segments, the answer and ``end_sym`` supervised);
- inference: ``CONV_VISION_minigptv2``'s ``<s>[INST] <Img>`` [slot] ``</Img> {question}
  [/INST]`` with the first segment tokenized with BOS (two BOS, as the chat and the batch
  evaluation build it), the answer and ``</s>`` supervised.

The tasks are the finetune config's: ``[refer]`` (expression -> the thing's box),
``[identify]`` (box -> expression), ``[caption]``, ``[grounding]`` (grounded caption) and
``[vqa]``, their instructions drawn from the datasets' pools and their texts through the
``blip_caption`` processor where the datasets put them through it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import torch

from minigpt4.common.boxes import format_box, pixels_to_grid
from minigpt4.conversation.templates import CONV_VISION_minigptv2
from minigpt4.datasets.v2 import templates
from minigpt4.models.prompt import IMAGE_PLACEHOLDER, segment_ids
from minigpt4.models.tokenizer import LlamaTokenizer
from minigpt4.processors.blip_processors import BlipCaptionProcessor
from tiny_world import scenes, world

IGNORE = -100
PROMPT_TEMPLATE = "[INST] {} [/INST]"  # the v2 configs' prompt_template
END_SYM = "</s>"
PAD_TOKEN = "$$"
GRID = 100
COORDINATES = tuple(f"<{i}>" for i in range(GRID + 1))
FILLER = "<none>"
THING_WORDS = 6  # colour, shape, x1, y1, x2, y2
SLOT_LEN = 25  # 140-px images, patch 14: 100 patches in groups of 4
TASKS = ("refer", "identify", "caption", "grounding", "vqa")
LAYOUTS = ("train", "infer")
# Pieces of their own: the grid coordinates, the phrase marks, the task tags and the chat marks.
USER_SYMBOLS = (
    *COORDINATES,
    FILLER,
    "<p>",
    "</p>",
    "[refer]",
    "[identify]",
    "[caption]",
    "[grounding]",
    "[vqa]",
    "[detection]",
    "[INST]",
    "[/INST]",
    "<Img>",
    "</Img>",
)
# The slot vocabulary: what one image token can stand for (the vision side's classes).
SLOT_WORDS = (*world.BACKGROUNDS, *world.COLOURS, *world.SHAPES, *COORDINATES, FILLER)
COORDINATE_CLASS0 = SLOT_WORDS.index(COORDINATES[0])

_process = BlipCaptionProcessor()


def load_tokenizer(folder: str) -> LlamaTokenizer:
    """The tokenizer ``minigpt_v2`` reads from ``folder`` (pad ``$$``)."""
    return LlamaTokenizer.from_folder(folder, pad_token=PAD_TOKEN)


def grid_boxes(sample: scenes.MultiSample) -> list[list[int]]:
    """Each thing's box on the 0-100 grid, as the datasets write it."""
    width, height = sample.image.size
    return [pixels_to_grid(box, width, height) for box in sample.boxes]


def slot_classes(sample: scenes.MultiSample) -> list[int]:
    """The ``SLOT_LEN`` slot words of a scene as indices of ``SLOT_WORDS``."""
    words = [sample.scene.background]
    for thing, box in zip(sample.scene.things, grid_boxes(sample), strict=True):
        words += [thing.colour, thing.shape, *(COORDINATES[v] for v in box)]
    words += [FILLER] * (SLOT_LEN - len(words))
    return [SLOT_WORDS.index(w) for w in words]


def slot_tags(sample: scenes.MultiSample) -> list[tuple[int, ...]]:
    """Per slot, the ``SLOT_WORDS`` whose embeddings are added to its word's: each coordinate
    slot also carries its thing's colour and shape, the key by which ``[refer]`` finds a box
    and ``[identify]`` names the thing of a box (a tiny LLM does not learn to find a box by the
    words before it), and each filler carries the background word (more places to read it)."""
    tags: list[tuple[int, ...]] = [()]
    for thing in sample.scene.things:
        key = (SLOT_WORDS.index(thing.colour), SLOT_WORDS.index(thing.shape))
        tags += [(), (), key, key, key, key]
    background = (SLOT_WORDS.index(sample.scene.background),)
    return tags + [background] * (SLOT_LEN - len(tags))


def tag_weights(tags: Sequence[Sequence[tuple[int, ...]]]) -> torch.Tensor:
    """[B, SLOT_LEN, len(SLOT_WORDS)]: 1 at each slot's tags (``slot_tags`` of B scenes)."""
    weights = torch.zeros((len(tags), SLOT_LEN, len(SLOT_WORDS)))
    for b, row in enumerate(tags):
        for i, extra in enumerate(row):
            weights[b, i, list(extra)] = 1.0
    return weights


# Every order of the things' blocks in the slot (the identity first).
THING_ORDERS = tuple(itertools.permutations(range(scenes.MAX_THINGS)))


def order_map(order: Sequence[int]) -> list[int]:
    """Slot positions -> the positions they take their word and tags from when the things'
    blocks are put in ``order`` (block ``b`` gets thing ``order[b]``'s)."""
    where = list(range(SLOT_LEN))
    for block, thing in enumerate(order):
        for w in range(THING_WORDS):
            where[1 + block * THING_WORDS + w] = 1 + thing * THING_WORDS + w
    return where


def tie_orders(boxes: Sequence[Sequence[int]], tie: int) -> list[int]:
    """Indices into ``THING_ORDERS`` of the block orders that only swap things whose grid boxes'
    left edges lie within ``tie`` grid units of each other (``boxes`` in scene order, left to
    right); ``tie`` 0: the identity only. Such things have no order an image shows reliably:
    from a ViT that must decide per token, their blocks came out mixed, one thing's box with
    another's colour."""
    if tie <= 0:
        return [0]
    count = len(boxes)
    allowed = []
    for k, order in enumerate(THING_ORDERS):
        if any(order[b] != b for b in range(count, scenes.MAX_THINGS)):
            continue
        swapped = [
            (order[b], order[c]) for b in range(count) for c in range(b + 1, count)
            if order[b] > order[c]
        ]  # fmt: skip
        if all(abs(boxes[i][0] - boxes[j][0]) <= tie for i, j in swapped):
            allowed.append(k)
    return allowed


def task_texts(
    task: str, sample: scenes.MultiSample, rng: random.Random, box_jitter: int = 0
) -> tuple[str, str]:
    """(instruction with its task tag, answer) of one sample, as the v2 datasets write them;
    ``box_jitter`` moves each coordinate of an ``[identify]`` question by up to that much."""
    things = sample.scene.things
    pick = rng.randrange(len(things))
    box = grid_boxes(sample)[pick]
    sentence = rng.choice(scenes.ref_sentences(things[pick]))
    if task == "refer":
        return rng.choice(templates.REFER_POOL).format(_process(sentence)), format_box(box)
    if task == "identify":
        asked = [min(GRID, max(0, v + rng.randint(-box_jitter, box_jitter))) for v in box]
        question = rng.choice(templates.IDENTIFY_POOL).format(format_box(asked))
        return question, _process(_process(sentence))
    if task == "caption":
        instruction = templates.CAPTION_TAG.format(rng.choice(templates.CAPTION_POOL))
        return instruction, _process(scenes.caption(sample.scene))
    if task == "grounding":
        return rng.choice(templates.GROUNDED_CAPTION_POOL), scenes.grounded_caption(sample)
    if task == "vqa":
        question, answer = rng.choice(scenes.vqa_pairs(sample.scene))
        return rng.choice(templates.VQA_POOL).format(_process(question)), _process(answer)
    raise ValueError(f"unknown task {task!r}; the tasks are {TASKS}")


def inference_prompt(question: str) -> str:
    """``CONV_VISION_minigptv2``'s prompt for one question about an uploaded image."""
    conv = CONV_VISION_minigptv2.copy()
    conv.append_message(conv.roles[0], f"<Img>{IMAGE_PLACEHOLDER}</Img> {question}")
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def training_prompt(instruction: str) -> str:
    """What ``minigpt_v2`` makes of a dataset's ``instruction_input`` (chat_template True)."""
    return PROMPT_TEMPLATE.format(templates.image_instruction(instruction))


class V2SequenceMaker:
    """(ids, labels) of the LLM's sequences, with the slot words at the image's positions."""

    def __init__(self, tokenizer: LlamaTokenizer) -> None:
        self.tok = tokenizer
        pieces = [w if w in USER_SYMBOLS else "▁" + w for w in SLOT_WORDS]
        self.slot_ids = [tokenizer.piece_to_id(p) for p in pieces]
        if tokenizer.unk_token_id in self.slot_ids:
            missing = [w for w, i in zip(SLOT_WORDS, self.slot_ids) if i == tokenizer.unk_token_id]
            raise ValueError(f"the tokenizer has no single piece for the slot words {missing}")

    def make(
        self, layout: str, task: str, sample: scenes.MultiSample, rng: random.Random, jitter: int
    ) -> tuple[list[int], list[int]]:
        instruction, answer = task_texts(task, sample, rng, jitter)
        slot = [self.slot_ids[c] for c in slot_classes(sample)]
        return self.encode(layout, instruction, answer, slot)

    def encode(
        self, layout: str, instruction: str, answer: str, slot: Sequence[int]
    ) -> tuple[list[int], list[int]]:
        """Ids with ``slot`` at the image and ``answer</s>`` after the prompt; labels on the
        answer only."""
        if layout == "train":
            before, after = training_prompt(instruction).split(IMAGE_PLACEHOLDER)
            head = [self.tok.bos_token_id] + self.tok.encode(before)
            after_ids = self.tok.encode(after)
        elif layout == "infer":
            head, after_ids = segment_ids(self.tok, inference_prompt(instruction))
        else:
            raise ValueError(f"unknown layout {layout!r}; the layouts are {LAYOUTS}")
        answer_ids = self.tok.encode(answer + END_SYM)
        ids = head + list(slot) + after_ids + answer_ids
        return ids, [IGNORE] * (len(ids) - len(answer_ids)) + answer_ids


def corpus_lines(seed: int, count: int) -> Iterator[str]:
    """Every text the v2 tasks write, for ``build_tokenizer --template v2`` (deterministic)."""
    rng = random.Random(f"tiny-v2-corpus:{seed}")
    for index in range(count):
        sample = scenes.make_multi_sample(seed, index, size=32)
        for task in TASKS:
            instruction, answer = task_texts(task, sample, rng)
            yield training_prompt(instruction).replace(IMAGE_PLACEHOLDER, "") + answer

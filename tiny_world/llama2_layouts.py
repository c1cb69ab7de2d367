"""The tiny LLM's training sequences in the LLaMA-2 Chat layouts (``train_llm --template llama2``).

Token for token what MiniGPT-4's LLaMA-2 variant (``arch: minigpt4``, ``model_type:
pretrain_llama2``) feeds its LLM, tokenized by the project's own LLaMA tokenizer (the original's
slow-tokenizer behaviour: a literal ``<s>`` in the text is the BOS id, the text after it a new
word), with the ``slot_len`` (16) grouped image tokens replaced by words describing the scene:

- stage 1: ``<s> [slot] caption\\n`` (no prompt, ``end_sym`` "\\n");
- stage 2: ``<s>[INST] <Img> [slot] </Img> <instruction> [/INST] <description></s>`` (the
  prompts of ``prompts/alignment.txt`` in ``prompt_template`` ``'[INST] {} [/INST] '``,
  ``end_sym`` ``</s>``: the EOS id, a target);
- demo: the chat's ``CONV_VISION_LLama2`` prompt, ``<s>`` + system +
  ``<s>[INST] <Img> [slot] </Img> <question> [/INST] <answer></s>``, sometimes with a follow-up
  ``<s>[INST] <question> [/INST] <answer></s>`` after the first answer (the chat stops at EOS).

Supervised is everything after the slot, as in the v1 layouts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from minigpt4.conversation.templates import IMAGE_MESSAGE, CONV_VISION_LLama2
from minigpt4.models.prompt import IMAGE_PLACEHOLDER, segment_ids
from minigpt4.models.tokenizer import LlamaTokenizer
from tiny_world import text, world
from tiny_world.train_llm import IGNORE, SequenceMaker

PROMPT_TEMPLATE = "[INST] {} [/INST] "  # the LLaMA-2 stage-2 and eval configs' prompt_template
END_SYM = "</s>"  # their end_sym
PAD_TOKEN = "$$"  # the variant's pad token (not in the tiny vocabulary: the unknown id, as there)
LAYOUTS = ("stage1", "stage2", "demo")


def load_tokenizer(folder: str) -> LlamaTokenizer:
    """The tokenizer the LLaMA-2 variant reads from ``folder`` (pad ``$$``)."""
    return LlamaTokenizer.from_folder(folder, pad_token=PAD_TOKEN)


def chat_prompt(turns: list[tuple[str, str | None]]) -> str:
    """The chat's prompt for an uploaded image and ``turns`` (question, answer; the last answer
    None: the turn the model answers), as ``Chat.upload_img`` + ``ask`` build it."""
    conv = CONV_VISION_LLama2.copy()
    for i, (question, answer) in enumerate(turns):
        conv.append_message(conv.roles[0], f"{IMAGE_MESSAGE} {question}" if i == 0 else question)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def corpus_lines(count: int) -> Iterator[str]:
    """The LLaMA-2 Chat prompts as the tokenizer sees them (split at each literal ``<s>``, which
    becomes the BOS id), as often as ``text.corpus`` repeats v1's, for ``build_tokenizer``."""
    questions = [text.DEMO_QUESTION] + [q for q, _ in text.FOLLOW_UPS]
    prompts = [chat_prompt([(q, None)]) for q in questions]
    prompts += [
        chat_prompt([(text.DEMO_QUESTION, "The image shows it."), (q, None)]) for q in questions
    ]
    prompts += [PROMPT_TEMPLATE.format(p) + END_SYM for p in text.alignment_prompts()]
    for _ in range(max(1, count // 8)):
        for prompt in prompts:
            yield from (chunk for chunk in prompt.split("<s>") if chunk)


class Llama2SequenceMaker(SequenceMaker):
    """:class:`~tiny_world.train_llm.SequenceMaker` for the LLaMA-2 Chat layouts (descriptions
    and follow-ups; the yes/no layouts are v1's only)."""

    def __init__(self, tokenizer: LlamaTokenizer, slot_len: int, follow_up_prob: float) -> None:
        super().__init__(tokenizer, slot_len, follow_up_prob)
        self.prompts = [PROMPT_TEMPLATE.format(p) for p in text.alignment_prompts()]

    def ids(self, s: str, bos: bool = False) -> list[int]:
        return self.tok.encode(s, add_bos=bos)

    @property
    def stop_id(self) -> int:
        """Where the chat's answer ends: the EOS id."""
        return self.tok.eos_token_id

    def make(self, layout: str, scene: world.Scene, rng: random.Random) -> tuple[list, list]:
        """(input ids, labels) of one sequence; the BOS, prompt head and slot never supervised."""
        slot = self.slot(scene, rng)
        prompt, answer = self.texts(layout, scene, rng)
        return self.encode(layout, prompt, answer, slot)

    def texts(self, layout: str, scene: world.Scene, rng: random.Random) -> tuple[str, str]:
        """(prompt with ``<ImageHere>`` or "" in stage 1, answer with its end symbol)."""
        if layout == "stage1":
            return "", world.short_caption(scene, rng) + text.STAGE1_END_SYM
        if layout == "stage2":
            prompt = rng.choice(self.prompts)
            return prompt, world.long_description(scene, rng) + END_SYM
        if layout == "demo":
            turns = [self._turn(scene, rng, first=True)]
            if rng.random() < self.follow_up_prob:
                turns.append(self._turn(scene, rng, first=False))
            return chat_prompt([*turns[:-1], (turns[-1][0], None)]), turns[-1][1] + END_SYM
        raise ValueError(f"the llama2 template has the layouts {LAYOUTS}, not {layout!r}")

    def encode(self, layout: str, prompt: str, answer: str, slot: list[int]) -> tuple[list, list]:
        """(ids, labels) of ``prompt`` with ``slot`` at its image and ``answer`` after it: in
        training rows ``[BOS][prompt][answer]``, the prompt's text without BOS; in the chat, its
        segments as the chat tokenizes them (BOS on the first)."""
        if layout == "demo":
            head, after = segment_ids(self.tok, prompt)
        else:
            before, after = prompt.split(IMAGE_PLACEHOLDER) if prompt else ("", "")
            head, after = [self.bos] + self.ids(before), self.ids(after)
        tail = after + self.ids(answer)
        return head + slot + tail, [IGNORE] * (len(head) + len(slot)) + tail

    def demo_segments(self, turns: list[tuple[str, str | None]]) -> tuple[list[int], list[int]]:
        """Token ids of the chat prompt before and after the image (BOS on the first)."""
        before, after = segment_ids(self.tok, chat_prompt(turns))
        return before, after


@torch.no_grad()
def slot_reading_accuracy(model, maker: Llama2SequenceMaker, seed: int, count: int) -> float:
    """Greedy answers to the chat's "Describe this image." with a word slot: share naming colour
    and shape."""
    model.eval()
    rng = random.Random(f"tiny-llm-check:{seed}")
    before, after = maker.demo_segments([(text.DEMO_QUESTION, None)])
    hits = 0
    for _ in range(count):
        scene = world.sample_scene(rng)
        ids = before + maker.slot(scene, rng) + after
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=60,
            do_sample=False,
            eos_token_id=maker.stop_id,
            pad_token_id=maker.stop_id,
        )
        answer = maker.tok.decode(out[0, len(ids) :], skip_special_tokens=True)
        hits += world.scene_matches(scene, answer)
    model.train()
    return hits / count

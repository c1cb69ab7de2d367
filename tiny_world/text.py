"""The text of the tiny world that the tiny tokenizer and the tiny LLM are built from.

Everything MiniGPT-4 ever feeds the LLM as text lives here: the world's captions and
descriptions, the stage-2 training prompts (``prompts/alignment.txt`` in ``prompt_template``), the
demo's ``CONV_VISION`` system text and roles, and the demo question. The strings are facts of
the original (FACTS.md section b) and must stay exact.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from minigpt4.conversation.templates import CONV_VISION, IMAGE_MESSAGE
from minigpt4.models.prompt import IMAGE_PLACEHOLDER
from tiny_world import world

# Stage-2 training template (train_configs/minigpt4_stage2_finetune.yaml) and the demo's
# conversation (CONV_VISION).
PROMPT_TEMPLATE = "###Human: {} ###Assistant: "
CONV_SYSTEM = CONV_VISION.system
CONV_SEP = CONV_VISION.sep
DEMO_QUESTION = "Describe this image."
STAGE1_END_SYM = "\n"
STAGE2_END_SYM = "###"

# Used when the repository's prompts/alignment.txt cannot be found (e.g. an installed package).
_ALIGNMENT_PROMPTS_FALLBACK: tuple[str, ...] = (
    "<Img><ImageHere></Img> Describe this image in detail.",
    "<Img><ImageHere></Img> Take a look at this image and describe what you notice.",
    "<Img><ImageHere></Img> Please provide a detailed description of the picture.",
    "<Img><ImageHere></Img> Could you describe the contents of this image for me?",
)

# Follow-up questions the tiny LLM can answer from the image slot in the demo.
FOLLOW_UPS: tuple[tuple[str, str], ...] = (
    ("What colour is the shape?", "The {shape} is {colour}."),
    ("What shape is in the image?", "It is a {colour} {shape}."),
    ("Where is the shape?", "The {shape} is in {pos}."),
    ("What colour is the background?", "The background is {bg}."),
    ("Is the shape small or large?", "The {shape} is {size}."),
)

POSITION_PHRASE: dict[str, str] = {
    "top left": "the top left corner",
    "top right": "the top right corner",
    "bottom left": "the bottom left corner",
    "bottom right": "the bottom right corner",
    "center": "the center",
}


def alignment_prompts() -> tuple[str, ...]:
    """The four stage-2 instructions, read from the repository's ``prompts/alignment.txt``."""
    path = Path(__file__).resolve().parents[2] / "prompts" / "alignment.txt"
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if IMAGE_PLACEHOLDER in ln]
        if lines:
            return tuple(lines)
    return _ALIGNMENT_PROMPTS_FALLBACK


def demo_prompt(question: str) -> str:
    """The prompt the demo's ``Chat`` builds for ``question`` about a freshly uploaded image."""
    conv = CONV_VISION.copy()
    conv.append_message(conv.roles[0], f"{IMAGE_MESSAGE} {question}")
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def follow_up_answer(template: str, scene: world.Scene) -> str:
    """Fill a follow-up answer template; "a orange" style articles do not occur in them."""
    text = template.format(
        shape=scene.shape,
        colour=scene.colour,
        size=scene.size,
        pos=POSITION_PHRASE[scene.position],
        bg=scene.background,
    )
    return text[0].upper() + text[1:]


def corpus(seed: int, count: int) -> Iterator[str]:
    """Lines of text covering everything the tiny LLM will ever read or write."""
    rng = random.Random(f"tiny-world-corpus:{seed}")
    # The fixed strings repeat as often as one caption style, so that BPE merges them into
    # whole words as it does the captions.
    for _ in range(max(1, count // 8)):
        yield CONV_SYSTEM + CONV_SEP + "Human: " + IMAGE_MESSAGE + " " + DEMO_QUESTION + CONV_SEP
        for prompt in alignment_prompts():
            yield PROMPT_TEMPLATE.format(prompt)
        for question, _ in FOLLOW_UPS:
            yield f"Human: {question}###Assistant:"
    for word_list in (world.COLOURS, world.SHAPES, world.SIZES, world.POSITIONS, world.BACKGROUNDS):
        yield " ".join(word_list)
    for _ in range(count):
        scene = world.sample_scene(rng)
        yield world.short_caption(scene, rng)
        yield world.long_description(scene, rng)
        _, answer = rng.choice(FOLLOW_UPS)
        yield follow_up_answer(answer, scene)

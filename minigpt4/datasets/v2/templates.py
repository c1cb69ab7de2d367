"""The original's instruction pools and text layout for MiniGPT-v2's training samples.

Every image sample's instruction is ``IMAGE_INSTRUCTION.format(text)``: the image placeholder,
the instruction with its task tag, and a trailing space (the model then wraps it in
``[INST] ... [/INST]``). The pools are the original datasets' ``instruction_pool`` lists, in their
order: a template is drawn with ``random.choice`` from Python's global generator, so the same
seed gives the original's choice.
"""

from __future__ import annotations

from minigpt4.models.prompt import IMAGE_PLACEHOLDER

IMAGE_INSTRUCTION = "<Img>" + IMAGE_PLACEHOLDER + "</Img> {} "

# Conversation datasets join their questions and answers with this (``connect_sym``).
CONNECT_SYM = "!@#"

REFER_POOL: tuple[str, ...] = (
    "[refer] {}",
    "[refer] give me the location of {}",
    "[refer] where is {} ?",
    "[refer] from this image, tell me the location of {}",
    "[refer] the location of {} is",
    "[refer] could you tell me the location for {} ?",
    "[refer] where can I locate the {} ?",
)

IDENTIFY_POOL: tuple[str, ...] = (
    "[identify] {}",
    "[identify] what object is in this location {}",
    "[identify] identify the object present at this location {}",
    "[identify] what is it in {}",
    "[identify] describe this object in {}",
    "[identify] this {} is",
    "[identify] the object in {} is",
)

GROUNDED_CAPTION_POOL: tuple[str, ...] = (
    "[grounding] please describe this image in details",
    "[grounding] describe this image as detailed as possible",
    "[grounding] summarize this image in details",
    "[grounding] give a thorough description of what you see in this image",
)

DETECTION_POOL: tuple[str, ...] = ("[detection] {}",)

VQA_POOL: tuple[str, ...] = (
    "[vqa] {}",
    "[vqa] Based on the image, respond to this question with a short answer: {}",
)

# COCO captions and TextCaps put "[caption] " before a template drawn from this pool.
CAPTION_TAG = "[caption] {}"
CAPTION_POOL: tuple[str, ...] = (
    "Briefly describe this image.",
    "Provide a concise depiction of this image.",
    "Present a short description of this image.",
    "Summarize this image in a few words.",
    "A short image caption:",
    "A short image description:",
    "A photo of ",
    "An image that shows ",
    "Write a short description for the image. ",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)


def image_instruction(text: str) -> str:
    """``<Img><ImageHere></Img> {text} ``: what an image sample's ``instruction_input`` holds."""
    return IMAGE_INSTRUCTION.format(text)

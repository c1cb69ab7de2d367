"""The original HEAD's evaluation helpers, which its eval scripts and papers' copies of them
import: ``eval_parser``, ``prepare_texts``, ``init_model`` and ``computeIoU`` (the box overlap of
:mod:`minigpt4.common.boxes`, under its original name).

``init_model`` placed the model on ``cuda:0`` unconditionally; here it goes to CUDA when there
is one and to the CPU otherwise (``--device`` chooses).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from minigpt4.common.boxes import compute_iou as computeIoU  # noqa: F401 - the original name
from minigpt4.common.model_args import add_config_arguments, add_device_arguments
from minigpt4.conversation.templates import IMAGE_MESSAGE, Conversation


def eval_parser() -> argparse.ArgumentParser:
    """The original's evaluation arguments (``--cfg-path``, ``--options`` and the rest)."""
    parser = argparse.ArgumentParser(description="Demo")
    add_config_arguments(parser)
    parser.add_argument("--name", type=str, default="A2", help="evaluation name")
    parser.add_argument("--ckpt", type=str, help="path to configuration file.")
    parser.add_argument("--eval_opt", type=str, default="all", help="path to configuration file.")
    parser.add_argument("--max_new_tokens", type=int, default=10, help="max new tokens")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lora_r", type=int, default=64, help="lora rank of the model")
    parser.add_argument("--lora_alpha", type=int, default=16, help="lora alpha")
    add_device_arguments(parser)
    return parser


def prepare_texts(texts: Sequence[str], conv_temp: Conversation) -> list[str]:
    """One prompt per question: ``conv_temp`` with the image message and the question, and the
    Assistant's turn open (what ``model.generate(images, texts)`` takes)."""
    prompts = []
    for question in texts:
        conv = conv_temp.copy()
        conv.append_message(conv.roles[0], f"{IMAGE_MESSAGE} {question}")
        conv.append_message(conv.roles[1], None)
        prompts.append(conv.get_prompt())
    return prompts


def init_model(args: Any) -> tuple[Any, Any]:
    """(model, image processor) of ``args.cfg_path``: the model on its device in eval mode, and
    the config's eval image processor."""
    from minigpt4.common.config import Config
    from minigpt4.conversation.loading import build_model_and_processor

    device, gpu_id = getattr(args, "device", None), getattr(args, "gpu_id", 0)
    return build_model_and_processor(Config(args), device, gpu_id)

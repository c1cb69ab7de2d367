"""The command-line arguments every command that loads a model shares, defined once, and the one
function that turns them into a ready chat.

``--cfg-path`` and ``--options`` are the original's (demo.py, train.py); ``--gpu-id`` is the
original demo's; ``--device`` picks CPU or CUDA (default: CUDA when there is one). Nothing here
imports torch: a command's ``--help`` answers before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
from typing import Any

CFG_PATH_HELP = "path to configuration file."
OPTIONS_HELP = (
    "override settings of the config file: key=value pairs such as "
    "model.ckpt=/path/to/pretrained_minigpt4.pth"
)


def add_config_arguments(
    parser: argparse.ArgumentParser, cfg_help: str = CFG_PATH_HELP, cfg_default: str | None = None
) -> None:
    """``--cfg-path`` (required unless the command has a default, as demo_v2.py's has) and
    ``--options key=value ...``."""
    if cfg_default is not None:
        cfg_help = f"{cfg_help} (default: {cfg_default})"
    parser.add_argument(
        "--cfg-path", required=cfg_default is None, default=cfg_default, help=cfg_help
    )
    parser.add_argument("--options", nargs="+", help=OPTIONS_HELP)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` and ``--gpu-id N`` (which GPU ``cuda`` means)."""
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="where to run the model (default: cuda if available, else cpu)",
    )
    parser.add_argument("--gpu-id", type=int, default=0, help="specify the gpu to load the model.")


def add_model_arguments(
    parser: argparse.ArgumentParser, cfg_help: str = CFG_PATH_HELP, cfg_default: str | None = None
) -> None:
    """Every argument :func:`chat_from_args` reads."""
    add_config_arguments(parser, cfg_help, cfg_default)
    add_device_arguments(parser)


def chat_from_args(args: argparse.Namespace) -> Any:
    """The ready :class:`~minigpt4.conversation.chat.Chat` the arguments of
    :func:`add_model_arguments` name."""
    from minigpt4.conversation.loading import load_chat

    return load_chat(args.cfg_path, args.device, args.options or (), args.gpu_id)

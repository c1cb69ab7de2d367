# ruff: noqa: E402, F403
"""A script written against the original MiniGPT-4 v1 Python API, as its demo.py is written.

The original's calls, in the original's order: ``Config(args)``, the registry, ``from_config``,
``Chat(model, vis_processor, device=...)``, ``CONV_VISION.copy()``, ``upload_img`` (which encodes
at once), ``ask``, ``answer(...)`` returning ``(text, tokens)``. Only the device string differs
from the original's ``'cuda:{}'.format(args.gpu_id)``. It answers one question per image and
writes the answers as JSON.
"""

import argparse
import json
import random
import sys

import numpy as np
import torch


def parse_args():
    parser = argparse.ArgumentParser(description="Demo")
    parser.add_argument("--cfg-path", required=True, help="path to configuration file.")
    parser.add_argument("--gpu-id", type=int, default=0, help="specify the gpu to load the model.")
    parser.add_argument("--options", nargs="+", help="override some settings in the config")
    parser.add_argument("--repo", required=True, help="the checkout to import minigpt4 from")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--question", default="Describe this image.")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--out", required=True)
    return parser.parse_args()


args = parse_args()
sys.path.append(args.repo)

from minigpt4.common.config import Config
from minigpt4.common.dist_utils import get_rank
from minigpt4.common.registry import registry
from minigpt4.conversation.conversation import CONV_VISION, Chat

# imports modules for registration
from minigpt4.datasets.builders import *
from minigpt4.models import *
from minigpt4.processors import *
from minigpt4.runners import *
from minigpt4.tasks import *


def setup_seeds(seed):
    seed = seed + get_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


cfg = Config(args)
model_config = cfg.model_cfg
model_config.device_8bit = args.gpu_id
model_cls = registry.get_model_class(model_config.arch)
model = model_cls.from_config(model_config).to("cpu")

vis_processor_cfg = cfg.datasets_cfg.cc_sbu_align.vis_processor.train
vis_processor = registry.get_processor_class(vis_processor_cfg.name).from_config(vis_processor_cfg)
chat = Chat(model, vis_processor, device="cpu")

setup_seeds(42)
answers = []
for path in args.images:
    chat_state = CONV_VISION.copy()
    img_list = []
    llm_message = chat.upload_img(path, chat_state, img_list)
    chat.ask(args.question, chat_state)
    text, tokens = chat.answer(
        conv=chat_state,
        img_list=img_list,
        num_beams=1,
        temperature=1.0,
        top_p=args.top_p,
        max_new_tokens=300,
        max_length=2000,
    )
    answers.append(
        {
            "upload": llm_message,
            "text": text,
            "tokens": tokens.tolist(),
            "prompt": chat_state.get_prompt(),
        }
    )

with open(args.out, "w") as f:
    json.dump(answers, f)

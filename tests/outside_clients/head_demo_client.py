# ruff: noqa: E402, F401, F403
"""A script written against the original HEAD's Python API, as its demo.py and demo_v2.py are.

HEAD's calls: ``Chat(model, vis_processor, device=..., stopping_criteria=StoppingCriteriaList(
[StoppingCriteriaSub(stops=...)]))``, ``upload_img`` then ``encode_img``, ``ask``, and an answer
three ways: ``answer(...)[0]``, ``answer_prepare`` + ``model_generate`` + the tokenizer's
``decode``, and ``stream_answer`` joined piece by piece. Differences from HEAD's demo: the device
string, and ``conv_dict`` also naming v1's ``pretrain_vicuna`` (the tiny model's type), whose
template HEAD's module no longer has. Writes the answers of each way as JSON.
"""

import argparse
import json
import sys

import torch
from PIL import Image
from transformers import StoppingCriteriaList


def parse_args():
    parser = argparse.ArgumentParser(description="Demo")
    parser.add_argument("--cfg-path", required=True, help="path to configuration file.")
    parser.add_argument("--gpu-id", type=int, default=0, help="specify the gpu to load the model.")
    parser.add_argument("--options", nargs="+", help="override some settings in the config")
    parser.add_argument("--repo", required=True, help="the checkout to import minigpt4 from")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--question", default="Describe this image.")
    parser.add_argument("--stop-ids", default="[[835], [2277, 29937]]", help="JSON token ids")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--out", required=True)
    return parser.parse_args()


args = parse_args()
sys.path.append(args.repo)

from minigpt4.common.config import Config
from minigpt4.common.dist_utils import get_rank
from minigpt4.common.registry import registry
from minigpt4.conversation.conversation import (
    CONV_VISION,
    Chat,
    CONV_VISION_LLama2,
    CONV_VISION_Vicuna0,
    StoppingCriteriaSub,
)

# imports modules for registration
from minigpt4.datasets.builders import *
from minigpt4.models import *
from minigpt4.processors import *
from minigpt4.runners import *
from minigpt4.tasks import *

conv_dict = {
    "pretrain_vicuna0": CONV_VISION_Vicuna0,
    "pretrain_llama2": CONV_VISION_LLama2,
    "pretrain_vicuna": CONV_VISION,
}

cfg = Config(args)
model_config = cfg.model_cfg
model_config.device_8bit = args.gpu_id
model_cls = registry.get_model_class(model_config.arch)
model = model_cls.from_config(model_config).to("cpu")
CONV = conv_dict[model_config.model_type]

vis_processor_cfg = cfg.datasets_cfg.cc_sbu_align.vis_processor.train
vis_processor = registry.get_processor_class(vis_processor_cfg.name).from_config(vis_processor_cfg)

stop_words_ids = [torch.tensor(ids).to(device="cpu") for ids in json.loads(args.stop_ids)]
stopping_criteria = StoppingCriteriaList([StoppingCriteriaSub(stops=stop_words_ids)])
chat = Chat(model, vis_processor, device="cpu", stopping_criteria=stopping_criteria)


def start(path):
    chat_state = CONV.copy()
    img_list = []
    chat.upload_img(Image.open(path).convert("RGB"), chat_state, img_list)
    chat.encode_img(img_list)
    chat.ask(args.question, chat_state)
    return chat_state, img_list


settings = dict(num_beams=1, temperature=1.0, top_p=args.top_p, max_new_tokens=300, max_length=2000)
results = {"answer": [], "prepare": [], "stream": [], "stream_pieces": []}
for path in args.images:
    chat_state, img_list = start(path)
    results["answer"].append(chat.answer(conv=chat_state, img_list=img_list, **settings)[0])

    chat_state, img_list = start(path)
    kwargs = chat.answer_prepare(chat_state, img_list, **settings)
    output_token = chat.model_generate(**kwargs)[0]
    text = model.llama_tokenizer.decode(output_token, skip_special_tokens=True)
    results["prepare"].append(text.split("###")[0].split("Assistant:")[-1].strip())

    chat_state, img_list = start(path)
    output = ""
    pieces = 0
    for new_output in chat.stream_answer(conv=chat_state, img_list=img_list, **settings):
        output += new_output
        pieces += 1
    results["stream"].append(output)
    results["stream_pieces"].append(pieces)

with open(args.out, "w") as f:
    json.dump(results, f)

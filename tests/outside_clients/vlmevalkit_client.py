"""How VLMEvalKit's ``vlmeval/vlm/minigpt4.py`` drives the original MiniGPT-4, step by step.

It never uses ``Config``: it reads the eval YAML with ``OmegaConf.load``, sets
``model.device_8bit`` to the current device, builds the model from the bare ``model`` section
through the registry, moves it with ``.to(device)``, takes the image processor from
``datasets.cc_sbu_align``, and answers each question in a fresh ``CONV_VISION_Vicuna0`` with its
own ``StoppingCriteriaSub`` ids (LLaMA's two encodings of "###"): ``upload_img(path)``,
``encode_img``, ``ask``, ``answer(...)[0]`` under ``torch.inference_mode()``. The device is the
one difference (``torch.cuda.current_device()`` there, ``"cpu"`` here). Writes the answers and a
few facts about the built model as JSON.
"""

import argparse
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, help="the checkout VLMEvalKit puts on sys.path")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--question", default="Describe this image.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path.append(args.root)

    import torch
    from omegaconf import OmegaConf
    from transformers import StoppingCriteriaList

    from minigpt4.common.registry import registry
    from minigpt4.conversation.conversation import (
        Chat,
        CONV_VISION_Vicuna0,
        StoppingCriteriaSub,
    )

    device = "cpu"
    cfg = OmegaConf.load(args.cfg)
    model_cfg = cfg.model
    model_cfg.device_8bit = device
    model_cls = registry.get_model_class(model_cfg.arch)
    model = model_cls.from_config(model_cfg)
    model = model.to(device)
    model.eval()
    vis_processor_cfg = cfg.datasets.cc_sbu_align.vis_processor.train
    vis_processor = registry.get_processor_class(vis_processor_cfg.name).from_config(
        vis_processor_cfg
    )
    stop_words_ids = [[835], [2277, 29937]]
    stop_words_ids = [torch.tensor(ids).to(device) for ids in stop_words_ids]
    stopping_criteria = StoppingCriteriaList([StoppingCriteriaSub(stops=stop_words_ids)])

    answers = []
    for index, image_path in enumerate(args.images):
        torch.manual_seed(index)  # the driver's, so that a run can be repeated
        chat = Chat(model, vis_processor, device=device, stopping_criteria=stopping_criteria)
        chat_state = CONV_VISION_Vicuna0.copy()
        img_list = []
        _ = chat.upload_img(image_path, chat_state, img_list)
        chat.encode_img(img_list)
        chat.ask(args.question, chat_state)
        with torch.inference_mode():
            answers.append(chat.answer(conv=chat_state, img_list=img_list)[0])

    facts = {
        "has_qformer": hasattr(model, "Qformer"),
        "training": model.training,
        "device": str(model.device),
        "model_type": model.config.model_type,
    }
    with open(args.out, "w") as f:
        json.dump({"answers": answers, "model": facts}, f)


if __name__ == "__main__":
    main()

"""Chat and batch inference on CUDA, as demo.py builds them (skipped without CUDA)."""

from __future__ import annotations

import types

import pytest
from omegaconf import OmegaConf

from minigpt4.conversation import Chat
from tests.model_fixtures import load_reference, tiny_model_config

pytestmark = pytest.mark.gpu


def _chat(tmp_path, **overrides) -> Chat:
    import minigpt4  # noqa: F401
    from minigpt4.common.config import Config
    from minigpt4.conversation.loading import build_chat, resolve_device

    model_cfg = tiny_model_config(stage=2, attn_implementation=None, **overrides)
    del model_cfg["device"]  # chosen by the loader from --device
    cfg_path = tmp_path / "eval.yaml"
    OmegaConf.save(
        {
            "model": model_cfg,
            "datasets": {
                "cc_sbu_align": {
                    "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 224}}
                }
            },
            "run": {"task": "image_text_pretrain"},
        },
        cfg_path,
    )
    device = resolve_device("cuda", 0)
    cfg = Config(types.SimpleNamespace(cfg_path=str(cfg_path), options=None))
    return build_chat(cfg, device, 0)


@pytest.mark.parametrize("overrides", [{}, {"low_resource": True}])
def test_chat_on_cuda(tmp_path, overrides):
    ref = load_reference()
    chat = _chat(tmp_path, **overrides)
    if overrides.get("low_resource"):
        assert "Linear8bitLt" in {type(m).__name__ for m in chat.model.llama_model.modules()}
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(ref["images_eval_processed"][1], conv, img_list)
    chat.ask("What is in the picture?", conv)
    conv_stream = conv.copy()
    text, tokens = chat.answer(conv, img_list, max_new_tokens=12, do_sample=False)
    assert isinstance(text, str) and 0 < len(tokens) <= 12
    pieces = list(chat.stream_text(conv_stream, img_list, max_new_tokens=12, do_sample=False))
    assert pieces[-1] == text
    sampled = [
        chat.answer(conv.copy(), img_list, max_new_tokens=8, seed=0)[1].tolist() for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


def test_batch_inference_on_cuda(tmp_path):
    from PIL import Image

    from minigpt4.inference import answer_images

    chat = _chat(tmp_path)
    paths = []
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (50, 40), colour).save(path)
        paths.append(str(path))
    greedy = chat.settings(max_new_tokens=6, do_sample=False)
    records = answer_images(chat, paths, "What is it?", greedy, batch_size=2, progress=False)
    assert [r["image"] for r in records] == paths
    assert all(isinstance(r["answer"], str) for r in records)

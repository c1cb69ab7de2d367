"""Code written for the original minigpt4 package runs here unchanged (the original's Python API).

Two kinds of test: scripts in ``tests/outside_clients/`` written as the original's users write
them (v1's demo, HEAD's demos, VLMEvalKit's wrapper) run as separate processes from another
directory, importing the checkout the way such code does (``sys.path.append``), on the tiny
world's held-out images; and the same calls in-process on the parity sets, where the answers must
be the original's tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import StoppingCriteriaList

from minigpt4.common.config import Config
from minigpt4.common.registry import registry
from minigpt4.conversation.conversation import (
    CONV_VISION,
    Chat,
    CONV_VISION_LLama2,
    CONV_VISION_minigptv2,
    StoppingCriteriaSub,
)
from tests.model_fixtures import (
    LLAMA2_CONFIGS,
    LLAMA2_DIR,
    TINY_DIR,
    assert_close,
    llama2_options,
    load_llama2_reference,
    load_reference,
    tiny_model_config,
)
from tiny_world import evaluate, text, world

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIENTS = REPO_ROOT / "tests" / "outside_clients"
TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"
HELD_OUT_COUNT = 16
CLIENT_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> tuple[list[world.Scene], list[str]]:
    """Held-out tiny-world images saved as PNG files, and what each shows."""
    folder = tmp_path_factory.mktemp("held_out")
    scenes, paths = [], []
    for i, (scene, image) in enumerate(evaluate.held_out_images(evaluate.HELD_OUT_SEED, 16)):
        path = folder / f"image_{i}.png"
        image.save(path)
        scenes.append(scene)
        paths.append(str(path))
    return scenes, paths


def run_client(script: str, args: list[str], cwd: Path) -> dict:
    """Run an outside client from ``cwd`` (not the checkout) and return the JSON it wrote."""
    out = cwd / "answers.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, str(CLIENTS / script), *args, "--out", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


def accuracy(scenes: list[world.Scene], answers: list[str]) -> float:
    return sum(world.scene_matches(s, a) for s, a in zip(scenes, answers, strict=True)) / len(
        scenes
    )


@pytest.fixture(scope="module")
def project_greedy(held_out) -> list[str]:
    """The project's own greedy answers, one fresh conversation per image (as the demo)."""
    chat = evaluate.build_chat(TINY_EVAL)
    answers = []
    for path in held_out[1]:
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(Image.open(path), conv, img_list)
        chat.ask(text.DEMO_QUESTION, conv)
        answers.append(chat.answer(conv, img_list, do_sample=False)[0])
    return answers


# --- outside clients on the tiny world ------------------------------------------------------


def test_v1_demo_script_describes_held_out_images(held_out, project_greedy, tmp_path):
    scenes, paths = held_out
    base = ["--cfg-path", TINY_EVAL, "--repo", str(REPO_ROOT), "--images", *paths]
    sampled = run_client("v1_demo_client.py", base, tmp_path)
    assert {a["upload"] for a in sampled} == {"Received."}
    assert all(a["prompt"].endswith("###Assistant: " + a["text"] + "###") for a in sampled)
    assert accuracy(scenes, [a["text"] for a in sampled]) >= 0.9
    # top_p 0.001 keeps only the most likely token: the project's own greedy answers.
    greedy = run_client("v1_demo_client.py", [*base, "--top-p", "0.001"], tmp_path)
    assert [a["text"] for a in greedy] == project_greedy
    assert accuracy(scenes, project_greedy) >= 0.9


def test_head_demo_script_three_ways_to_answer(held_out, project_greedy, tmp_path):
    scenes, paths = held_out
    tokenizer_dir = REPO_ROOT / "tiny_world" / "checkpoint" / "llama"
    from minigpt4.models.tokenizer import LlamaTokenizer

    stop = [[LlamaTokenizer.from_folder(str(tokenizer_dir)).piece_to_id("###")]]
    args = ["--cfg-path", TINY_EVAL, "--repo", str(REPO_ROOT), "--images", *paths]
    args += ["--top-p", "0.001", "--stop-ids", json.dumps(stop)]
    result = run_client("head_demo_client.py", args, tmp_path)
    assert result["answer"] == result["prepare"] == result["stream"] == project_greedy
    assert min(result["stream_pieces"]) > 1, "stream_answer gave each answer in one piece"


def vlmevalkit_yaml(path: Path) -> None:
    """VLMEvalKit's ``minigpt4_7b_eval.yaml`` with the tiny world's weights and sizes."""
    checkpoint = REPO_ROOT / "tiny_world" / "checkpoint"
    tiny = OmegaConf.load(REPO_ROOT / TINY_EVAL).model
    cfg = {
        "model": {
            "arch": "minigpt4",
            "model_type": "pretrain_vicuna_7b",
            "max_txt_len": 160,
            "end_sym": "###",
            "low_resource": True,
            "prompt_template": "###Human: {} ###Assistant: ",
            "ckpt": str(checkpoint / "pretrained_minigpt4_tiny.pth"),
            "image_size": 112,
            "drop_path_rate": 0,
            "use_grad_checkpoint": False,
            "vit_precision": "fp16",
            "freeze_vit": True,
            "freeze_qformer": True,
            "num_query_token": 32,
            "prompt": "",
            "llama_model": str(checkpoint / "llama"),
            "vit_model_path": str(checkpoint / "eva_vit_g.pth"),
            "q_former_model": str(checkpoint / "blip2_pretrained_flant5xxl.pth"),
            "vit_config": OmegaConf.to_container(tiny.vit_config),
            "qformer_config": OmegaConf.to_container(tiny.qformer_config),
        },
        "datasets": {
            "cc_sbu_align": {
                "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 112}},
                "text_processor": {"train": {"name": "blip_caption"}},
            }
        },
        "run": {"task": "image_text_pretrain"},
    }
    OmegaConf.save(OmegaConf.create(cfg), path)


def test_vlmevalkit_wrapper_runs_on_its_own_config_layout(held_out, tmp_path):
    """VLMEvalKit's calls, its YAML keys (``arch: minigpt4``, an unknown ``model_type``,
    ``low_resource: True``): the HEAD model with the Q-Former, the 8-bit LLM on the CPU, every
    question answered in text."""
    scenes, paths = held_out
    vlmevalkit_yaml(tmp_path / "minigpt4_7b_eval.yaml")
    args = ["--root", str(REPO_ROOT), "--cfg", str(tmp_path / "minigpt4_7b_eval.yaml")]
    result = run_client("vlmevalkit_client.py", [*args, "--images", *paths[:6]], tmp_path)
    assert result["model"] == {
        "has_qformer": True,
        "training": False,
        "device": "cpu",
        "model_type": "pretrain_vicuna0",
    }
    assert len(result["answers"]) == 6 and all(isinstance(a, str) for a in result["answers"])


def test_head_eval_helpers_answer_a_batch(held_out):
    """HEAD's eval scripts: eval_parser, init_model, prepare_texts, then model.generate."""
    from minigpt4.common.eval_utils import eval_parser, init_model, prepare_texts

    scenes, paths = held_out
    args = eval_parser().parse_args(["--cfg-path", TINY_EVAL, "--device", "cpu"])
    model, vis_processor = init_model(args)
    texts = prepare_texts([text.DEMO_QUESTION] * 4, CONV_VISION.copy())
    assert texts[0] == (
        CONV_VISION.system + "###Human: <Img><ImageHere></Img> " + text.DEMO_QUESTION
        + "###Assistant:"
    )  # fmt: skip
    images = torch.stack([vis_processor(Image.open(p).convert("RGB")) for p in paths[:4]])
    answers = model.generate(images, texts, max_new_tokens=60, do_sample=False)
    # HEAD's cleaning is LLaMA-2's ("</s>", "[/INST]"): a v1 answer runs on after its "###".
    assert accuracy(scenes[:4], [a.split("###")[0] for a in answers]) == 1.0


# --- in-process: the original's imports and calls on the parity sets ----------------------


def test_wildcard_imports_and_common_names():
    script = (
        "import sys; sys.path.append(sys.argv[1])\n"
        "from minigpt4.datasets.builders import *\nfrom minigpt4.models import *\n"
        "from minigpt4.processors import *\nfrom minigpt4.runners import *\n"
        "from minigpt4.tasks import *\n"
        "from minigpt4.common.registry import registry\n"
        "from minigpt4.common import dist_utils\n"
        "from minigpt4.models.minigpt4 import MiniGPT4 as Head\n"
        "from minigpt4.models.mini_gpt4 import MiniGPT4 as V1\n"
        "assert registry.get_model_class('minigpt4') is Head\n"
        "assert registry.get_model_class('mini_gpt4') is V1\n"
        "import argparse, json\n"
        "args = argparse.Namespace(dist_url='env://')\n"
        "dist_utils.init_distributed_mode(args)\n"
        "print(json.dumps([registry.get_model_class('mini_gpt4').__name__,"
        " registry.get_model_class('minigpt4').__name__,"
        " registry.get_processor_class('blip2_image_eval').__name__,"
        " registry.get_builder_class('cc_sbu_align').__name__,"
        " registry.get_task_class('image_text_pretrain').__name__,"
        " registry.get_runner_class('runner_base').__name__,"
        " registry.get_path('library_root').endswith('minigpt4'),"
        " dist_utils.get_rank(), dist_utils.is_main_process(), args.distributed]))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    out = subprocess.run(
        [sys.executable, "-c", script, str(REPO_ROOT)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert json.loads(out.splitlines()[-1]) == [
        "MiniGPT4",
        "MiniGPT4Llama2",
        "Blip2ImageEvalProcessor",
        "CCSBUAlignBuilder",
        "ImageTextPretrainTask",
        "RunnerBase",
        True,
        0,
        True,
        False,
    ]


def test_config_from_any_object_with_cfg_path_and_options():
    class Args:  # the small classes people write instead of argparse
        cfg_path = TINY_EVAL
        options = ["model.max_txt_len=99"]

    assert Config(Args()).model_cfg.max_txt_len == 99
    namespace = argparse.Namespace(cfg_path=TINY_EVAL, options=None, gpu_id=0)
    assert Config(namespace).model_cfg.arch == "mini_gpt4"


@pytest.fixture(scope="module")
def v1_reference():
    return load_reference()


def test_v1_calls_give_the_originals_tokens(v1_reference):
    """v1's demo calls on the v1 parity set: upload a PIL image, ask, answer."""
    model = registry.get_model_class("mini_gpt4").from_config(tiny_model_config(stage=2))
    vis_processor = registry.get_processor_class("blip2_image_eval").from_config(None)
    chat = Chat(model.to("cpu").eval(), vis_processor, device="cpu")
    expected = v1_reference["chat"]
    chat_state, img_list = CONV_VISION.copy(), []
    image = Image.fromarray(np.asarray(v1_reference["raw_images_uint8"][1]))
    assert chat.upload_img(image, chat_state, img_list) == expected["upload_msg"]
    chat.ask("What is in the picture?", chat_state)
    opened = chat_state.copy()
    opened.append_message(opened.roles[1], None)
    assert opened.get_prompt() == expected["prompt"]
    assert_close(chat.get_context_emb(opened, img_list), expected["context_embs"], "context")
    # top_p 0.001 keeps only the arg-max: the reference's greedy generate.
    text, tokens = chat.answer(chat_state, img_list, max_new_tokens=12, top_p=1e-3)
    assert isinstance(tokens, np.ndarray)
    assert tokens.tolist() == expected["greedy_raw"][1:].tolist()
    assert chat_state.get_prompt() == expected["prompt"] + " " + text + "###"


@pytest.fixture(scope="module")
def llama2_ref():
    return load_llama2_reference()


@pytest.fixture(scope="module")
def head_model():
    """The LLaMA-2 model as HEAD's demo builds it: Config, registry, from_config, .to(device)."""
    cfg = Config(
        argparse.Namespace(cfg_path=LLAMA2_CONFIGS["eval"], options=llama2_options("eval"))
    )
    model_config = cfg.model_cfg
    model_config.device_8bit = 0
    model = registry.get_model_class(model_config.arch).from_config(model_config)
    return model.to("cpu").eval()


def head_chat(model, ref) -> Chat:
    stops = [torch.tensor(ids) for ids in ref["chat"]["stop_words_ids"]]
    criteria = StoppingCriteriaList([StoppingCriteriaSub(stops=stops)])
    vis_processor = registry.get_processor_class("blip2_image_eval").from_config(None)
    return Chat(model, vis_processor, device="cpu", stopping_criteria=criteria)


def test_head_calls_give_the_originals_tokens_over_two_turns(head_model, llama2_ref):
    """HEAD's demo: upload, encode_img, then each turn answered three ways."""
    chat = head_chat(head_model, llama2_ref)
    image = llama2_ref["images_eval_processed"][1]
    states = {way: (CONV_VISION_LLama2.copy(), []) for way in ("answer", "prepare", "stream")}
    for conv, img_list in states.values():
        chat.upload_img(image, conv, img_list)
        chat.encode_img(img_list)
    for turn in llama2_ref["chat"]["turns"]:
        expected = turn["answer_tokens"][1:].tolist()
        conv, img_list = states["answer"]
        chat.ask(turn["question"], conv)
        text, tokens = chat.answer(conv=conv, img_list=img_list, max_new_tokens=12, top_p=1e-3)
        assert (text, tokens.tolist()) == (turn["answer_text"], expected)
        assert conv.get_prompt() == turn["conv_after"]

        conv, img_list = states["prepare"]
        chat.ask(turn["question"], conv)
        kwargs = chat.answer_prepare(conv, img_list, max_new_tokens=12, top_p=1e-3)
        assert kwargs["repetition_penalty"] == turn["generate_kwargs"]["repetition_penalty"]
        output_token = chat.model_generate(**kwargs)[0]
        assert output_token.tolist() == expected
        decoded = head_model.llama_tokenizer.decode(output_token, skip_special_tokens=True)
        assert decoded == turn["answer_decoded_raw"]
        conv.messages[-1][1] = decoded

        conv, img_list = states["stream"]
        chat.ask(turn["question"], conv)
        pieces = list(chat.stream_answer(conv, img_list, max_new_tokens=12, top_p=1e-3))
        assert "".join(pieces) == turn["answer_text"] and len(pieces) > 1
        assert conv.get_prompt() == turn["conv_after"]


def test_head_encode_img_encodes_what_is_not_encoded(head_model, llama2_ref):
    chat = head_chat(head_model, llama2_ref)
    # A PIL image (the noise image: Pillow versions agree on it exactly) and a processed tensor.
    raw = Image.fromarray(np.asarray(llama2_ref["raw_images_uint8"][0]))
    img_list = [raw, llama2_ref["images_eval_processed"][1]]
    chat.encode_img(img_list)
    assert_close(img_list[0], llama2_ref["inputs_llama"][:1], "first image")
    assert_close(img_list[1], llama2_ref["chat"]["image_emb"], "second image")
    encoded = list(img_list)
    chat.encode_img(img_list)  # what HEAD's demo does again before streaming: nothing to do
    assert all(a is b for a, b in zip(img_list, encoded))


def test_head_model_generate_is_the_originals_batch_answer(head_model, llama2_ref):
    expected = llama2_ref["batch_generate"]
    images = llama2_ref["images_eval_processed"]
    answers = head_model.generate(images, expected["texts"], max_new_tokens=12)
    assert answers == expected["answers"]


def test_a_callers_own_stopping_criteria_are_honoured(head_model, llama2_ref):
    """Any transformers criterion in the caller's list stops generation, as in the original."""
    from transformers import MaxLengthCriteria

    turn = llama2_ref["chat"]["turns"][0]
    criteria = StoppingCriteriaList([MaxLengthCriteria(max_length=4)])
    chat = Chat(head_model, None, device="cpu", stopping_criteria=criteria)
    conv, img_list = CONV_VISION_LLama2.copy(), []
    chat.upload_img(llama2_ref["images_eval_processed"][1], conv, img_list)
    chat.ask(turn["question"], conv)
    _, tokens = chat.answer(conv, img_list, max_new_tokens=12, top_p=1e-3)
    assert tokens.tolist() == turn["answer_tokens"][1:5].tolist()


def test_bare_model_section_is_completed_from_the_default_yaml(llama2_ref):
    """``OmegaConf.load`` alone, no ``Config``: the missing keys (``has_qformer: False`` ...) come
    from the model type's default YAML, as the original's Config would have merged them."""
    cfg = OmegaConf.load(REPO_ROOT / LLAMA2_CONFIGS["eval"])
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(llama2_options("eval")))
    cfg.model.device_8bit = "cpu"
    model = registry.get_model_class(cfg.model.arch).from_config(cfg.model).to("cpu").eval()
    assert model.config.has_qformer is False and model.config.device == "cpu"
    chat = head_chat(model, llama2_ref)
    turn = llama2_ref["chat"]["turns"][0]
    conv, img_list = CONV_VISION_LLama2.copy(), []
    chat.upload_img(llama2_ref["images_eval_processed"][1], conv, img_list)
    chat.ask(turn["question"], conv)
    _, tokens = chat.answer(conv, img_list, max_new_tokens=12, top_p=1e-3)
    assert tokens.tolist() == turn["answer_tokens"][1:].tolist()


def test_head_arch_with_an_unknown_model_type_is_the_qformer_model(v1_reference, caplog):
    """VLMEvalKit's layout: ``arch: minigpt4`` and ``model_type: pretrain_vicuna_7b`` (HEAD knows
    no such type; its code default is the Q-Former) on the v1 weights."""
    section = tiny_model_config(stage=2)
    section.arch, section.model_type = "minigpt4", "pretrain_vicuna_7b"
    del section["q_former_model"]
    section.q_former_model = str(TINY_DIR / "blip2_pretrained_flant5xxl.pth")
    model = registry.get_model_class("minigpt4").from_config(section).eval()
    assert "is not a type of arch minigpt4" in caplog.text
    assert model.config.model_type == "pretrain_vicuna0" and model.config.has_qformer
    with torch.no_grad():
        embs, _ = model.encode_img(v1_reference["images_eval_processed"])
    assert_close(embs, v1_reference["inputs_llama"], "inputs_llama")


@pytest.mark.parametrize(
    ("given", "parsed"),
    [(1, 1), ("cuda:1", 1), ("cuda", 0), ("cpu", "cpu"), (torch.device("cpu"), "cpu")],
)
def test_device_8bit_accepts_what_callers_pass(given, parsed):
    from minigpt4.models.model_config import parse_device_8bit

    assert parse_device_8bit(given) == parsed


def test_device_8bit_errors_name_the_key():
    from minigpt4.models.model_config import MiniGPT4Config

    with pytest.raises(ValueError, match="model.device_8bit must be"):
        MiniGPT4Config.from_cfg({"llama_model": str(LLAMA2_DIR / "llama"), "device_8bit": "gpu"})
    with pytest.raises(ValueError, match="contradict"):
        MiniGPT4Config.from_cfg({"llama_model": "x", "device_8bit": "cpu", "device": "cuda"})


def test_minigptv2_template_is_the_originals():
    conv = CONV_VISION_minigptv2.copy()
    conv.append_message(conv.roles[0], "<Img><ImageHere></Img> [vqa] What is it?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == "<s>[INST] <Img><ImageHere></Img> [vqa] What is it? [/INST]"


def readme_library_examples() -> list[str]:
    """The Python blocks of the docs' "Using it as a library" page (docs/library.md)."""
    page = (REPO_ROOT / "docs" / "library.md").read_text()
    return [block.split("```", 1)[0] for block in page.split("```python\n")[1:]]


@pytest.mark.parametrize("index", range(3))
def test_readme_library_examples_run_as_pasted(index, held_out, tmp_path):
    blocks = readme_library_examples()
    assert len(blocks) == 3
    scene, path = held_out[0][0], held_out[1][0]
    Image.open(path).save(tmp_path / "photo.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", blocks[index]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    if "print(" in blocks[index]:
        assert world.scene_matches(scene, proc.stdout.strip().splitlines()[-1])

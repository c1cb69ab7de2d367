"""MiniGPT-4 on LLM families other than LLaMA, chosen by YAML alone (issue 29, item 2).

Tiny random folders of Llama-3, Qwen2.5, Mistral and GPT-NeoX (``tests/llm_families.py``: the
real folder layout, a byte-level BPE tokenizer with the family's special tokens and chat
template) go through every path a user takes: loading (the tokenizer and its special tokens,
``llama_proj``'s width from the LLM's config), stage-2 training with ``train.py``, the
``llama_proj`` checkpoint written and loaded back, the demo's Chat (the tokenizer's chat
template, greedy answers that end at the family's stop token), the OpenAI-compatible server and
the benchmark evaluator. The three shipped families use their shipped eval config's model keys;
GPT-NeoX, which no shipped config names, is configured by its keys alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from omegaconf import OmegaConf
from PIL import Image

import minigpt4  # noqa: F401  (registers the model and processors)
from minigpt4.common.registry import registry
from minigpt4.conversation import Chat
from minigpt4.conversation.model_template import TokenizerConversation
from minigpt4.conversation.templates import IMAGE_MESSAGE
from minigpt4.models.hf_tokenizer import HFTokenizer
from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.prompt import IGNORE_INDEX
from minigpt4.serve import create_app
from tests.llm_families import FAMILIES, HIDDEN, build_family, family_model_section
from tests.serve_helpers import data_url, user_with_image
from tests.train_helpers import processors, run_section, write_align_folder

QUESTION = "What is in the picture?"
STOP_AT = 3  # the chat test makes the family's stop token the 3rd greedy token


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm_families")
    return {name: build_family(name, root / name) for name in FAMILIES}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, folders) -> tuple[str, Path]:
    return request.param, folders[request.param]


@pytest.fixture(scope="module")
def model(family) -> MiniGPT4:
    name, folder = family
    return MiniGPT4.from_config(family_model_section(name, folder)).eval()


@pytest.fixture(scope="module")
def chat(model) -> Chat:
    processor_cls = registry.get_processor_class("blip2_image_eval")
    processor = processor_cls.from_config(OmegaConf.create({"image_size": 224}))
    return Chat(model, processor, device="cpu")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (48, 40), (200, 40, 40))


def test_tokenizer_and_projection_follow_the_folder(family, model):
    name, _ = family
    spec = FAMILIES[name]
    tok = model.llama_tokenizer
    assert isinstance(tok, HFTokenizer)
    assert tok.eos_token == spec.eos
    # Qwen has no BOS; the GPT-NeoX YAML asks for none (bos_token: "")
    expected_bos = None if name == "gpt_neox" else spec.bos
    assert tok.bos_token == expected_bos
    assert (tok.bos_token_id is None) == (expected_bos is None)
    assert model.llama_proj.out_features == model.llama_model.config.hidden_size == HIDDEN
    assert tok.pad_token_id != tok.encode(model.end_sym)[-1], "end_sym would be masked as pad"
    assert {tok.eos_token_id, *model.config.stop_token_ids} <= model.end_token_ids


def test_training_inputs_start_with_bos_only_where_there_is_one(model):
    samples = {
        "image": torch.zeros(2, 3, 224, 224),
        "text_input": ["a red square", "a blue dot on grey"],
    }
    inputs = model.prepare_llm_inputs(samples, prompt=model.prompt_list[0])
    tok = model.llama_tokenizer
    before = model.prompt_list[0].split("<ImageHere>")[0]
    first = tok.encode(before, add_bos=True)[0]
    expected = model.embed_tokens(torch.tensor([first]))[0]
    assert torch.equal(inputs["inputs_embeds"][0, 0], expected)
    # the answer and end_sym are targets; the rest is not
    targets = inputs["labels"][0][inputs["labels"][0] != IGNORE_INDEX].tolist()
    assert targets == tok.encode("a red square" + model.end_sym)


def test_stage2_training_and_the_llama_proj_checkpoint(family, tmp_path, monkeypatch):
    import train

    name, folder = family
    section = family_model_section(name, folder)
    align = write_align_folder(tmp_path / "cc_sbu_align", n=4)
    cfg = {
        "model": section,
        "datasets": {"cc_sbu_align": {**processors(), "build_info": {"storage": str(align)}}},
        "run": run_section(Path("output"), max_epoch=1, iters_per_epoch=2, init_lr=0.1),
    }
    cfg_path = tmp_path / "stage2.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    monkeypatch.chdir(tmp_path)
    runner = train.main(["--cfg-path", str(cfg_path), "--options", "run.device=cpu"])
    trained = runner.unwrap_dist_model(runner.model)
    (job,) = list((tmp_path / "output").iterdir())
    assert '"train_loss"' in (job / "log.txt").read_text()
    ckpt = job / "checkpoint_0.pth"
    saved = torch.load(ckpt, weights_only=True)["model"]
    assert sorted(saved) == ["llama_proj.bias", "llama_proj.weight"]
    assert saved["llama_proj.weight"].shape == (HIDDEN, 32)

    loaded = MiniGPT4.from_config({**section, "ckpt": str(ckpt)})
    assert loaded.load_report["model.ckpt"] == []
    for key in ("weight", "bias"):
        got, want = getattr(loaded.llama_proj, key), getattr(trained.llama_proj, key)
        assert torch.equal(got, want.detach())


def test_chat_prompt_is_the_tokenizers_template_with_the_image_in_the_user_text(chat, image):
    conv, img_list = chat.new_conversation(), []
    assert isinstance(conv, TokenizerConversation)
    chat.upload_img(image, conv, img_list)
    chat.ask(QUESTION, conv)
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    hf = chat.model.llama_tokenizer.hf
    user = f"{IMAGE_MESSAGE} {QUESTION}"
    rendered = hf.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    assert user in prompt
    # the template's own BOS is left out: the model puts the BOS token first itself
    assert rendered == (chat.model.llama_tokenizer.bos_token or "") + prompt
    segments = chat.model.segment_ids(prompt)
    assert len(segments) == 2
    if chat.model.llama_tokenizer.bos_token_id is not None:
        assert segments[0].count(chat.model.llama_tokenizer.bos_token_id) == 1


def _greedy(chat, image, max_new_tokens=8):
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(image, conv, img_list)
    chat.ask(QUESTION, conv)
    return chat.answer(conv, img_list, max_new_tokens=max_new_tokens, do_sample=False)


def test_chat_answers_greedily_and_stops_at_the_familys_stop_token(family, chat, image):
    name, _ = family
    tok = chat.model.llama_tokenizer
    stop = tok.piece_to_id(FAMILIES[name].answer_end)
    _, free = _greedy(chat, image)
    free = free.tolist()
    assert len(free) == 8 and stop not in free[:STOP_AT], "the random LLM stopped by itself"
    # Swap the lm_head rows of the 3rd greedy token and the stop token: the first two tokens
    # stay the arg-max, the third becomes the stop token.
    head = chat.model.llama_model.get_output_embeddings().weight
    rows = [free[STOP_AT - 1], stop]
    original = head.data[rows].clone()
    try:
        head.data[rows] = original.flip(0)
        text, tokens = _greedy(chat, image)
    finally:
        head.data[rows] = original
    assert tokens.tolist() == [*free[: STOP_AT - 1], stop]
    assert text == tok.decode(free[: STOP_AT - 1], skip_special_tokens=True).strip()
    assert FAMILIES[name].answer_end not in text


def test_server_answers_as_the_chat(chat, image):
    text, _ = _greedy(chat, image, max_new_tokens=6)
    body = {
        "messages": [user_with_image(data_url(image), QUESTION)],
        "temperature": 0,
        "max_tokens": 6,
    }
    # a key-less server answers local host names only
    with TestClient(create_app(chat, "tiny"), base_url="http://127.0.0.1") as client:
        resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == text


def test_evaluator_runs_on_the_family(family, tmp_path):
    import importlib.util

    from minigpt4.evaluate import main

    name, folder = family
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_for_families",
        Path(__file__).resolve().parents[1] / "dataset/make_synthetic.py",
    )
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)
    data = tmp_path / "mme"
    synthetic.write_mme(str(data), 0, 1)
    cfg = {
        "model": family_model_section(name, folder),
        "datasets": {"cc_sbu_align": processors()},
        "run": {"task": "image_text_pretrain"},
    }
    cfg["datasets"]["cc_sbu_align"]["vis_processor"]["train"]["name"] = "blip2_image_eval"
    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    out = tmp_path / "mme.json"
    argv = ["--cfg-path", str(cfg_path), "--benchmark", "mme", "--data", str(data)]
    argv += ["--out", str(out), "--device", "cpu", "--no-progress", "--max-new-tokens", "4"]
    results = main(argv)
    assert out.is_file() and len(results["items"]) == 5 * 2
    assert all(isinstance(item["prediction"], str) for item in results["items"])
    assert os.path.getsize(out) > 0


# --- configuration errors and folder checks (no family fixture: each builds what it needs) ---


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("chat_template", "chatml", "model.chat_template must be"),
        ("tokenizer", "fast", "model.tokenizer must be"),
        ("stop_words", "<|eot_id|>", "model.stop_words must be a list"),
        ("stop_words", [""], "model.stop_words must be a list"),
        ("stop_token_ids", [-1], "model.stop_token_ids must be"),
        ("stop_token_ids", ["2"], "model.stop_token_ids must be"),
    ],
)
def test_bad_llm_keys_are_clear_errors(key, value, message):
    from minigpt4.models.model_config import MiniGPT4Config

    with pytest.raises(ValueError, match=message):
        MiniGPT4Config.from_cfg({"llama_model": "/x", key: value})


def test_a_llama_folder_keeps_the_exact_sentencepiece_tokenizer():
    from minigpt4.models.tokenizer import LlamaTokenizer
    from tests.model_fixtures import tiny_model_config

    model = MiniGPT4.from_config(tiny_model_config())
    assert type(model.llama_tokenizer) is LlamaTokenizer
    with pytest.raises(ValueError, match="model.tokenizer: auto"):
        MiniGPT4.from_config(tiny_model_config(chat_template="tokenizer"))


def test_a_folder_without_a_tokenizer_is_reported(folders, tmp_path):
    from minigpt4.models.weights import MissingWeightsError

    folder = tmp_path / "qwen"
    shutil.copytree(folders["qwen2_5"], folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(MissingWeightsError, match="tokenizer.json"):
        MiniGPT4.from_config(family_model_section("qwen2_5", folder, tokenizer=None))


def test_the_tokenizer_may_live_in_its_own_folder(folders, tmp_path):
    llm, tokenizer = tmp_path / "llm", tmp_path / "tokenizer"
    shutil.copytree(folders["mistral"], llm)
    tokenizer.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.move(llm / name, tokenizer / name)
    section = family_model_section("mistral", llm, tokenizer_path=str(tokenizer))
    model = MiniGPT4.from_config(section)
    assert model.llama_tokenizer.folder == str(tokenizer)


def test_chat_template_tokenizer_needs_a_template_in_the_folder(folders, tmp_path):
    folder = tmp_path / "neox"
    shutil.copytree(folders["gpt_neox"], folder)
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    del tokenizer_config["chat_template"]
    config_path.write_text(json.dumps(tokenizer_config))
    with pytest.raises(ValueError, match="has no chat template"):
        MiniGPT4.from_config(family_model_section("gpt_neox", folder))


def test_a_family_can_use_a_known_template(folders, image):
    """``chat_template: pretrain_vicuna`` on a Qwen tokenizer: v1's ``###`` conversation, its
    stop word encoded by the BPE vocabulary."""
    section = family_model_section("qwen2_5", folders["qwen2_5"], chat_template="pretrain_vicuna")
    model = MiniGPT4.from_config(section).eval()
    processor_cls = registry.get_processor_class("blip2_image_eval")
    chat = Chat(model, processor_cls.from_config(OmegaConf.create({"image_size": 224})), "cpu")
    assert chat.template.stop_words == ("###", "<|im_end|>")
    assert chat.stop_rule.sequences
    conv, img_list = chat.new_conversation(), []
    chat.upload_img(image, conv, img_list)
    chat.ask(QUESTION, conv)
    text, _ = chat.answer(conv, img_list, max_new_tokens=4, do_sample=False)
    assert conv.get_prompt().startswith(chat.template.conversation.system + "###Human: <Img>")
    assert "###" not in text

"""Weight files: preflight, offline URL rule, safe and strict loading, key accounting, bad input."""

from __future__ import annotations

import logging
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from minigpt4.models import weights as ckpt_mod
from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.model_config import BLIP2_FLANT5XXL_URL, EVA_VIT_G_URL
from minigpt4.models.qformer import LAVIS_POSITION_IDS
from minigpt4.models.weights import (
    CheckpointError,
    MissingWeightsError,
    blip2_state,
    eva_vit_state,
    load_minigpt4_checkpoint,
    load_state_dict_file,
    minigpt4_state,
)
from tests.model_fixtures import (
    TINY_DIR,
    build_full_size,
    load_reference,
    read_key_shapes,
    tiny_model_config,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return load_reference()


@pytest.fixture(scope="module")
def tiny_model():
    return MiniGPT4.from_config(tiny_model_config(stage=1))


def encode(model, ref):
    with torch.no_grad():
        return model.encode_img(ref["images_eval_processed"])[0]


def test_preflight_lists_every_missing_file_in_one_error(tmp_path):
    cfg = tiny_model_config(
        stage=2,
        vit_model_path=str(tmp_path / "nope" / "eva_vit_g.pth"),
        q_former_model=str(tmp_path / "blip2.pth"),
        llama_model=str(tmp_path / "vicuna"),
        ckpt=str(tmp_path / "minigpt4.pth"),
        prompt_path=str(tmp_path / "prompts.txt"),
    )
    with pytest.raises(MissingWeightsError) as info:
        MiniGPT4.from_config(cfg)
    message = str(info.value)
    assert "5 weight file(s)" in message
    for key in ("vit_model_path", "q_former_model", "llama_model", "ckpt", "prompt_path"):
        assert f"model.{key}" in message
    assert str(tmp_path / "vicuna") in message and str(tmp_path / "blip2.pth") in message


def test_llm_folder_without_tokenizer_is_reported(tmp_path):
    folder = tmp_path / "vicuna"
    shutil.copytree(TINY_DIR / "llama", folder)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(MissingWeightsError, match="tokenizer"):
        MiniGPT4.from_config(tiny_model_config(llama_model=str(folder)))


def test_default_urls_use_the_torch_hub_cache_offline(tmp_path, monkeypatch, ref):
    """Unset vit_model_path / default q_former_model = files in $TORCH_HOME/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ckpt_mod.ALLOW_DOWNLOAD_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    cfg = tiny_model_config()
    del cfg["vit_model_path"], cfg["q_former_model"]
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError) as info:
        MiniGPT4.from_config(cfg)
    message = str(info.value)
    assert str(cache / "eva_vit_g.pth") in message and EVA_VIT_G_URL in message
    assert str(cache / "blip2_pretrained_flant5xxl.pth") in message
    assert BLIP2_FLANT5XXL_URL in message and "allow_download" in message

    cache.mkdir(parents=True)
    shutil.copy(TINY_DIR / "eva_vit_g.pth", cache / "eva_vit_g.pth")
    shutil.copy(TINY_DIR / "blip2_pretrained_flant5xxl.pth", cache)
    model = MiniGPT4.from_config(cfg)
    assert (encode(model, ref) - ref["inputs_llama"]).abs().max() <= ATOL


def test_download_only_when_allowed(tmp_path, monkeypatch, ref):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        fetched.append(url)
        shutil.copy(TINY_DIR / url.rsplit("/", 1)[-1], dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    cfg = tiny_model_config(allow_download=True)
    del cfg["vit_model_path"], cfg["q_former_model"]
    model = MiniGPT4.from_config(cfg)
    assert fetched == [EVA_VIT_G_URL, BLIP2_FLANT5XXL_URL]
    assert (encode(model, ref) - ref["inputs_llama"]).abs().max() <= ATOL


def test_safetensors_accepted_whatever_the_extension(tmp_path, ref):
    eva = torch.load(TINY_DIR / "eva_vit_g.pth", weights_only=True)
    save_file(eva, str(tmp_path / "eva_vit_g.pth"))
    blip2 = torch.load(TINY_DIR / "blip2_pretrained_flant5xxl.pth", weights_only=True)["model"]
    save_file(blip2, str(tmp_path / "blip2.safetensors"))
    model = MiniGPT4.from_config(
        tiny_model_config(
            vit_model_path=str(tmp_path / "eva_vit_g.pth"),
            q_former_model=str(tmp_path / "blip2.safetensors"),
        )
    )
    assert (encode(model, ref) - ref["inputs_llama"]).abs().max() <= ATOL


class Payload:
    """Would run code when unpickled by a plain torch.load."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "content, match",
    [
        (b"this is not a checkpoint", "not a PyTorch checkpoint"),
        ("list", "not a state dict"),
        ("non-tensor", "not a state dict"),
        ("crafted", "refused to unpickle it: it holds a reference to print"),
        ("truncated", "truncated or corrupt"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, content, match):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "non-tensor":
        torch.save({"model": {"llama_proj.weight": [1, 2, 3]}}, path)
    elif content == "crafted":
        with open(path, "wb") as f:
            pickle.dump({"model": Payload()}, f, protocol=2)
    elif content == "truncated":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=match) as info:
        load_state_dict_file(str(path), "model.ckpt")
    assert str(path) in str(info.value) and "model.ckpt" in str(info.value)


def test_crafted_pickle_through_from_config_is_refused(tmp_path, capsys):
    path = tmp_path / "minigpt4.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        MiniGPT4.from_config(tiny_model_config(ckpt=str(path)))
    assert "pwned" not in capsys.readouterr().out


def test_ignored_keys_are_reported_exactly(tiny_model):
    assert tiny_model.load_report == {
        "model.vit_model_path": [],
        "model.q_former_model": [LAVIS_POSITION_IDS, "t5_proj.bias", "t5_proj.weight"],
        "model.ckpt": [],
    }


def test_extra_vit_block_is_dropped_by_name(tmp_path, ref):
    eva = torch.load(TINY_DIR / "eva_vit_g.pth", weights_only=True)
    extra = {k.replace("blocks.1.", "blocks.2."): v for k, v in eva.items() if "blocks.1." in k}
    torch.save({**eva, **extra}, tmp_path / "eva_vit_g.pth")
    model = MiniGPT4.from_config(tiny_model_config(vit_model_path=str(tmp_path / "eva_vit_g.pth")))
    assert model.load_report["model.vit_model_path"] == sorted(extra)
    assert (encode(model, ref) - ref["inputs_llama"]).abs().max() <= ATOL


@pytest.mark.parametrize("file_key", ["vit_model_path", "q_former_model"])
def test_missing_key_is_an_error(tmp_path, file_key):
    source = TINY_DIR / (
        "eva_vit_g.pth" if file_key == "vit_model_path" else "blip2_pretrained_flant5xxl.pth"
    )
    content = torch.load(source, weights_only=True)
    state = content["model"] if "model" in content else content
    victim = next(k for k in state if "blocks.1.mlp.fc2.bias" in k or "layer.3.output_query" in k)
    del state[victim]
    torch.save(content, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="missing") as info:
        MiniGPT4.from_config(tiny_model_config(**{file_key: str(tmp_path / "w.pth")}))
    assert str(tmp_path / "w.pth") in str(info.value)


def test_size_mismatch_is_an_error():
    sizes = {"num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 64}
    cfg = tiny_model_config(qformer_config={"hidden_size": 48, **sizes})
    with pytest.raises(CheckpointError, match="mismatched shapes") as info:
        MiniGPT4.from_config(cfg)
    assert "query_tokens" in str(info.value) and "model.q_former_model" in str(info.value)


def test_13b_checkpoint_with_7b_llm_says_so(tmp_path):
    model = build_full_size("7B")
    torch.save(
        {
            "model": {
                "llama_proj.weight": torch.zeros(5120, 768),
                "llama_proj.bias": torch.zeros(5120),
            }
        },
        tmp_path / "pretrained_minigpt4.pth",
    )
    with pytest.raises(CheckpointError, match="with a 13B LLM .* with a 7B LLM"):
        load_minigpt4_checkpoint(model, str(tmp_path / "pretrained_minigpt4.pth"))


def test_checkpoint_without_llama_proj_is_an_error(tmp_path):
    torch.save({"model": {"something.else": torch.zeros(2)}}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="llama_proj.weight"):
        MiniGPT4.from_config(tiny_model_config(ckpt=str(tmp_path / "c.pth")))


def test_original_runner_checkpoint_loads_and_reports_its_buffers(tmp_path, tiny_model):
    """The original's runner saved buffers and optimizer/config/scaler/epoch next to llama_proj."""
    shapes = read_key_shapes("tiny_minigpt4_keys.txt")
    buffers = {k: torch.zeros(shapes[k]) for k in shapes if k.endswith("inv_freq")}
    buffers[LAVIS_POSITION_IDS] = torch.arange(shapes[LAVIS_POSITION_IDS][1]).unsqueeze(0)
    proj = {"llama_proj.weight": torch.randn(64, 32), "llama_proj.bias": torch.randn(64)}
    torch.save(
        {
            "model": {**proj, **buffers},
            "optimizer": {
                "state": {0: {"step": torch.tensor(3.0)}},
                "param_groups": [{"lr": 1e-4}],
            },
            "config": {"run": {"task": "image_text_pretrain"}, "model": {"arch": "mini_gpt4"}},
            "scaler": None,
            "epoch": 2,
        },
        tmp_path / "checkpoint_2.pth",
    )
    model = MiniGPT4.from_config(tiny_model_config(ckpt=str(tmp_path / "checkpoint_2.pth")))
    assert model.load_report["model.ckpt"] == sorted(buffers)
    assert torch.equal(model.llama_proj.weight, proj["llama_proj.weight"])
    assert torch.equal(model.llama_proj.bias, proj["llama_proj.bias"])


def test_our_runner_style_checkpoint_is_the_original_layout(tiny_model):
    """state_dict minus frozen parameters (the runner's rule) = the original's llama_proj."""
    state = tiny_model.state_dict()
    frozen = [n for n, p in tiny_model.named_parameters() if not p.requires_grad]
    for name in frozen:
        del state[name]
    original = read_key_shapes("tiny_minigpt4_keys.txt")
    assert sorted(state) == ["llama_proj.bias", "llama_proj.weight"]
    assert all(tuple(v.shape) == original[k] for k, v in state.items())


def test_export_helpers_write_the_real_formats(tmp_path, tiny_model, ref):
    """Files written from a model load back through from_config and reproduce the reference."""
    torch.save(eva_vit_state(tiny_model.visual_encoder), tmp_path / "eva_vit_g.pth")
    torch.save(blip2_state(tiny_model, max_position_embeddings=64), tmp_path / "b.pth")
    torch.save(minigpt4_state(tiny_model.state_dict()), tmp_path / "m.pth")
    original = read_key_shapes("tiny_minigpt4_keys.txt")
    blip2 = torch.load(tmp_path / "b.pth", weights_only=True)["model"]
    assert {k: tuple(v.shape) for k, v in blip2.items()} == {
        k: v
        for k, v in original.items()
        if k.startswith(("Qformer.", "ln_vision.", "query_tokens"))
    }
    eva = torch.load(tmp_path / "eva_vit_g.pth", weights_only=True)
    assert sorted(eva) == sorted(torch.load(TINY_DIR / "eva_vit_g.pth", weights_only=True))
    model = MiniGPT4.from_config(
        tiny_model_config(
            vit_model_path=str(tmp_path / "eva_vit_g.pth"),
            q_former_model=str(tmp_path / "b.pth"),
            ckpt=str(tmp_path / "m.pth"),
        )
    )
    assert (encode(model, ref) - ref["inputs_llama"]).abs().max() <= ATOL


@pytest.mark.parametrize("shape", [(2, 3, 112, 112), (3, 224, 224), (2, 1, 224, 224)])
def test_wrong_image_size_is_a_clear_error(tiny_model, shape):
    with pytest.raises(ValueError, match=r"\[B, 3, 224, 224\]"):
        tiny_model.encode_img(torch.zeros(shape))


def test_unknown_size_keys_are_errors():
    with pytest.raises(ValueError, match="vit_config: unknown key"):
        MiniGPT4.from_config(tiny_model_config(vit_config={"width": 48}))
    with pytest.raises(ValueError, match="qformer_config: unknown key"):
        MiniGPT4.from_config(tiny_model_config(qformer_config={"layers": 4}))


def test_cpu_model_is_fp32_even_with_vit_precision_fp16(tiny_model):
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}


@pytest.mark.parametrize("key", ["image_size", "vit_config.img_size"])
def test_pos_embed_is_interpolated_for_another_image_size(caplog, key):
    """A 16x16-grid eva_vit_g.pth used at image size 112 (8x8): bicubic resize of the patch grid."""
    if key == "image_size":
        cfg = tiny_model_config(image_size=112)
    else:  # the more specific vit_config wins over the default image_size 224
        cfg = tiny_model_config()
        cfg.vit_config.img_size = 112
    with caplog.at_level(logging.INFO):
        model = MiniGPT4.from_config(cfg)
    assert "Position interpolate from 16x16 to 8x8" in caplog.text
    file_pos = torch.load(TINY_DIR / "eva_vit_g.pth", weights_only=True)["pos_embed"]
    grid = file_pos[:, 1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    expected = torch.cat([file_pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 64, -1)], dim=1)
    assert torch.equal(model.visual_encoder.pos_embed.detach(), expected)
    with torch.no_grad():
        assert model.encode_img(torch.zeros(1, 3, 112, 112))[0].shape == (1, 8, 64)


def test_llm_weights_missing_a_tensor_is_an_error(tmp_path):
    folder = tmp_path / "vicuna"
    shutil.copytree(TINY_DIR / "llama", folder)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["model.layers.1.mlp.up_proj.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.up_proj.weight"):
        MiniGPT4.from_config(tiny_model_config(llama_model=str(folder)))


def test_vicuna_checkpoint_on_the_llama2_model_names_both(tmp_path):
    """A 13B Vicuna MiniGPT-4 checkpoint on the LLaMA-2 config, and the other way round."""
    llama2 = build_full_size("7B", arch="minigpt4")
    vicuna = build_full_size("7B")
    for name, (out, width) in {"vicuna13b.pth": (5120, 768), "llama2.pth": (4096, 5632)}.items():
        state = {"llama_proj.weight": torch.zeros(out, width), "llama_proj.bias": torch.zeros(out)}
        torch.save({"model": state}, tmp_path / name)
    with pytest.raises(CheckpointError) as info:
        load_minigpt4_checkpoint(llama2, str(tmp_path / "vicuna13b.pth"))
    message = str(info.value)
    assert "MiniGPT-4 (Vicuna, Q-Former" in message and "with a 13B LLM" in message
    assert "MiniGPT-4 (LLaMA-2 Chat, no Q-Former" in message and "with a 7B LLM" in message
    assert "model.ckpt" in message and "vicuna13b.pth" in message
    with pytest.raises(CheckpointError, match=r"LLaMA-2 Chat.*llama_proj \[4096, 5632\].*Vicuna"):
        load_minigpt4_checkpoint(vicuna, str(tmp_path / "llama2.pth"))

"""The one precision decision of training (issue 22 item 3): run and model keys read together,
contradictions are errors naming both keys before the model loads, and on a CPU the frozen parts
keep their dtype (no fp32 copy of the model) while the trained parameters are fp32."""

from __future__ import annotations

import logging

import pytest
import torch

import train
from minigpt4.common.config_error import ConfigError
from minigpt4.common.run_config import RunConfig
from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.training_precision import decide, prepare_for_training
from tests.model_fixtures import load_reference, tiny_model_config
from tests.train_helpers import write_align_folder, write_stage2_config

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def _run(**values) -> RunConfig:
    return RunConfig.from_node(values)


def _model(**values) -> MiniGPT4Config:
    return MiniGPT4Config.from_cfg({"llama_model": "x", **values})


@pytest.mark.parametrize(
    "run, model, model_keys, autocast, scaler",
    [
        ({"amp": True}, {}, set(), FP16, True),  # the original: fp16 + GradScaler
        ({"amp": True, "amp_dtype": "bf16"}, {"autocast_dtype": "bf16"}, set(), BF16, False),
        ({"amp": False}, {}, set(), FP16, False),  # the original's inner autocast, no scaler
        ({"amp": False}, {"autocast_dtype": "bf16"}, {"autocast_dtype"}, BF16, False),
    ],
)
def test_cuda_has_one_autocast_from_both_sections(run, model, model_keys, autocast, scaler):
    plan = decide(_run(**run), _model(**model), "cuda", set(run), model_keys)
    assert (plan.autocast, plan.grad_scaler) == (autocast, scaler)
    assert "llama_proj" not in plan.frozen and "fp32" in plan.describe()


def test_cuda_amp_dtype_against_an_explicit_model_autocast_dtype_names_both_keys():
    with pytest.raises(ConfigError, match=r"run.amp_dtype=bf16 and model.autocast_dtype=fp16"):
        decide(
            _run(amp=True, amp_dtype="bf16"),
            _model(autocast_dtype="fp16"),
            "cuda",
            {"amp", "amp_dtype"},
            {"autocast_dtype"},
        )


@pytest.mark.parametrize(
    "run, model, message",
    [
        ({"amp": True}, {"cpu_dtype": "fp32"}, r"run.amp=True and model.cpu_dtype=fp32"),
        ({"amp": True, "amp_dtype": "fp16"}, {}, r"run.amp_dtype=fp16 and run.device=cpu"),
    ],
)
def test_cpu_contradictions_name_both_keys(run, model, message):
    with pytest.raises(ConfigError, match=message):
        decide(_run(device="cpu", **run), _model(**model), "cpu", set(run), set(model))


def test_cpu_keeps_the_frozen_dtype_and_has_no_autocast():
    plan = decide(_run(amp=True, device="cpu"), _model(), "cpu", {"amp"}, set())
    assert plan.autocast is None and not plan.grad_scaler
    assert plan.frozen == "ViT and Q-Former bf16, LLM bf16"
    quantized = decide(_run(), _model(llm_quantization="4bit"), "cpu")
    assert "4-bit NF4" in quantized.frozen


def test_train_py_refuses_a_contradiction_before_the_model_loads(tmp_path, caplog):
    align = write_align_folder(tmp_path / "align", n=2)
    cfg = write_stage2_config(tmp_path / "c.yaml", align, tmp_path / "out", amp=True)
    with pytest.raises(ConfigError, match=r"run.amp=True and model.cpu_dtype=fp32"):
        train.main(["--cfg-path", str(cfg)])
    assert "Loading VIT" not in caplog.text


def test_a_bf16_model_trains_on_cpu_without_an_fp32_copy(caplog):
    model = MiniGPT4.from_config(tiny_model_config(stage=2, cpu_dtype="bf16"))
    frozen_before = {n: p.dtype for n, p in model.named_parameters() if not p.requires_grad}
    with caplog.at_level(logging.INFO):
        model, plan = prepare_for_training(model, _run(device="cpu"), torch.device("cpu"))
    lines = [m for m in caplog.messages if m.startswith("Training precision")]
    assert lines == [plan.describe()]
    assert lines[0].startswith("Training precision on cpu: compute no autocast")
    assert {n: p.dtype for n, p in model.named_parameters() if not p.requires_grad} == frozen_before
    assert set(frozen_before.values()) == {BF16, FP32}  # ln_vision is fp32 by design
    assert model.llama_model.get_input_embeddings().weight.dtype == BF16
    assert model.llama_proj.weight.dtype == FP32

    ref = load_reference()
    samples = {"image": ref["images_eval_processed"], "text_input": list(ref["stage2"]["text"])}
    model.train()
    with plan.autocast_context():
        loss = model(samples)["loss"]
    loss.backward()
    assert loss.dtype == FP32 and torch.isfinite(loss)
    assert model.llama_proj.weight.grad.dtype == FP32


def test_a_trained_llm_layer_of_a_bf16_model_on_cpu_keeps_bf16():
    layer = "llama_model.model.layers.1"
    model = MiniGPT4.from_config(
        tiny_model_config(stage=2, cpu_dtype="bf16", trainable=["llama_proj", layer])
    )
    model, plan = prepare_for_training(model, _run(device="cpu"), torch.device("cpu"))
    assert plan.trainable == "bf16 and fp32" and "AdamW state bf16 and fp32" in plan.describe()
    assert model.llama_proj.weight.dtype == FP32
    assert model.llama_model.model.layers[1].mlp.up_proj.weight.dtype == BF16
    ref = load_reference()
    model.train()
    samples = {"image": ref["images_eval_processed"], "text_input": list(ref["stage2"]["text"])}
    model(samples)["loss"].backward()
    assert model.llama_model.model.layers[1].mlp.up_proj.weight.grad is not None

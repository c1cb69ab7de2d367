"""Run dtypes, quiet quantized answers, checkpoints and the memory preflight on CUDA (skipped
without CUDA; ``pytest -m gpu`` runs every GPU test). The CUDA benchmark smoke test is in
tests/test_bench_real_size.py."""

from __future__ import annotations

import logging

import pytest
import torch

from minigpt4.models import memory
from minigpt4.models.mini_gpt4 import MiniGPT4
from minigpt4.models.weights import training_checkpoint_state
from tests.model_fixtures import load_reference, tiny_model_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _cuda_model(**overrides):
    cfg = tiny_model_config(stage=2, device="cuda", device_8bit=0, attn_implementation=None,
                            **overrides)  # fmt: skip
    return MiniGPT4.from_config(cfg).to("cuda").eval()


def test_eight_bit_llm_is_fp16_whatever_the_autocast_dtype(ref):
    model = _cuda_model(autocast_dtype="bf16", low_resource=True)
    assert model.llama_model.get_input_embeddings().weight.dtype == torch.float16
    assert model.autocast_dtype == torch.bfloat16
    samples = {
        "image": ref["images_eval_processed"].cuda(),
        "text_input": list(ref["stage2"]["text"]),
    }
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("bitsandbytes").addHandler(handler)
    try:
        with torch.no_grad():
            loss = model(samples)["loss"]
    finally:
        logging.getLogger("bitsandbytes").removeHandler(handler)
    assert records == []  # no "inputs will be cast ... to float16" per call
    assert abs(loss.item() - ref["stage2"]["loss"].item()) < 0.1


@pytest.mark.parametrize("overrides", [{"low_resource": True}, {"llm_quantization": "4bit"}])
def test_quantized_cuda_checkpoint_holds_llama_proj_only(ref, overrides):
    model = _cuda_model(**overrides)
    assert set(training_checkpoint_state(model)) == {"llama_proj.weight", "llama_proj.bias"}


def test_memory_preflight_on_a_small_gpu(monkeypatch):
    monkeypatch.setattr(memory, "available_gpu_bytes", lambda config: 1024)
    monkeypatch.delenv(memory.SKIP_ENV, raising=False)
    with pytest.raises(memory.NotEnoughMemoryError, match="fp16 on cuda: it needs about"):
        _cuda_model()

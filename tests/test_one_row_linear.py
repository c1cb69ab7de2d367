"""One-row bf16 products in torch's own kernel where oneDNN's is the slower one (AVX512_BF16
without AMX): which CPUs get it (capability queries patched, so every branch runs on any
machine), that such a product runs with oneDNN off and gives torch's numbers, that nothing else
changes, and that the loaded LLM decodes through it to the logits of plain bf16 layers."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.models import cpu_choice
from minigpt4.models import one_row_linear as one_row
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import load_reference, tiny_model_config
from tests.test_cpu_choice import _cpu

BF16 = torch.bfloat16


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "limit", "cpu_dtype", "cpu_matmul", "expected"),
    [
        (True, False, None, "auto", "auto", True),
        (True, False, None, "bf16", "auto", True),
        (True, False, None, "auto", "bf16", True),
        (True, False, None, "auto", "fp32", False),  # upcast: the override's own rule
        (True, False, None, "fp32", "auto", False),  # fp32 weights
        (True, True, None, "auto", "auto", False),  # AMX: not measured, left alone
        (False, False, None, "auto", "auto", False),  # emulated bf16: upcast instead
        (True, False, "AVX2", "auto", "auto", False),
        (True, False, "AVX512_CORE_BF16", "auto", "auto", True),
    ],
)
def test_which_cpus_take_one_row_products_out_of_onednn(
    monkeypatch, avx512_bf16, amx, limit, cpu_dtype, cpu_matmul, expected
):
    _cpu(monkeypatch, avx512_bf16, amx, limit)
    assert cpu_choice.choose(cpu_dtype, cpu_matmul).one_row_aten is expected


def _spy_onednn_state(monkeypatch) -> list[bool]:
    """Record whether oneDNN was on at each product of the module under test."""
    states: list[bool] = []

    def linear(x, weight, bias=None):
        states.append(torch.backends.mkldnn.enabled)
        return F.linear(x, weight, bias)

    monkeypatch.setattr(one_row, "F", type("F", (), {"linear": staticmethod(linear)}))
    monkeypatch.setattr(nn.Linear, "forward", lambda self, x: linear(x, self.weight, self.bias))
    return states


def test_a_one_row_product_runs_without_onednn_and_nothing_else_does(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(64, 48).to(BF16).requires_grad_(False)
    assert one_row.one_row_frozen_linears(layer) == 1 and isinstance(layer, one_row.OneRowLinear)
    x = torch.randn(1, 1, 64, dtype=BF16)
    torch.backends.mkldnn.enabled = False
    try:
        expected = F.linear(x, layer.weight, layer.bias)
    finally:
        torch.backends.mkldnn.enabled = True
    assert torch.equal(layer(x), expected)
    assert torch.backends.mkldnn.enabled  # switched back on
    states = _spy_onednn_state(monkeypatch)
    layer(x)
    layer(torch.randn(2, 64, dtype=BF16))  # two rows: oneDNN's
    layer.weight.requires_grad_(True)
    layer(x)  # a trained weight: as nn.Linear
    assert states == [False, True, True]


def test_only_frozen_bf16_plain_linears_are_changed():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)).to(BF16)
    model[0].requires_grad_(False)
    model[1].float().requires_grad_(False)
    assert one_row.one_row_frozen_linears(model) == 1
    assert [type(m).__name__ for m in model] == ["OneRowLinear", "Linear", "Linear"]


def test_the_loaded_llm_decodes_through_it_with_plain_bf16_logits(monkeypatch, caplog):
    """On a CPU that takes it, every frozen bf16 Linear (the LLM's head too) takes one-row
    products out of oneDNN, the log line says so, and a decode step's logits are those of
    plain bf16 layers within rounding."""
    _cpu(monkeypatch, True, False)
    ref = load_reference()
    config = tiny_model_config(stage=2, cpu_dtype="auto")
    with caplog.at_level(logging.INFO, logger="minigpt4.models.loading"):
        model = MiniGPT4.from_config(config).eval()
    assert any("one-row products in torch's own kernel" in r.getMessage() for r in caplog.records)
    llm = model.llama_model
    assert isinstance(llm.get_output_embeddings(), one_row.OneRowLinear)
    changed = [m for m in llm.modules() if isinstance(m, one_row.OneRowLinear)]
    assert len(changed) == 7 * len(llm.model.layers) + 1
    assert one_row.frozen_bf16_linears(model) == []  # no plain frozen bf16 Linear is left
    with torch.no_grad():
        inputs_llama, _ = model.encode_img(ref["images_eval_processed"][:1])
        context = model.get_context_emb("<s>Hi <ImageHere> what do you see", [inputs_llama])
        prefill = llm(inputs_embeds=context, use_cache=True)
        token = prefill.logits[:, -1:].argmax(-1)
        step = llm(input_ids=token, past_key_values=prefill.past_key_values).logits[0, -1]
        for module in changed:
            module.__class__ = nn.Linear
        prefill = llm(inputs_embeds=context, use_cache=True)
        plain = llm(input_ids=token, past_key_values=prefill.past_key_values).logits[0, -1]
    gap = (step.float() - plain.float()).abs().max() / plain.float().abs().max()
    assert gap < 0.02

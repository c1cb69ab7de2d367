"""8-bit LLM layers on CPU multiply by their int8 weight alone (minigpt4.models.int8_linear):
the numbers of ``x @ (CB * SCB / 127).T`` through torch's int8 kernel for few rows and a
dequantized weight for many, gradients included, and the loaded 8-bit model answers as the
unquantized one does on the tiny weights."""

from __future__ import annotations

import logging

import pytest
import torch

from minigpt4.models import int8_linear
from minigpt4.models.int8_linear import DEQUANTIZE_MIN_ROWS, int8_weight_linears
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import load_reference, tiny_model_config
from tests.test_model_training import samples_of

bnb = pytest.importorskip("bitsandbytes")

IN, OUT = 64, 172  # the tiny LLM's hidden and MLP widths


def _layer(seed: int = 0, width: int = IN) -> torch.nn.Module:
    """A bitsandbytes 8-bit layer on CPU, quantized from a random weight as loading does."""
    torch.manual_seed(seed)
    layer = bnb.nn.Linear8bitLt(width, OUT, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(torch.randn(OUT, width), requires_grad=False,
                                     has_fp16_weights=False)  # fmt: skip
    return layer.to("cpu")


def _expected(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the int8 weight means, multiplied in fp64 (bitsandbytes' own definition; its
    LLM.int8() moves the row absmax from the weight to the layer's state on its first call)."""
    scb = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB
    full = layer.weight.data.double() * (scb.double() / 127)[:, None]
    return x.double() @ full.T


@pytest.mark.parametrize(
    "rows", [1, 5, DEQUANTIZE_MIN_ROWS - 1, DEQUANTIZE_MIN_ROWS, DEQUANTIZE_MIN_ROWS + 9]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_products_are_those_of_the_dequantized_weight(rows, dtype):
    layer = _layer()
    assert int8_weight_linears(torch.nn.Sequential(layer), None) == 1
    assert layer.weight.dtype == torch.int8  # the weight stays bitsandbytes' int8 rows
    x = torch.randn(2, rows, IN).to(dtype)
    with torch.no_grad():
        got = layer(x)
    want = _expected(layer, x)
    assert got.dtype == dtype and got.shape == (2, rows, OUT)
    # bf16 outputs round to 8 bits of mantissa; fp32 sums differ only in order
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert (got.double() - want).abs().max() <= tol * want.abs().max()


def test_many_rows_dequantize_and_few_rows_do_not(monkeypatch):
    layer = _layer()
    int8_weight_linears(torch.nn.Sequential(layer), torch.float32)
    calls = []
    real = int8_linear.scaled_product
    monkeypatch.setattr(int8_linear, "scaled_product", lambda *a: calls.append(a[4]) or real(*a))
    with torch.no_grad():
        layer(torch.randn(DEQUANTIZE_MIN_ROWS - 1, IN).bfloat16())
        assert calls == []
        out = layer(torch.randn(DEQUANTIZE_MIN_ROWS, IN).bfloat16())
    assert calls == [torch.float32]  # large_dtype: the product of many rows runs in fp32
    assert out.dtype == torch.bfloat16


def test_widths_the_int8_kernel_mishandles_dequantize(monkeypatch):
    """An input width of 172 (the tiny LLM's down_proj) crashes torch's int8 kernel or gives
    NaN; such a layer dequantizes even for one row, and gives the right numbers every time."""
    layer = _layer(width=OUT)
    int8_weight_linears(torch.nn.Sequential(layer), None)
    calls = []
    real = int8_linear.scaled_product
    monkeypatch.setattr(int8_linear, "scaled_product", lambda *a: calls.append(a[4]) or real(*a))
    for rows in range(1, 40):
        x = torch.randn(rows, OUT).bfloat16()
        with torch.no_grad():
            got = layer(x)
        want = _expected(layer, x)
        assert torch.isfinite(got).all()
        assert (got.double() - want).abs().max() <= 1e-2 * want.abs().max()
    assert calls == [torch.bfloat16] * 39


@pytest.mark.parametrize("rows", [3, DEQUANTIZE_MIN_ROWS + 9])
def test_the_input_gradient_is_that_of_the_dequantized_weight(rows):
    layer = _layer(seed=1)
    int8_weight_linears(torch.nn.Sequential(layer), None)
    x = torch.randn(rows, IN, requires_grad=True)
    upstream = torch.randn(rows, OUT)
    layer(x).backward(upstream)
    full = layer.weight.data.double() * (layer.weight.SCB.double() / 127)[:, None]
    want = upstream.double() @ full
    assert (x.grad.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_other_layers_are_left_alone():
    plain = torch.nn.Linear(IN, OUT)
    assert int8_weight_linears(torch.nn.Sequential(plain), None) == 0
    assert type(plain) is torch.nn.Linear


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _load_8bit(caplog, **overrides) -> tuple[MiniGPT4, list[str]]:
    with caplog.at_level(logging.INFO, logger="minigpt4.models.loading.quantized"):
        model = MiniGPT4.from_config(tiny_model_config(stage=1, low_resource=True, **overrides))
    return model, [r.getMessage() for r in caplog.records if "8-bit LLM on CPU" in r.getMessage()]


def test_auto_prefills_through_llm_int8_only_where_bitsandbytes_has_its_cpu_kernel(caplog):
    """low_resource on CPU with model.cpu_quantized: auto multiplies weight-only, its prefills
    through LLM.int8() where bitsandbytes reports its int8 kernel for this CPU; one line says
    which."""
    from minigpt4.models.loading.quantized import bnb_int8_kernel_on_cpu

    model, messages = _load_8bit(caplog)
    swapped = [m for m in model.modules() if type(m).__name__ == "Int8WeightLinear"]
    assert len(messages) == 1 and len(swapped) == 14
    assert "weight-only int8 products for its 14 8-bit layers" in messages[0]
    fast = bnb_int8_kernel_on_cpu()
    assert all(m.int8_prefill is fast for m in swapped)
    assert ("bitsandbytes' LLM.int8() for prefills" in messages[0]) is fast
    assert "(model.cpu_quantized: bitsandbytes keeps it)" in messages[0]


def test_int8_prefill_takes_llm_int8_for_many_rows_without_gradients(monkeypatch):
    layer = _layer()
    int8_weight_linears(torch.nn.Sequential(layer), None, int8_prefill=True)
    calls = []
    real = bnb.nn.Linear8bitLt.forward
    monkeypatch.setattr(bnb.nn.Linear8bitLt, "forward",
                        lambda self, x: calls.append(x.shape[0]) or real(self, x))  # fmt: skip
    many = torch.randn(DEQUANTIZE_MIN_ROWS, IN)
    with torch.no_grad():
        layer(torch.randn(DEQUANTIZE_MIN_ROWS - 1, IN))
        got = layer(many)
    assert calls == [DEQUANTIZE_MIN_ROWS]
    want = _expected(layer, many)  # LLM.int8() quantizes the activations too
    assert (got.double() - want).abs().max() <= 3e-2 * want.abs().max()
    layer(many.clone().requires_grad_(True)).sum().backward()  # training: weight-only
    assert calls == [DEQUANTIZE_MIN_ROWS]


def test_the_8bit_tiny_model_computes_the_unquantized_models_numbers(ref, caplog):
    """low_resource on CPU, weight-only (model.cpu_quantized: torch, on any CPU): every 8-bit
    layer multiplies weight-only (said once at load time); the stage-1 loss and a greedy
    answer's logits stay at the fp32 model's within 8-bit rounding, and a backward pass
    reaches llama_proj with the fp32 model's gradient."""
    quantized, messages = _load_8bit(caplog, cpu_quantized="torch")
    assert len(messages) == 1
    assert "weight-only int8 products for its 14 8-bit layers" in messages[0]
    layers = [m for m in quantized.llama_model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(layers) == 14 and all(type(m).__name__ == "Int8WeightLinear" for m in layers)
    plain = MiniGPT4.from_config(tiny_model_config(stage=1))
    samples = samples_of(ref, ref["stage1"]["text"])
    losses = []
    grads = []
    for model in (quantized, plain):
        model.llama_proj.weight.grad = None
        loss = model(samples)["loss"]
        loss.backward()
        losses.append(loss.item())
        grads.append(model.llama_proj.weight.grad.clone())
    assert abs(losses[0] - ref["stage1"]["loss"].item()) < 0.05
    assert abs(losses[0] - losses[1]) < 0.01
    torch.testing.assert_close(grads[0], grads[1], rtol=0.05, atol=1e-3)
    prompt = plain.llama_model.get_input_embeddings()(torch.tensor([[1, 5, 9, 13]]))
    with torch.no_grad():
        got = quantized.llama_model(inputs_embeds=prompt).logits[0, -1]
        want = plain.llama_model(inputs_embeds=prompt).logits[0, -1]
    assert got.argmax() == want.argmax()
    assert (got - want).abs().max() <= 0.05 * want.abs().max()

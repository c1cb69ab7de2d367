"""4-bit LLM layers through torch's int4 CPU kernel (minigpt4.models.int4_linear): the packed
layout read back, products and gradients against the weight it dequantizes to, and the loaded
tiny 4-bit model on a CPU without bitsandbytes' packed kernel (simulated on any CPU)."""

from __future__ import annotations

import logging

import pytest
import torch

from minigpt4.models import int4_linear
from minigpt4.models.int4_linear import DEQUANTIZE_MIN_ROWS, GROUP_SIZE, Int4WeightLinear
from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import load_reference, tiny_model_config
from tests.test_model_training import samples_of

READABLE = torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX2")
needs_layout = pytest.mark.skipif(
    not READABLE,
    reason=f"torch's int4 layout for {torch.backends.cpu.get_cpu_capability()} is not read here",
)


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def _nf4_layer(n: int, k: int, bias: bool, seed: int = 0):
    import bitsandbytes as bnb

    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=generator) * 0.05
    layer = bnb.nn.Linear4bit(k, n, bias=bias, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if bias:
        layer.bias = torch.nn.Parameter(torch.randn(n, generator=generator), requires_grad=False)
    return layer.to("cpu"), weight


@needs_layout
@pytest.mark.parametrize("n", [16, 48, 64, 96, 144, 160])
def test_unpack_reads_the_kernel_layout(n):
    """Full blocks of output rows (32 or 64, by the vector width torch dispatched) and a
    partial last block come back as packed, and the check against the kernel passes."""
    values = torch.randint(0, 16, (n, 3 * GROUP_SIZE), dtype=torch.int32)
    packed = int4_linear.pack(values)
    assert torch.equal(int4_linear.unpack(packed, n, values.shape[1]).int(), values)
    assert int4_linear.layout_understood()


@needs_layout
def test_requantization_moves_the_nf4_weight_less_than_nf4_moved_it():
    import bitsandbytes.functional as bnbf

    weight = torch.randn(256, 512, generator=torch.Generator().manual_seed(1)) * 0.02
    weight[:, :4] *= 8  # outlier columns, as LLM weights have
    nf4 = bnbf.dequantize_4bit(*bnbf.quantize_4bit(weight, quant_type="nf4")).float()
    values, scales = int4_linear.quantize(nf4)
    int4 = int4_linear.dequantize_transposed(int4_linear.pack(values), scales, 512, torch.float32)
    nf4_error = (nf4 - weight).norm() / weight.norm()
    requantized = (int4.t() - nf4).norm() / weight.norm()
    assert 0 < requantized < nf4_error < 0.15


@needs_layout
@pytest.mark.parametrize(
    "dtype, large",
    [(torch.bfloat16, torch.float32), (torch.float32, None), (torch.bfloat16, None)],
)
@pytest.mark.parametrize("rows", [1, 5, DEQUANTIZE_MIN_ROWS - 1, DEQUANTIZE_MIN_ROWS, 131])
def test_products_and_input_gradients_match_the_dequantized_weight(rows, dtype, large):
    """Both paths (torch's kernel below DEQUANTIZE_MIN_ROWS rows, the dequantized weight from
    there on) and the backward pass multiply by the same weight, with the bias."""
    nf4, _ = _nf4_layer(80, 2 * GROUP_SIZE, bias=True)
    layer = Int4WeightLinear.from_nf4(nf4, large)
    weight = int4_linear.dequantize_transposed(layer.packed, layer.scales, 64, torch.float32)
    weight = weight.t().clone()
    x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(rows)).to(dtype)
    x.requires_grad_(True)
    out = layer(x)
    expected = x.detach().float() @ weight.t() + layer.bias.float()
    assert out.dtype == dtype and out.shape == (rows, 80)
    scale = expected.abs().max().item()
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=2e-2 * scale)
    grad = torch.randn(rows, 80, generator=torch.Generator().manual_seed(7)).to(dtype)
    out.backward(grad)
    expected_grad = grad.float() @ weight
    grad_scale = expected_grad.abs().max().item()
    torch.testing.assert_close(x.grad.float(), expected_grad, rtol=0, atol=2e-2 * grad_scale)


def _without_packed_kernel(monkeypatch) -> None:
    """An AVX2-only CPU, by bitsandbytes' own check (its layers consult it when built)."""
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: False)


def _load(caplog, **overrides) -> tuple[MiniGPT4, list[str]]:
    with caplog.at_level(logging.INFO, logger="minigpt4.models.loading.quantized"):
        model = MiniGPT4.from_config(tiny_model_config(stage=2, llm_quantization="4bit",
                                                       **overrides))  # fmt: skip
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("4-bit LLM")]
    return model, messages


def _grad(model, ref) -> tuple[float, torch.Tensor]:
    model.train()
    model.prompt_list = model.prompt_list[:1]  # the same prompt for every model
    loss = model(samples_of(ref, ref["stage2"]["text"]))["loss"]
    loss.backward()
    model.eval()
    return loss.item(), model.llama_proj.weight.grad.clone()


@needs_layout
def test_without_the_packed_kernel_4bit_layers_take_torch_int4_and_train(ref, caplog, monkeypatch):
    """Where bitsandbytes has no fast 4-bit kernel, the layers torch's int4 kernel tiles move to
    it (said in one line), the rest stay NF4 (the tiny MLP's 172 does not tile); the stage-2
    loss stays within the 4-bit tolerance of the fp32 model's and llama_proj's gradient within
    twice the distance of the NF4 model's (requantizing moves the weights a little more)."""
    import bitsandbytes as bnb

    exact_loss, exact_grad = _grad(MiniGPT4.from_config(tiny_model_config(stage=2)), ref)
    _, nf4_grad = _grad(_load(caplog, cpu_quantized="bitsandbytes")[0], ref)
    caplog.clear()
    _without_packed_kernel(monkeypatch)
    model, messages = _load(caplog)
    assert len(messages) == 1
    assert messages[0].startswith("4-bit LLM on CPU: torch's int4 kernel for 8 of 14 layers")
    assert "this CPU has no AVX512-BF16" in messages[0]
    layer = model.llama_model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, Int4WeightLinear)
    assert isinstance(layer.mlp.down_proj, bnb.nn.Linear4bit)
    assert not layer.mlp.down_proj.support_avx512bf16_for_cpu
    loss, grad = _grad(model, ref)
    assert abs(loss - exact_loss) < 0.05 and grad.abs().sum() > 0
    distance = (grad - exact_grad).norm() / exact_grad.norm()
    assert distance < 2 * (nf4_grad - exact_grad).norm() / exact_grad.norm()


@pytest.mark.parametrize("choice", ["bitsandbytes", "torch"])
def test_model_cpu_quantized_overrides_the_choice(choice, caplog, monkeypatch):
    """``model.cpu_quantized: bitsandbytes`` keeps every layer NF4 (generic path without the packed
    kernel); ``torch`` moves the tileable ones to torch's kernel even where bitsandbytes' packed
    kernel runs."""
    if choice == "bitsandbytes":
        _without_packed_kernel(monkeypatch)
    elif not READABLE:
        pytest.skip(reason=f"torch's int4 layout for {torch.backends.cpu.get_cpu_capability()}")
    model, messages = _load(caplog, cpu_quantized=choice)
    converted = [m for m in model.modules() if isinstance(m, Int4WeightLinear)]
    assert len(messages) == 1
    if choice == "bitsandbytes":
        assert converted == []
        assert messages[0].startswith("4-bit LLM on CPU: bitsandbytes' generic 4-bit path for all")
    else:
        assert len(converted) == 8 and "(model.cpu_quantized is torch;" in messages[0]

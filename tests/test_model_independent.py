"""A second, independent tiny weight set (other sizes, other seed) checked against plain-torch math.

We cannot run the original here, so this set is checked against an independent computation: the
formulas of FACTS.md section c (EVA ViT, ln_vision, BERT-style Q-Former query path, LLaMA with
rotary embeddings, the forward's sequence layout and shifted cross-entropy) written out below with
nothing but ``torch``. The weights are generated from the LAVIS / HF key names directly (not from
this project's modules), written in the real file formats and loaded through ``from_config`` with
``vit_config`` / ``qformer_config``. What this shows: the loading path, the key mapping and the
modules compute those formulas for sizes other than the reference set's (different widths,
heads, patch size, image size, cross-attention frequency, query count). What it cannot show by
itself: that the formulas are the original's; the parity tests against the original's numbers do.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from minigpt4.models.mini_gpt4 import MiniGPT4
from tests.model_fixtures import STAGE2_TEMPLATE, TINY_DIR

SEED = 20260531
IMG, PATCH, VIT_DIM, VIT_DEPTH, VIT_HEADS, MLP_RATIO = 56, 8, 40, 3, 5, 2.5
Q_DIM, Q_LAYERS, Q_HEADS, Q_INTER, Q_CROSS_FREQ, N_QUERY = 24, 4, 3, 40, 3, 5
LLM_DIM, LLM_INTER, LLM_LAYERS, LLM_HEADS, VOCAB, RMS_EPS = 48, 96, 2, 6, 400, 1e-5
ATOL = 2e-5


def _weights(gen: torch.Generator) -> dict[str, dict[str, torch.Tensor]]:
    """Random weights keyed by the real files' names (LAVIS EVA, LAVIS BLIP-2, HF LLaMA)."""

    def rnd(*shape, std=0.2):
        return torch.randn(*shape, generator=gen) * std

    def norm(dim):  # weights away from 1 / biases away from 0, so a misplaced norm shows
        return 1 + rnd(dim), rnd(dim)

    vit = {
        "cls_token": rnd(1, 1, VIT_DIM),
        "pos_embed": rnd(1, (IMG // PATCH) ** 2 + 1, VIT_DIM),
        "patch_embed.proj.weight": rnd(VIT_DIM, 3, PATCH, PATCH, std=0.05),
        "patch_embed.proj.bias": rnd(VIT_DIM),
    }
    hidden = int(VIT_DIM * MLP_RATIO)
    for i in range(VIT_DEPTH):
        p = f"blocks.{i}."
        vit[p + "norm1.weight"], vit[p + "norm1.bias"] = norm(VIT_DIM)
        vit[p + "attn.q_bias"], vit[p + "attn.v_bias"] = rnd(VIT_DIM), rnd(VIT_DIM)
        vit[p + "attn.qkv.weight"] = rnd(3 * VIT_DIM, VIT_DIM)
        vit[p + "attn.proj.weight"], vit[p + "attn.proj.bias"] = rnd(VIT_DIM, VIT_DIM), rnd(VIT_DIM)
        vit[p + "norm2.weight"], vit[p + "norm2.bias"] = norm(VIT_DIM)
        vit[p + "mlp.fc1.weight"], vit[p + "mlp.fc1.bias"] = rnd(hidden, VIT_DIM), rnd(hidden)
        vit[p + "mlp.fc2.weight"], vit[p + "mlp.fc2.bias"] = rnd(VIT_DIM, hidden), rnd(VIT_DIM)

    blip2 = {"query_tokens": rnd(1, N_QUERY, Q_DIM, std=0.5)}
    blip2["ln_vision.weight"], blip2["ln_vision.bias"] = norm(VIT_DIM)
    q = "Qformer.bert."
    blip2[q + "embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    blip2[q + "embeddings.LayerNorm.weight"], blip2[q + "embeddings.LayerNorm.bias"] = norm(Q_DIM)
    for i in range(Q_LAYERS):
        p = f"{q}encoder.layer.{i}."
        attentions = ["attention"] + (["crossattention"] if i % Q_CROSS_FREQ == 0 else [])
        for att in attentions:
            kv_dim = VIT_DIM if att == "crossattention" else Q_DIM
            for name, in_dim in (("query", Q_DIM), ("key", kv_dim), ("value", kv_dim)):
                blip2[f"{p}{att}.self.{name}.weight"] = rnd(Q_DIM, in_dim)
                blip2[f"{p}{att}.self.{name}.bias"] = rnd(Q_DIM)
            blip2[f"{p}{att}.output.dense.weight"] = rnd(Q_DIM, Q_DIM)
            blip2[f"{p}{att}.output.dense.bias"] = rnd(Q_DIM)
            w, b = norm(Q_DIM)
            blip2[f"{p}{att}.output.LayerNorm.weight"], blip2[f"{p}{att}.output.LayerNorm.bias"] = (
                w,
                b,
            )
        blip2[p + "intermediate_query.dense.weight"] = rnd(Q_INTER, Q_DIM)
        blip2[p + "intermediate_query.dense.bias"] = rnd(Q_INTER)
        blip2[p + "output_query.dense.weight"] = rnd(Q_DIM, Q_INTER)
        blip2[p + "output_query.dense.bias"] = rnd(Q_DIM)
        blip2[p + "output_query.LayerNorm.weight"], blip2[p + "output_query.LayerNorm.bias"] = norm(
            Q_DIM
        )
    blip2["t5_proj.weight"], blip2["t5_proj.bias"] = rnd(16, Q_DIM), rnd(16)

    llm = {"model.embed_tokens.weight": rnd(VOCAB, LLM_DIM, std=0.5)}
    for i in range(LLM_LAYERS):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            llm[f"{p}self_attn.{name}.weight"] = rnd(LLM_DIM, LLM_DIM)
        llm[p + "mlp.gate_proj.weight"] = rnd(LLM_INTER, LLM_DIM)
        llm[p + "mlp.up_proj.weight"] = rnd(LLM_INTER, LLM_DIM)
        llm[p + "mlp.down_proj.weight"] = rnd(LLM_DIM, LLM_INTER)
        llm[p + "input_layernorm.weight"] = norm(LLM_DIM)[0]
        llm[p + "post_attention_layernorm.weight"] = norm(LLM_DIM)[0]
    llm["model.norm.weight"] = norm(LLM_DIM)[0]
    llm["lm_head.weight"] = rnd(VOCAB, LLM_DIM)
    proj = {"llama_proj.weight": rnd(LLM_DIM, Q_DIM), "llama_proj.bias": rnd(LLM_DIM)}
    return {"vit": vit, "blip2": blip2, "llm": llm, "proj": proj}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The second weight set written in the real formats, and the model loaded from it."""
    root = tmp_path_factory.mktemp("second_set")
    gen = torch.Generator().manual_seed(SEED)
    w = _weights(gen)
    torch.save(w["vit"], root / "eva_vit_g.pth")
    torch.save({"model": w["blip2"]}, root / "blip2_pretrained_flant5xxl.pth")
    torch.save({"model": w["proj"]}, root / "pretrained_minigpt4.pth")
    llm_config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=LLM_DIM, intermediate_size=LLM_INTER,
        num_hidden_layers=LLM_LAYERS, num_attention_heads=LLM_HEADS, rms_norm_eps=RMS_EPS,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    with torch.device("meta"):
        llm = LlamaForCausalLM(llm_config)
    llm.load_state_dict(w["llm"], strict=True, assign=True)
    llm.save_pretrained(root / "llama")
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TINY_DIR / "llama" / name, root / "llama" / name)
    (root / "prompts.txt").write_text("<Img><ImageHere></Img> What is this?\nno image line")
    cfg = OmegaConf.create(
        {
            "arch": "mini_gpt4",
            "image_size": IMG,
            "num_query_token": N_QUERY,
            "vit_model_path": str(root / "eva_vit_g.pth"),
            "q_former_model": str(root / "blip2_pretrained_flant5xxl.pth"),
            "llama_model": str(root / "llama"),
            "ckpt": str(root / "pretrained_minigpt4.pth"),
            "vit_config": {"patch_size": PATCH, "embed_dim": VIT_DIM, "depth": VIT_DEPTH,
                           "num_heads": VIT_HEADS, "mlp_ratio": MLP_RATIO},
            "qformer_config": {"hidden_size": Q_DIM, "num_hidden_layers": Q_LAYERS,
                               "num_attention_heads": Q_HEADS, "intermediate_size": Q_INTER,
                               "cross_attention_freq": Q_CROSS_FREQ},
            "prompt_path": str(root / "prompts.txt"),
            "prompt_template": STAGE2_TEMPLATE,
            "end_sym": "###",
            "max_txt_len": 12,
            "device": "cpu",
            "cpu_dtype": "fp32",  # compared with fp32 formulas
        }
    )  # fmt: skip
    model = MiniGPT4.from_config(cfg)
    images = torch.randn(3, 3, IMG, IMG, generator=gen)
    return {"model": model, "w": w, "images": images}


# --- plain-torch formulas -------------------------------------------------------------------


def _heads(x, n):
    b, t, c = x.shape
    return x.view(b, t, n, c // n).transpose(1, 2)


def _merge(x):
    b, n, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, n * d)


def ref_vit(v, images):
    x = F.conv2d(images, v["patch_embed.proj.weight"], v["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([v["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + v["pos_embed"]
    for i in range(VIT_DEPTH):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (VIT_DIM,), v[p + "norm1.weight"], v[p + "norm1.bias"], eps=1e-6)
        bias = torch.cat([v[p + "attn.q_bias"], torch.zeros(VIT_DIM), v[p + "attn.v_bias"]])
        qkv = h @ v[p + "attn.qkv.weight"].T + bias
        q, k, val = (_heads(t, VIT_HEADS) for t in qkv.chunk(3, dim=-1))
        d = VIT_DIM // VIT_HEADS
        attn = torch.softmax((q * d**-0.5) @ k.transpose(-1, -2), dim=-1)
        x = x + _merge(attn @ val) @ v[p + "attn.proj.weight"].T + v[p + "attn.proj.bias"]
        h = F.layer_norm(x, (VIT_DIM,), v[p + "norm2.weight"], v[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ v[p + "mlp.fc1.weight"].T + v[p + "mlp.fc1.bias"])
        x = x + h @ v[p + "mlp.fc2.weight"].T + v[p + "mlp.fc2.bias"]
    return x


def _bert_attention(b, prefix, h, kv):
    def lin(name, x):
        return x @ b[f"{prefix}.self.{name}.weight"].T + b[f"{prefix}.self.{name}.bias"]

    q, k, v = _heads(lin("query", h), Q_HEADS), _heads(lin("key", kv), Q_HEADS), None
    v = _heads(lin("value", kv), Q_HEADS)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Q_DIM // Q_HEADS)
    ctx = _merge(torch.softmax(scores, dim=-1) @ v)
    out = ctx @ b[f"{prefix}.output.dense.weight"].T + b[f"{prefix}.output.dense.bias"]
    ln_w, ln_b = b[f"{prefix}.output.LayerNorm.weight"], b[f"{prefix}.output.LayerNorm.bias"]
    return F.layer_norm(out + h, (Q_DIM,), ln_w, ln_b, eps=1e-12)


def ref_qformer(b, image_embeds):
    q = "Qformer.bert."
    h = b["query_tokens"].expand(image_embeds.shape[0], -1, -1)
    h = F.layer_norm(
        h, (Q_DIM,), b[q + "embeddings.LayerNorm.weight"], b[q + "embeddings.LayerNorm.bias"],
        eps=1e-12,
    )  # fmt: skip
    for i in range(Q_LAYERS):
        p = f"{q}encoder.layer.{i}"
        h = _bert_attention(b, f"{p}.attention", h, h)
        if i % Q_CROSS_FREQ == 0:
            h = _bert_attention(b, f"{p}.crossattention", h, image_embeds)
        inter = F.gelu(
            h @ b[f"{p}.intermediate_query.dense.weight"].T
            + b[f"{p}.intermediate_query.dense.bias"]
        )
        out = inter @ b[f"{p}.output_query.dense.weight"].T + b[f"{p}.output_query.dense.bias"]
        h = F.layer_norm(
            out + h, (Q_DIM,), b[f"{p}.output_query.LayerNorm.weight"],
            b[f"{p}.output_query.LayerNorm.bias"], eps=1e-12,
        )  # fmt: skip
    return h


def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def ref_llama_logits(m, embeds, attention_mask):
    b, t, _ = embeds.shape
    d = LLM_DIM // LLM_HEADS
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    freqs = torch.outer(torch.arange(t).float(), inv_freq)
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = causal[None] & attention_mask.bool()[:, None, :]
    x = embeds
    for i in range(LLM_LAYERS):
        p = f"model.layers.{i}."
        h = _rms(x, m[p + "input_layernorm.weight"])
        q, k, v = (_heads(h @ m[f"{p}self_attn.{n}_proj.weight"].T, LLM_HEADS) for n in "qkv")
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        x = x + _merge(torch.softmax(scores, -1) @ v) @ m[p + "self_attn.o_proj.weight"].T
        h = _rms(x, m[p + "post_attention_layernorm.weight"])
        gate = F.silu(h @ m[p + "mlp.gate_proj.weight"].T) * (h @ m[p + "mlp.up_proj.weight"].T)
        x = x + gate @ m[p + "mlp.down_proj.weight"].T
    return _rms(x, m["model.norm.weight"]) @ m["lm_head.weight"].T


# --- tests ------------------------------------------------------------------------------------


def test_loaded_with_exact_key_accounting(world):
    report = world["model"].load_report
    assert report["model.vit_model_path"] == []
    assert report["model.q_former_model"] == [
        "Qformer.bert.embeddings.position_ids", "t5_proj.bias", "t5_proj.weight",
    ]  # fmt: skip
    assert report["model.ckpt"] == []
    assert world["model"].prompt_list == [
        "###Human: <Img><ImageHere></Img> What is this? ###Assistant: "
    ]


def test_encode_img_matches_the_formulas(world):
    model, w, images = world["model"], world["w"], world["images"]
    expected_vit = ref_vit(w["vit"], images)
    expected_ln = F.layer_norm(
        expected_vit, (VIT_DIM,), w["blip2"]["ln_vision.weight"], w["blip2"]["ln_vision.bias"],
        eps=1e-5,
    )  # fmt: skip
    expected_q = ref_qformer(w["blip2"], expected_ln)
    expected = expected_q @ w["proj"]["llama_proj.weight"].T + w["proj"]["llama_proj.bias"]
    with torch.no_grad():
        vit_out = model.visual_encoder(images)
        inputs_llama, atts = model.encode_img(images)
    assert vit_out.shape == (3, (IMG // PATCH) ** 2 + 1, VIT_DIM)
    assert (vit_out - expected_vit).abs().max() < ATOL
    assert inputs_llama.shape == (3, N_QUERY, LLM_DIM)
    assert (inputs_llama - expected).abs().max() < ATOL
    assert torch.equal(atts, torch.ones(3, N_QUERY, dtype=torch.long))


def test_forward_loss_and_gradient_match_the_formulas(world):
    model, w, images = world["model"], world["w"], world["images"]
    texts = ["a red square", "two blue circles on a green background, drawn small", "x"]
    tok = model.llama_tokenizer
    prompt = model.prompt_list[0]
    before, after = (tok.encode(s) for s in prompt.split("<ImageHere>"))
    text_ids = [tok.encode(t + "###")[:12] for t in texts]
    width = max(map(len, text_ids))
    emb = w["llm"]["model.embed_tokens.weight"]

    proj_w = w["proj"]["llama_proj.weight"].clone().requires_grad_(True)
    proj_b = w["proj"]["llama_proj.bias"].clone().requires_grad_(True)
    with torch.no_grad():
        ln = F.layer_norm(
            ref_vit(w["vit"], images), (VIT_DIM,), w["blip2"]["ln_vision.weight"],
            w["blip2"]["ln_vision.bias"], eps=1e-5,
        )  # fmt: skip
        q_out = ref_qformer(w["blip2"], ln)
    img = q_out @ proj_w.T + proj_b
    rows, masks, labels = [], [], []
    n_prefix = 1 + len(before) + N_QUERY + len(after)
    for i, ids in enumerate(text_ids):
        padded = ids + [2] * (width - len(ids))  # pad = eos = 2, right padding
        rows.append(torch.cat([emb[[1] + before], img[i], emb[after], emb[padded]]))
        masks.append([1] * (n_prefix + len(ids)) + [0] * (width - len(ids)))
        labels.append([-100] * n_prefix + [t if t != 2 else -100 for t in padded])
    embeds, mask, labels = torch.stack(rows), torch.tensor(masks), torch.tensor(labels)
    logits = ref_llama_logits(w["llm"], embeds, mask)
    expected_loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    expected_loss.backward()

    inputs = model.prepare_llm_inputs({"image": images, "text_input": texts})
    assert torch.equal(inputs["labels"], labels)
    assert torch.equal(inputs["attention_mask"], mask)
    assert (inputs["inputs_embeds"] - embeds).abs().max() < ATOL
    model.zero_grad(set_to_none=True)
    loss = model({"image": images, "text_input": texts})["loss"]
    loss.backward()
    assert abs(loss.item() - expected_loss.item()) < ATOL
    assert (model.llama_proj.weight.grad - proj_w.grad).abs().max() < ATOL
    assert (model.llama_proj.bias.grad - proj_b.grad).abs().max() < ATOL
    model.zero_grad(set_to_none=True)

"""Random MiniGPT-4 weights of the real sizes, written in the real file formats.

- ``eva_vit_g.pth``: the LAVIS EVA ViT-g state dict, fp16 (the real file is 1.97 GB);
- ``blip2_pretrained_flant5xxl.pth``: ``{"model": ...}`` with the LAVIS Q-Former names, fp32;
- ``vicuna/``: a Hugging Face LLaMA folder of fp16 safetensors shards (2 GB each, as Hugging
  Face writes them) with ``config.json`` and a SentencePiece ``tokenizer.model`` of the LLM's
  vocabulary size (the tiny world's tokenizer, padded with placeholder pieces);
- ``pretrained_minigpt4.pth``: the released checkpoint layout, ``{"model": {llama_proj.*}}``.

MiniGPT-v2 (``variant="minigptv2"``) adds, beside the files above:

- ``llama2-chat/``: a LLaMA-2-7B-Chat-shaped folder: the same tensor shapes as the Vicuna one,
  so its shards are hard links to Vicuna's (no second 13 GB), with LLaMA-2's ``config.json``;
- ``minigptv2_checkpoint.pth``: the released layout, ``{"model": {...}}`` with ``llama_proj``
  (4 x ViT width -> hidden), and per layer the LoRA weights of ``q_proj``/``v_proj`` in peft
  0.2.0's names and the ``rotary_emb.inv_freq`` buffer the original's runner saves, in fp32;
- the ViT file is v1's ``eva_vit_g.pth`` (the released v2 reads the 224-px file at 448 px).

Everything is written through the layout writers of :mod:`minigpt4.models.loading`, one file
(one LLM shard) at a time: the whole model is never in memory. Values are random (normal, std
0.02; norm weights 1), which is all that speed and memory depend on.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from minigpt4.common.atomic_write import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_WORLD_TOKENIZER = os.path.join(REPO, "tiny_world/checkpoint/llama/tokenizer.model")
MARKER = "bench_weights.json"
V2_MARKER = "bench_weights_v2.json"
VARIANTS = ("minigpt4", "minigptv2")
# LLaMA-2's config.json values where they differ from Vicuna v0's (shapes are the same).
LLAMA2_CHAT_SETTINGS = {"max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
INIT_STD = 0.02


@dataclass(frozen=True)
class Size:
    """Shapes of one benchmark size: the vision side (model keys) and the LLM (config.json)."""

    image_size: int = 224
    num_query_token: int = 32
    vit_config: dict = field(default_factory=dict)  # empty: EVA ViT-g
    qformer_config: dict = field(default_factory=dict)  # empty: bert-base
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    vocab_size: int = 32000

    def model_options(self) -> list[str]:
        """``--options`` that size the vision side like this."""
        opts = [f"model.image_size={self.image_size}"]
        opts.append(f"model.num_query_token={self.num_query_token}")
        opts += [f"model.vit_config.{k}={v}" for k, v in self.vit_config.items()]
        opts += [f"model.qformer_config.{k}={v}" for k, v in self.qformer_config.items()]
        return opts + [f"datasets.cc_sbu_align.vis_processor.train.image_size={self.image_size}"]

    @property
    def v2_image_size(self) -> int:
        """MiniGPT-v2 runs the ViT file at twice its resolution (the released 224-px
        ``eva_vit_g.pth`` at 448 px), its ``pos_embed`` interpolated at load."""
        return 2 * self.image_size

    def v2_model_options(self) -> list[str]:
        """``--options`` that size MiniGPT-v2's vision side like this (no Q-Former)."""
        opts = [f"model.image_size={self.v2_image_size}"]
        vit = {**self.vit_config, "img_size": self.v2_image_size} if self.vit_config else {}
        opts += [f"model.vit_config.{k}={v}" for k, v in vit.items()]
        return opts + [f"datasets.cc_sbu_align.vis_processor.train.image_size={self.v2_image_size}"]

    def llm_matmul_shapes(self) -> tuple[tuple[int, int], ...]:
        """``(K, N)`` of the LLM's attention and MLP projections: the roofline's shapes."""
        return (self.hidden_size, self.hidden_size), (self.hidden_size, self.intermediate_size)

    def llm_config(self) -> dict[str, Any]:
        """``config.json`` of the LLM (Vicuna v0 / LLaMA-1 settings)."""
        from transformers import LlamaConfig

        config = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            tie_word_embeddings=False,
        )
        config.architectures = ["LlamaForCausalLM"]
        return config.to_dict()


SIZES = {
    "7b": Size(),
    "13b": Size(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40),
    # The tiny world's vision sizes and an LLM whose layers all fit bitsandbytes' packed kernel.
    "tiny": Size(image_size=112, num_query_token=32,
                 vit_config={"img_size": 112, "embed_dim": 64, "depth": 3, "num_heads": 4},
                 qformer_config={"hidden_size": 64, "num_hidden_layers": 4,
                                 "num_attention_heads": 4, "intermediate_size": 256},
                 hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                 num_attention_heads=4, vocab_size=922),
}  # fmt: skip


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Normal(0, 0.02) values; LayerNorm / RMSNorm weights are 1, their biases 0."""
    if len(shape) == 1 and ("norm" in name.lower() or name.startswith("ln_vision")):
        return (torch.ones if name.endswith("weight") else torch.zeros)(shape, dtype=dtype)
    return (torch.randn(shape) * INIT_STD).to(dtype)


def _fill_random(module: nn.Module) -> None:
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                tensor.copy_(random_tensor(name, tuple(tensor.shape), tensor.dtype))


def _vision_model(size: Size):
    """The vision side of this size, built empty: ViT in fp16, Q-Former fp32, as the files."""
    from minigpt4.models.mini_gpt4 import MiniGPT4
    from minigpt4.models.model_config import MiniGPT4Config
    from minigpt4.models.precision import materialize

    config = MiniGPT4Config.from_cfg(
        {"llama_model": "(benchmark)", "image_size": size.image_size,
         "num_query_token": size.num_query_token, "vit_config": size.vit_config,
         "qformer_config": size.qformer_config, "device": "cpu", "cpu_dtype": "fp32"}
    )  # fmt: skip
    with torch.device("meta"):
        model = MiniGPT4(config, size.hidden_size)
    vit = {id(m) for m in model.visual_encoder.modules()}
    materialize(model, lambda owner: torch.float16 if id(owner) in vit else torch.float32)
    return model


def write_vision(size: Size, folder: str) -> None:
    """``eva_vit_g.pth``, ``blip2_pretrained_flant5xxl.pth`` and ``pretrained_minigpt4.pth``."""
    from minigpt4.models.weights import blip2_state, eva_vit_state, minigpt4_state, save_weights

    model = _vision_model(size)
    _fill_random(model)
    save_weights(eva_vit_state(model.visual_encoder, clone=False), paths(folder)["vit"])
    save_weights(blip2_state(model, clone=False), paths(folder)["blip2"])
    save_weights(minigpt4_state(model.llama_proj.state_dict(prefix="llama_proj.")),
                 paths(folder)["ckpt"])  # fmt: skip


def padded_tokenizer(vocab_size: int, out_path: str) -> str:
    """The tiny world's SentencePiece model with placeholder pieces up to ``vocab_size``."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(TINY_WORLD_TOKENIZER, "rb") as f:
        proto.ParseFromString(f.read())
    if vocab_size < len(proto.pieces):
        raise ValueError(f"vocab_size {vocab_size} < the tokenizer's {len(proto.pieces)} pieces")
    lowest = min(p.score for p in proto.pieces)
    for i in range(vocab_size - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece, piece.score = f"\u2581placeholder{i}", lowest - 1 - i
    with open(out_path, "wb") as f:
        f.write(proto.SerializeToString())
    return out_path


def write_llm(size: Size, folder: str) -> None:
    """The LLM folder, shard by shard (fp16, as Vicuna's Hugging Face weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from minigpt4.models.weights import write_llm_folder

    llm_config = size.llm_config()
    with torch.device("meta"):
        meta = LlamaForCausalLM(LlamaConfig(**llm_config))
    specs = {k: (tuple(v.shape), torch.float16) for k, v in meta.state_dict().items()}
    tokenizer = padded_tokenizer(size.vocab_size, os.path.join(folder, "tokenizer.model.tmp"))
    write_llm_folder(paths(folder)["llm"], llm_config, specs, random_tensor, tokenizer)
    os.remove(tokenizer)


def v2_checkpoint_state(size: Size, lora_r: int) -> dict[str, torch.Tensor]:
    """The released ``minigptv2_checkpoint.pth``'s ``model`` entry at this size: what the
    original's runner saves (trainable weights and buffers), in peft 0.2.0's names."""
    from minigpt4.models.eva_vit import EvaVitConfig
    from minigpt4.models.lora import LORA_TARGETS, WRAPPED

    vit_width = EvaVitConfig.from_dict(size.vit_config).embed_dim
    hidden, fp32 = size.hidden_size, torch.float32
    state = {"llama_proj.weight": random_tensor("llama_proj.weight", (hidden, 4 * vit_width), fp32),
             "llama_proj.bias": random_tensor("llama_proj.bias", (hidden,), fp32)}  # fmt: skip
    head_dim = hidden // size.num_attention_heads
    rope_base = size.llm_config()["rope_parameters"]["rope_theta"]
    inv_freq = 1.0 / rope_base ** (torch.arange(0, head_dim, 2, dtype=fp32) / head_dim)
    for i in range(size.num_hidden_layers):
        attn = f"{WRAPPED}model.layers.{i}.self_attn."
        for target in LORA_TARGETS:
            # lora_B is nonzero, as after training (peft starts it at zero)
            for part, shape in (("lora_A", (lora_r, hidden)), ("lora_B", (hidden, lora_r))):
                name = f"{attn}{target}.{part}.weight"
                state[name] = random_tensor(name, shape, fp32)
        state[f"{attn}rotary_emb.inv_freq"] = inv_freq.clone()
    return state


def write_llama2_folder(size: Size, folder: str) -> None:
    """``llama2-chat/``: Vicuna's files hard-linked (copied where the file system has no hard
    links), and LLaMA-2's ``config.json``."""
    vicuna, llama2 = paths(folder)["llm"], paths(folder, "minigptv2")["llm"]
    os.makedirs(llama2, exist_ok=True)
    for name in sorted(set(os.listdir(vicuna)) - {"config.json"}):
        src, dst = os.path.join(vicuna, name), os.path.join(llama2, name)
        if os.path.exists(dst):
            os.remove(dst)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    config = {**size.llm_config(), **LLAMA2_CHAT_SETTINGS}
    atomic_write_text(json.dumps(config, indent=2), os.path.join(llama2, "config.json"))


def write_v2(size: Size, folder: str) -> None:
    """MiniGPT-v2's own files beside v1's (whose ViT file it shares)."""
    from minigpt4.models.minigpt_v2 import MiniGPTv2
    from minigpt4.models.weights import save_weights

    write_llama2_folder(size, folder)
    lora_r = MiniGPTv2.CONFIG_DEFAULTS["lora_r"]  # the released checkpoint's rank
    save_weights({"model": v2_checkpoint_state(size, lora_r)}, paths(folder, "minigptv2")["ckpt"])


def paths(folder: str, variant: str = "minigpt4") -> dict[str, str]:
    """The files a variant loads: ``vit``, ``llm``, ``ckpt`` (and v1's ``blip2``)."""
    if variant == "minigptv2":
        return {
            "vit": os.path.join(folder, "eva_vit_g.pth"),
            "llm": os.path.join(folder, "llama2-chat"),
            "ckpt": os.path.join(folder, "minigptv2_checkpoint.pth"),
        }
    return {
        "vit": os.path.join(folder, "eva_vit_g.pth"),
        "blip2": os.path.join(folder, "blip2_pretrained_flant5xxl.pth"),
        "llm": os.path.join(folder, "vicuna"),
        "ckpt": os.path.join(folder, "pretrained_minigpt4.pth"),
    }


def _marker_matches(path: str, wanted: dict) -> bool:
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        return json.load(f) == wanted


def ensure_weights(
    size_name: str, folder: str, log=print, variant: str = "minigpt4"
) -> dict[str, str]:
    """Write the weights of ``size_name`` (and ``variant``) into ``folder`` unless they are
    there already (a marker file per variant records what a finished write produced)."""
    size = SIZES[size_name]
    wanted = {"size": size_name, **asdict(size)}
    marker, v2_marker = os.path.join(folder, MARKER), os.path.join(folder, V2_MARKER)
    if _marker_matches(marker, wanted):
        log(f"reusing the {size_name} weights in {folder}")
    else:
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(v2_marker):
            os.remove(v2_marker)  # v2's links and ViT file are v1's: rewritten below
        log(f"writing random {size_name} weights to {folder} ...")
        write_vision(size, folder)
        write_llm(size, folder)
        atomic_write_text(json.dumps(wanted, indent=2), marker)
    if variant == "minigptv2":
        if _marker_matches(v2_marker, wanted):
            log(f"reusing the {size_name} MiniGPT-v2 weights in {folder}")
        else:
            log(f"writing random {size_name} MiniGPT-v2 weights to {folder} ...")
            write_v2(size, folder)
            atomic_write_text(json.dumps(wanted, indent=2), v2_marker)
    return paths(folder, variant)

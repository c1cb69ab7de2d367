"""Tiny random LLM folders of several Hugging Face families, built offline, in the real layout.

Each folder is what a user downloads for the real model, at toy size: ``config.json``,
``model.safetensors`` and ``generation_config.json`` (transformers' ``save_pretrained`` of a
random model made from the family's config class), ``tokenizer.json``, ``tokenizer_config.json``
(with the family's special tokens and a ``chat_template`` in its style) and
``special_tokens_map.json``. The tokenizer is a byte-level BPE trained with the ``tokenizers``
library on a few sentences. The MiniGPT-4 side is the tiny reference set's ViT and Q-Former
(``tests/model_fixtures.py``), so ``llama_proj`` maps 32 -> :data:`HIDDEN`.

The three shipped families (Llama-3, Qwen2.5, Mistral) are driven by their shipped YAML's model
keys; ``gpt_neox`` is named by no shipped config: its keys are given here, as a user adds a new
family by YAML alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tests.model_fixtures import REPO_ROOT, tiny_model_config

HIDDEN = 64  # the tiny LLMs' width (llama_proj's output)
SENTENCES = [
    "The image shows a red square on a grey background.",
    "A blue stripe and a green dot are in the picture.",
    "Describe this image in detail. What colour is it? Where is it?",
    "Give the following image: ImageContent. You will be able to see the image.",
    "You are a helpful assistant. Please answer my questions.",
    "<Img><ImageHere></Img> ###Human: ###Assistant: [INST] system user assistant",
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by "
    "Alibaba Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
    "[/INST]{% elif m['role'] == 'assistant' %} {{ m['content'] | trim }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)
NEOX_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """One LLM family at toy size: its transformers config class and sizes, its tokenizer's
    special tokens, and the MiniGPT-4 YAML that names it (a shipped eval config, or
    ``model_keys`` for a family no shipped config names). ``answer_end``: the token the chat
    must stop at."""

    name: str
    config_class: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    chat_template: str
    answer_end: str
    pad: str | None = None
    generation_eos: tuple[str, ...] = ()
    shipped: str | None = None  # eval_configs/minigpt4_<shipped>_eval.yaml
    model_keys: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)


FAMILIES = {
    "llama3": Family(
        "llama3",
        "LlamaConfig",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eot_id|>", "<|finetune_right_pad_id|>"),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        chat_template=LLAMA3_TEMPLATE,
        answer_end="<|eot_id|>",
        generation_eos=("<|end_of_text|>", "<|eot_id|>"),
        shipped="llama3",
    ),
    "qwen2_5": Family(
        "qwen2_5",
        "Qwen2Config",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        chat_template=QWEN_TEMPLATE,
        answer_end="<|im_end|>",
        generation_eos=("<|im_end|>", "<|endoftext|>"),
        shipped="qwen2_5",
    ),
    "mistral": Family(
        "mistral",
        "MistralConfig",
        ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
        bos="<s>",
        eos="</s>",
        chat_template=MISTRAL_TEMPLATE,
        answer_end="</s>",
        shipped="mistral",
    ),
    "gpt_neox": Family(
        "gpt_neox",
        "GPTNeoXConfig",
        ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"),
        bos="<|endoftext|>",
        eos="<|endoftext|>",
        chat_template=NEOX_TEMPLATE,
        answer_end="<|end|>",
        model_keys={
            "tokenizer": "auto",
            "chat_template": "tokenizer",
            "bos_token": "",  # the family adds no BOS
            "pad_token": "<|pad|>",
            "stop_words": ["<|end|>"],
            "end_sym": "<|end|>",
            "prompt_template": "<|user|>\n{}<|end|>\n<|assistant|>\n",
        },
        sizes={"rotary_pct": 0.5},
    ),
}  # fmt: skip

COMMON_SIZES = {
    "hidden_size": HIDDEN,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,  # the chat test edits lm_head rows alone
}
KV_HEADS = {"LlamaConfig": 2, "Qwen2Config": 2, "MistralConfig": 2}


def build_tokenizer(family: Family, folder: Path) -> Any:
    """A byte-level BPE with the family's special tokens and chat template, saved to
    ``folder``; returns the transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(family.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos, pad_token=family.pad
    )
    hf.save_pretrained(str(folder))
    # The released folders carry the template in tokenizer_config.json (transformers 5 would
    # write chat_template.jinja).
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = family.chat_template
    config_path.write_text(json.dumps(tokenizer_config, indent=2))
    hf.chat_template = family.chat_template
    special = {k: v for k, v in (("bos_token", family.bos), ("eos_token", family.eos),
                                 ("pad_token", family.pad)) if v}  # fmt: skip
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return hf


def build_family(name: str, folder: Path, seed: int = 0) -> Path:
    """The tiny ``name`` folder (see the module docstring) at ``folder``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    family = FAMILIES[name]
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(family, folder)
    ids = {t: tok.convert_tokens_to_ids(t) for t in family.specials}
    sizes = {**COMMON_SIZES, **family.sizes}
    if family.config_class in KV_HEADS:
        sizes["num_key_value_heads"] = KV_HEADS[family.config_class]
    config_cls = getattr(transformers, family.config_class)
    config = config_cls(
        vocab_size=len(tok),
        bos_token_id=ids.get(family.bos),
        eos_token_id=ids[family.eos],
        **sizes,
    )
    torch.manual_seed(seed)
    llm = AutoModelForCausalLM.from_config(config)
    eos = [ids[t] for t in family.generation_eos] or ids[family.eos]
    llm.generation_config = GenerationConfig(bos_token_id=ids.get(family.bos), eos_token_id=eos)
    llm.save_pretrained(str(folder))
    return folder


def family_model_section(name: str, folder: Path, **overrides: Any) -> dict[str, Any]:
    """The ``model`` section of the family's YAML (the shipped eval config's, or its own keys)
    over the tiny reference vision side (fp32 CPU, no checkpoint), with the LLM at ``folder``."""
    family = FAMILIES[name]
    section = OmegaConf.to_container(tiny_model_config(stage=2, with_ckpt=False))
    if family.shipped:
        shipped = OmegaConf.load(REPO_ROOT / f"eval_configs/minigpt4_{family.shipped}_eval.yaml")
        keys = OmegaConf.to_container(shipped.model, resolve=False)
        for key in ("llama_model", "ckpt", "low_resource", "prompt_path"):
            keys.pop(key)
    else:
        keys = dict(family.model_keys)
    section.update(keys)
    section.update(llama_model=str(folder), **overrides)
    return section

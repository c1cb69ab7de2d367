"""The ``model`` section of a config as one typed object, read once.

Every key a MiniGPT-4 config may carry is a field here, with its default (the original's code
defaults; a variant's own defaults are given by its class, see ``MiniGPT4.CONFIG_DEFAULTS``).
A YAML ``null`` means "the default". Keys that are not fields are reported with the nearest
field name and otherwise ignored, as the original ignored them.
"""

from __future__ import annotations

import difflib
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from minigpt4.common.config_error import ConfigError
from minigpt4.common.config_fields import BadValue, Rule, base_kind, parse_value, plain
from minigpt4.models.base_model import AUTOCAST_DTYPES
from minigpt4.models.cpu_choice import CPU_MATMUL_NAMES, CPU_QUANTIZED_KERNELS
from minigpt4.models.eva_vit import EvaVitConfig
from minigpt4.models.projection import ADAPTER_NAMES, NEIGHBOURS, make_adapter
from minigpt4.models.qformer import QFormerConfig
from minigpt4.models.trainable import frozen_contradiction

logger = logging.getLogger(__name__)

LAVIS_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
EVA_VIT_G_URL = LAVIS_URL + "eva_vit_g.pth"
BLIP2_FLANT5XXL_URL = LAVIS_URL + "blip2_pretrained_flant5xxl.pth"
LLM_QUANTIZATIONS = (None, "8bit", "4bit")
CPU_DTYPE_NAMES = ("auto", "bf16", "fp32")
VIT_PRECISIONS = ("fp16", "fp32")
# How the LLM folder's tokenizer is read: the original's exact SentencePiece LLaMA tokenizer, or
# transformers' AutoTokenizer (any other family); unset: SentencePiece when there is a
# tokenizer.model (LLaMA/Vicuna), AutoTokenizer otherwise.
TOKENIZER_KINDS = (None, "sentencepiece", "auto")
# model.chat_template value meaning "the tokenizer's own chat template".
TOKENIZER_CHAT_TEMPLATE = "tokenizer"


# Bounds beyond the type, for the keys where a wrong number builds a broken model.
FIELD_RULES = {
    "image_size": Rule(minimum=1),
    "drop_path_rate": Rule(minimum=0, below=1),
    "num_query_token": Rule(minimum=1),
    "group_size": Rule(minimum=1),
    "lora_r": Rule(minimum=0),
    "max_txt_len": Rule(minimum=1),
    "max_context_len": Rule(minimum=1),
}
_CHECKED_KINDS = (bool, int, float, str)


def typed_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` converted to their fields' types (``"true"`` -> True, ``"8"`` -> 8) and checked
    against :data:`FIELD_RULES`; every wrong one is reported at once, naming key and value
    (``model.freeze_vit = 'maybe'``: a bool given as a word no longer counts as true)."""
    hints = typing.get_type_hints(cls)
    out, problems = dict(values), []
    for key, value in values.items():
        kinds = [a for a in typing.get_args(hints[key]) if a is not type(None)]
        kind = base_kind(hints[key])
        if kind not in _CHECKED_KINDS or len(kinds) > 1:
            continue  # mappings, unions of kinds: checked by their own parsers
        try:
            out[key] = parse_value(value, hints[key], FIELD_RULES.get(key, Rule()))
        except BadValue as err:
            problems.append(f"model.{key} = {plain(value)!r}: {err}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def parse_device_8bit(value: Any) -> int | str:
    """``device_8bit`` as a GPU index or ``"cpu"``, from what callers set: the original's demo an
    index (``--gpu-id``), VLMEvalKit ``torch.cuda.current_device()``, others ``"cuda:1"``,
    ``"cuda"`` or a ``torch.device``."""
    text = str(value).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return 0
    index = text.removeprefix("cuda:")
    if index.isdigit() and not isinstance(value, bool):
        return int(index)
    raise ValueError(f"model.device_8bit must be a GPU index (0), 'cuda:N' or 'cpu'; got {value!r}")


@dataclass
class MiniGPT4Config:
    """A MiniGPT-4 model: where its weights are, its sizes, prompts and run-time choices."""

    arch: str = "mini_gpt4"
    model_type: str = "pretrain_vicuna"
    # vision encoder
    vit_model: str = "eva_clip_g"
    vit_model_path: str = EVA_VIT_G_URL
    image_size: int = 224
    drop_path_rate: float = 0
    use_grad_checkpoint: bool = False  # the ViT's
    vit_precision: str = "fp16"
    freeze_vit: bool = True
    vit_config: EvaVitConfig = field(default_factory=EvaVitConfig)
    # the image-to-token adapter (minigpt4.models.projection): "qformer", or "group" (group_size
    # neighbouring patch tokens per LLM token); unset: from the original's has_qformer key
    image_adapter: str | None = None
    group_size: int = NEIGHBOURS
    has_qformer: bool | None = None  # the original's key: True = qformer (default), False = group
    q_former_model: str = BLIP2_FLANT5XXL_URL
    freeze_qformer: bool = True
    num_query_token: int = 32
    qformer_config: QFormerConfig = field(default_factory=QFormerConfig)
    # LLM
    llama_model: str = ""
    use_grad_checkpoint_llm: bool = False  # the original HEAD's key: checkpoint the LLM's layers
    # LoRA on the LLM's q_proj/v_proj (MiniGPT-v2; minigpt4.models.lora): rank 0 means none
    lora_r: int = 0
    lora_alpha: int = 32
    merge_lora: bool = False  # fold LoRA into the LLM's weights after loading (inference)
    pad_token: str | None = None  # None: the tokenizer's, else the end-of-sequence token
    # the LLM's tokenizer and chat (docs/training.md, "Adding an LLM"); unset: LLaMA/Vicuna's
    tokenizer: str | None = None  # TOKENIZER_KINDS
    tokenizer_path: str = ""  # a folder holding the tokenizer; "": the llama_model folder
    bos_token: str | None = None  # None: the tokenizer's; "": no BOS (auto tokenizers)
    eos_token: str | None = None  # None: the tokenizer's (auto tokenizers)
    # a known template name, "tokenizer", None: by model_type; True/False is MiniGPT-v2's own
    # meaning of the key and sets template_instructions instead
    chat_template: str | bool | None = None
    # training instructions are formatted into prompt_template (the original's chat_template: True)
    template_instructions: bool = False
    stop_words: tuple[str, ...] = ()  # text that also ends an answer
    stop_token_ids: tuple[int, ...] = ()  # token ids that also end an answer
    low_resource: bool = False
    # the GPU a quantized LLM is placed on: an index, "cuda:N" or "cpu" (as callers pass it)
    device_8bit: int | str = 0
    llm_quantization: str | None = None
    autocast_dtype: str = "fp16"
    # weights and compute on CPU: bf16 (fits a 7B model in 16 GB), fp32 (exact numerics), or
    # auto: bf16 weights, large products in fp32 where bf16 is emulated (cpu_choice)
    cpu_dtype: str = "auto"
    cpu_matmul: str = "auto"  # CPU_MATMUL_NAMES: overrides what auto chooses for the products
    cpu_quantized: str = "auto"  # CPU_QUANTIZED_KERNELS: a quantized LLM's kernels on CPU
    attn_implementation: str | None = None
    # what trains besides the vision parts freeze_vit / freeze_qformer leave unfrozen:
    # module-name prefixes (see minigpt4.models.trainable); the original trains llama_proj
    trainable: tuple[str, ...] = ("llama_proj",)
    # prompts and training text
    prompt: str = ""  # in the original YAML, never read
    prompt_path: str = ""
    prompt_template: str = ""
    max_txt_len: int = 32
    max_context_len: int | None = None
    end_sym: str = "\n"
    # MiniGPT-4 checkpoint (llama_proj)
    ckpt: str = ""
    # where the model runs ("cpu"/"cuda"; None: CUDA when available), downloads opt-in
    device: str | None = None
    allow_download: bool | None = None

    def __post_init__(self) -> None:
        checks = [
            ("vit_model", self.vit_model == "eva_clip_g", "must be eva_clip_g"),
            ("vit_precision", self.vit_precision in VIT_PRECISIONS, "must be 'fp16' or 'fp32'"),
            (
                "llm_quantization",
                self.llm_quantization in LLM_QUANTIZATIONS,
                "must be null, '8bit' or '4bit'",
            ),
            (
                "autocast_dtype",
                self.autocast_dtype in AUTOCAST_DTYPES,
                "must be 'fp16' or 'bf16'",
            ),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise ValueError(f"model.{key} {rule}; got {getattr(self, key)!r}")
        self._check_cpu_keys()
        self._resolve_adapter()
        self._check_llm_keys()
        self._check_trainable()
        self.device_8bit = parse_device_8bit(self.device_8bit)
        if self.device_8bit == "cpu":
            if str(self.device or "cpu").startswith("cuda"):
                raise ValueError(
                    f"model.device {self.device!r} and model.device_8bit 'cpu' contradict each "
                    "other: set device_8bit to the GPU index, or device to 'cpu'"
                )
            self.device = "cpu"  # the caller's way of saying where the model runs
        if not self.llama_model:
            raise ValueError("model.llama_model is not set: point it at your LLM folder")
        if self.merge_lora and not self.lora_r:
            raise ValueError(
                "model.merge_lora is set but the model has no LoRA (model.lora_r 0): set "
                "model.lora_r or remove model.merge_lora"
            )

    def _check_cpu_keys(self) -> None:
        for key, allowed in (
            ("cpu_dtype", CPU_DTYPE_NAMES),
            ("cpu_matmul", CPU_MATMUL_NAMES),
            ("cpu_quantized", CPU_QUANTIZED_KERNELS),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"model.{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}"
                )
        if self.cpu_dtype == "fp32" and self.cpu_matmul == "bf16":
            raise ConfigError(
                "model.cpu_dtype=fp32 and model.cpu_matmul=bf16 contradict each other: fp32 "
                "weights compute in fp32; set model.cpu_dtype: bf16 (or auto), or remove "
                "model.cpu_matmul"
            )

    def _resolve_adapter(self) -> None:
        """``image_adapter`` from the original's ``has_qformer`` when unset (both must agree)."""
        implied = None if self.has_qformer is None else ADAPTER_NAMES[0 if self.has_qformer else 1]
        if self.image_adapter is None:
            self.image_adapter = implied or "qformer"
        if self.image_adapter not in ADAPTER_NAMES:
            raise ValueError(
                f"model.image_adapter must be one of {list(ADAPTER_NAMES)}; got "
                f"{self.image_adapter!r}"
            )
        if implied is not None and implied != self.image_adapter:
            raise ValueError(
                f"model.has_qformer {self.has_qformer} and model.image_adapter "
                f"{self.image_adapter!r} contradict each other; remove one of them"
            )
        self.has_qformer = self.image_adapter == "qformer"

    @property
    def adapter(self):
        """The image-to-token adapter (:mod:`minigpt4.models.projection`)."""
        return make_adapter(self.image_adapter, self.group_size)

    def _check_llm_keys(self) -> None:
        """Validate (and make tuples of) the tokenizer and chat keys."""
        from minigpt4.conversation.templates import CHAT_TEMPLATES

        if isinstance(self.chat_template, bool):
            self.template_instructions, self.chat_template = self.chat_template, None
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(
                f"model.tokenizer must be null, 'sentencepiece' or 'auto'; got {self.tokenizer!r}"
            )
        known = sorted(CHAT_TEMPLATES) + [TOKENIZER_CHAT_TEMPLATE]
        if self.chat_template is not None and self.chat_template not in known:
            raise ValueError(
                f"model.chat_template must be null (chosen by model_type), one of {known}; got "
                f"{self.chat_template!r}"
            )
        words = self.stop_words
        if isinstance(words, str) or not all(isinstance(w, str) and w for w in words):
            raise ValueError(f"model.stop_words must be a list of non-empty strings; got {words!r}")
        ids = self.stop_token_ids
        if isinstance(ids, (str, int)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
        ):
            raise ValueError(f"model.stop_token_ids must be a list of token ids; got {ids!r}")
        self.stop_words = tuple(words)
        self.stop_token_ids = tuple(ids)

    def _check_trainable(self) -> None:
        names = [self.trainable] if isinstance(self.trainable, str) else self.trainable
        if not isinstance(names, (list, tuple)) or not all(
            isinstance(n, str) and n.strip() for n in names
        ):
            raise ValueError(
                "model.trainable must be a list of module-name prefixes such as [llama_proj]; "
                f"got {self.trainable!r}"
            )
        self.trainable = tuple(n.strip() for n in names)
        clash = frozen_contradiction(self.trainable, self.freeze_vit, self.freeze_qformer)
        if clash:
            raise ValueError(
                f"model.trainable names {clash[0]!r} and model.{clash[1]} is True: they "
                f"contradict each other; set model.{clash[1]}: False or remove the name"
            )

    @property
    def quantization(self) -> str | None:
        """The LLM's quantization: ``low_resource`` means 8-bit unless one is given."""
        if self.low_resource and self.llm_quantization is None:
            return "8bit"
        return self.llm_quantization

    @classmethod
    def from_cfg(cls, cfg: Mapping | DictConfig, **defaults: Any) -> MiniGPT4Config:
        """From a config's ``model`` section; ``defaults`` are the variant's own defaults."""
        values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        values = dict(values)
        known = {f.name for f in fields(cls)}
        for key in sorted(set(values) - known):
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean model.{close[0]}?)" if close else ""
            logger.warning("model.%s is not a MiniGPT-4 model key and is ignored%s", key, hint)
        given = {k: v for k, v in values.items() if k in known and v is not None}
        merged = {**defaults, **typed_values(cls, given)}
        merged["vit_config"] = EvaVitConfig.from_dict(
            merged.get("vit_config"), img_size=merged.get("image_size", cls.image_size)
        )
        merged["qformer_config"] = QFormerConfig.from_dict(merged.get("qformer_config"))
        return cls(**merged)

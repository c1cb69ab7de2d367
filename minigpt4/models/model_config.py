"""The ``model`` section of a config as one typed object, read once.

Every key a MiniGPT-4 config may carry is a field here, with its default (the original's code
defaults; a variant's own defaults are given by its class, see ``MiniGPT4.CONFIG_DEFAULTS``).
A YAML ``null`` means "the default". Keys that are not fields are reported with the nearest
field name and otherwise ignored, as the original ignored them.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from minigpt4.models.base_model import AUTOCAST_DTYPES
from minigpt4.models.eva_vit import EvaVitConfig
from minigpt4.models.qformer import QFormerConfig
from minigpt4.models.trainable import frozen_contradiction

logger = logging.getLogger(__name__)

LAVIS_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
EVA_VIT_G_URL = LAVIS_URL + "eva_vit_g.pth"
BLIP2_FLANT5XXL_URL = LAVIS_URL + "blip2_pretrained_flant5xxl.pth"
LLM_QUANTIZATIONS = (None, "8bit", "4bit")
CPU_DTYPE_NAMES = ("bf16", "fp32")
VIT_PRECISIONS = ("fp16", "fp32")


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
    # Q-Former (has_qformer False: 4 neighbouring patch tokens per LLM token instead)
    has_qformer: bool = True
    q_former_model: str = BLIP2_FLANT5XXL_URL
    freeze_qformer: bool = True
    num_query_token: int = 32
    qformer_config: QFormerConfig = field(default_factory=QFormerConfig)
    # LLM
    llama_model: str = ""
    use_grad_checkpoint_llm: bool = False  # the original HEAD's key: checkpoint the LLM's layers
    pad_token: str | None = None  # None: the end-of-sequence token
    low_resource: bool = False
    # the GPU a quantized LLM is placed on: an index, "cuda:N" or "cpu" (as callers pass it)
    device_8bit: int | str = 0
    llm_quantization: str | None = None
    autocast_dtype: str = "fp16"
    # weights and compute on CPU: bf16 (fits a 7B model in 16 GB) or fp32 (exact numerics)
    cpu_dtype: str = "bf16"
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
            ("cpu_dtype", self.cpu_dtype in CPU_DTYPE_NAMES, "must be 'bf16' or 'fp32'"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise ValueError(f"model.{key} {rule}; got {getattr(self, key)!r}")
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
            raise ValueError("model.llama_model is not set: point it at your Vicuna/LLaMA folder")

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
        merged = {**defaults, **given}
        merged["vit_config"] = EvaVitConfig.from_dict(
            merged.get("vit_config"), img_size=merged.get("image_size", cls.image_size)
        )
        merged["qformer_config"] = QFormerConfig.from_dict(merged.get("qformer_config"))
        return cls(**merged)

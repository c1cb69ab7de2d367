"""MiniGPT-4: frozen EVA ViT-g + Q-Former, one trainable Linear, frozen LLaMA-family LLM.

Same module layout, config keys, log lines and ``forward`` semantics as the original
(Vision-CAIR/MiniGPT-4 v1); the ViT comes from timm, the Q-Former and the LLM from transformers.
"""

from __future__ import annotations

import difflib
import logging
import os
import random
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.common.registry import registry
from minigpt4.common.utils import resolve_path
from minigpt4.models.base_model import AUTOCAST_DTYPES, BaseModel, LayerNorm, freeze
from minigpt4.models.checkpoint import (
    BLIP2_FLANT5XXL_URL,
    EVA_VIT_G_URL,
    CheckpointError,
    WeightSource,
    describe_keys,
    downloads_allowed,
    fetch,
    load_state_dict_file,
    preflight,
    weight_source,
)
from minigpt4.models.eva_vit import (
    EvaVitConfig,
    convert_weights_to_fp16,
    create_eva_vit_g,
    load_eva_vit_state_dict,
)
from minigpt4.models.qformer import (
    LAVIS_POSITION_IDS,
    QFormerConfig,
    build_qformer,
    lavis_to_ours,
)

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<ImageHere>"
IGNORE_INDEX = -100
LLM_QUANTIZATIONS = (None, "8bit", "4bit")
# Known LLaMA/Vicuna widths, to say "13B" rather than "5120" when a checkpoint does not fit.
LLM_SIZE_BY_HIDDEN = {2560: "3B", 4096: "7B", 5120: "13B", 6656: "33B", 8192: "65B/70B"}
# Every key ``from_config`` reads, plus the ones the configs carry for other readers
# (``arch``/``model_type`` for the registry, ``prompt`` which the original never reads).
MODEL_CONFIG_KEYS = frozenset(
    """arch model_type prompt vit_model q_former_model image_size num_query_token llama_model
    drop_path_rate use_grad_checkpoint vit_precision freeze_vit freeze_qformer low_resource
    device_8bit prompt_path prompt_template max_txt_len end_sym ckpt vit_model_path vit_config
    qformer_config llm_quantization autocast_dtype attn_implementation device
    allow_download""".split()
)
# Keys of the blip2 file that MiniGPT-4 does not use (the T5 projection of BLIP-2 FlanT5).
BLIP2_UNUSED_PREFIXES = ("t5_proj.",)


def _llm_size(hidden: int) -> str:
    return LLM_SIZE_BY_HIDDEN.get(hidden, f"hidden-size-{hidden}")


def _cfg_get(cfg: Any, key: str, default: Any) -> Any:
    value = cfg.get(key, default)
    return default if value is None and default is not None else value


def _to_container(value: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


# bitsandbytes' AVX512-BF16 CPU kernel repacks 4-bit weights in blocks of 32 output rows, and
# input columns in whole quantization blocks; it asserts on layers that do not fit (tiny LLMs,
# e.g. an MLP of width 172). Full-size LLaMA layers always fit.
_BNB_CPU_PACK_ROWS = 32


def _keep_unpacked_4bit_layers(model: nn.Module) -> None:
    """Send 4-bit layers the packed CPU kernel cannot take through bitsandbytes' generic path."""
    import bitsandbytes as bnb

    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        blocksize = module.weight.quant_state.blocksize
        if module.out_features % _BNB_CPU_PACK_ROWS or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False


@registry.register_model("mini_gpt4")
class MiniGPT4(BaseModel):
    """BLIP-2's frozen vision side feeding a frozen LLM through one trained projection."""

    PRETRAINED_MODEL_CONFIG_DICT = {"pretrain_vicuna": "configs/models/minigpt4.yaml"}

    def __init__(
        self,
        vit_model: str = "eva_clip_g",
        q_former_model: str | None = BLIP2_FLANT5XXL_URL,
        img_size: int = 224,
        drop_path_rate: float = 0,
        use_grad_checkpoint: bool = False,
        vit_precision: str = "fp16",
        freeze_vit: bool = True,
        freeze_qformer: bool = True,
        num_query_token: int = 32,
        llama_model: str | nn.Module = "",
        prompt_path: str = "",
        prompt_template: str = "",
        max_txt_len: int = 32,
        end_sym: str = "\n",
        low_resource: bool = False,
        device_8bit: int | str = 0,
        *,
        vit_model_path: str | None = EVA_VIT_G_URL,
        vit_config: Mapping | None = None,
        qformer_config: Mapping | None = None,
        llm_quantization: str | None = None,
        autocast_dtype: str = "fp16",
        attn_implementation: str | None = None,
        device: str | None = None,
        allow_download: bool | None = None,
        llama_tokenizer: Any = None,
    ) -> None:
        """Build the model and load the ViT, Q-Former and LLM weights.

        ``vit_model_path`` / ``q_former_model``: a local file or a URL (cached under
        ``$TORCH_HOME/hub/checkpoints``); ``None`` keeps random weights (layout tests, making tiny
        weight files). ``llama_model``: a Hugging Face folder, or an already built causal LM (then
        ``llama_tokenizer`` must be given). ``device``: where the model will run (default: CUDA when
        available); it decides the dtypes: fp32 on CPU, ``vit_precision`` and ``autocast_dtype``
        on CUDA.
        """
        super().__init__()
        if vit_model != "eva_clip_g":
            raise ValueError("vit model must be eva_clip_g for current version of MiniGPT-4")
        if llm_quantization not in LLM_QUANTIZATIONS:
            raise ValueError(
                f"model.llm_quantization must be null, '8bit' or '4bit'; got {llm_quantization!r}"
            )
        if autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(
                f"model.autocast_dtype must be 'fp16' or 'bf16'; got {autocast_dtype!r}"
            )
        if vit_precision not in ("fp16", "fp32"):
            raise ValueError(f"model.vit_precision must be 'fp16' or 'fp32'; got {vit_precision!r}")
        self.device_kind = torch.device(
            device or ("cuda" if torch.cuda.is_available() else "cpu")
        ).type
        self.autocast_dtype = AUTOCAST_DTYPES[autocast_dtype]
        self.low_resource = low_resource
        if low_resource and llm_quantization is None:
            llm_quantization = "8bit"  # the original's low_resource mode
        self.llm_quantization = llm_quantization
        allow = downloads_allowed(allow_download)

        sources = []
        if vit_model_path is not None:
            sources.append(weight_source("model.vit_model_path", vit_model_path))
        if q_former_model is not None:
            sources.append(weight_source("model.q_former_model", q_former_model))
        if isinstance(llama_model, str):
            sources.append(weight_source("model.llama_model", llama_model, is_llm_folder=True))
        if prompt_path:
            sources.append(
                WeightSource("model.prompt_path", prompt_path, resolve_path(prompt_path))
            )
        preflight(sources, allow)
        self.load_report: dict[str, list[str]] = {}

        logger.info("Loading VIT")
        self.vit_config = EvaVitConfig.from_dict(_to_container(vit_config), img_size=img_size)
        self.visual_encoder, self.ln_vision = self.init_vision_encoder(
            self.vit_config, drop_path_rate, use_grad_checkpoint
        )
        if vit_model_path is not None:
            path = fetch(weight_source("model.vit_model_path", vit_model_path), allow)
            state = load_state_dict_file(path, "model.vit_model_path")
            self.load_report["model.vit_model_path"] = load_eva_vit_state_dict(
                self.visual_encoder, state, f"{path} (model.vit_model_path)"
            )
            self._log_ignored("model.vit_model_path", path)
        if vit_precision == "fp16":
            if self.device_kind == "cuda":
                convert_weights_to_fp16(self.visual_encoder)
            else:
                logger.info("vit_precision fp16 applies on CUDA only; the ViT runs in fp32 on CPU")
        if freeze_vit:
            freeze(self.visual_encoder)
            freeze(self.ln_vision)
            logger.info("freeze vision encoder")
        logger.info("Loading VIT Done")

        logger.info("Loading Q-Former")
        self.qformer_config = QFormerConfig.from_dict(_to_container(qformer_config))
        self.Qformer, self.query_tokens = self.init_Qformer(
            num_query_token, self.vit_config.embed_dim, self.qformer_config
        )
        if q_former_model is not None:
            path = fetch(weight_source("model.q_former_model", q_former_model), allow)
            self.load_blip2_checkpoint(path)
        if freeze_qformer:
            freeze(self.Qformer)
            self.query_tokens.requires_grad = False
            logger.info("freeze Qformer")
        logger.info("Loading Q-Former Done")

        logger.info("Loading LLAMA")
        self.llama_model, self.llama_tokenizer = self.init_llm(
            llama_model, llama_tokenizer, device_8bit, attn_implementation
        )
        freeze(self.llama_model)
        logger.info("Loading LLAMA Done")

        self.llama_proj = nn.Linear(
            self.qformer_config.hidden_size, self.llama_model.config.hidden_size
        )
        self.max_txt_len = max_txt_len
        self.end_sym = end_sym
        self.prompt_list = self.load_prompts(prompt_path, prompt_template) if prompt_path else []

    # --- construction ------------------------------------------------------------------------

    @staticmethod
    def init_vision_encoder(
        config: EvaVitConfig, drop_path_rate: float, use_grad_checkpoint: bool
    ) -> tuple[nn.Module, LayerNorm]:
        """The EVA ViT and ``ln_vision`` (fp32 LayerNorm with the default eps 1e-5)."""
        visual_encoder = create_eva_vit_g(config, drop_path_rate, use_grad_checkpoint)
        return visual_encoder, LayerNorm(config.embed_dim)

    @staticmethod
    def init_Qformer(  # noqa: N802 - the original's name
        num_query_token: int, vision_width: int, config: QFormerConfig
    ) -> tuple[nn.Module, nn.Parameter]:
        """The query-only Q-Former and its learned query tokens (init N(0, 0.02) as BLIP-2)."""
        qformer = build_qformer(config, vision_width)
        query_tokens = nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
        query_tokens.data.normal_(mean=0.0, std=0.02)
        return qformer, query_tokens

    def init_llm(
        self,
        llama_model: str | nn.Module,
        llama_tokenizer: Any,
        device_8bit: int | str,
        attn_implementation: str | None,
    ) -> tuple[nn.Module, Any]:
        """Load the causal LM and its tokenizer (pad = eos, as the original).

        The tokenizer comes from ``AutoTokenizer`` (transformers 5: the fast tokenizer, built from
        ``tokenizer.model`` for old Vicuna folders). It gives the original slow tokenizer's ids for
        every prompt string MiniGPT-4 uses, but differs on strings that start with whitespace and
        on text right after a literal ``<s>``/``</s>``.
        """
        from transformers import AutoTokenizer

        if isinstance(llama_model, nn.Module):
            if llama_tokenizer is None:
                raise ValueError("llama_tokenizer must be given with an already built llama_model")
            model = llama_model
        else:
            model = self._load_llm(resolve_path(llama_model), device_8bit, attn_implementation)
        if llama_tokenizer is None or isinstance(llama_tokenizer, str):
            tokenizer_path = resolve_path(llama_tokenizer or llama_model)
            llama_tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        llama_tokenizer.pad_token = llama_tokenizer.eos_token
        return model, llama_tokenizer

    def _load_llm(
        self, path: str, device_8bit: int | str, attn_implementation: str | None
    ) -> nn.Module:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        on_cuda = self.device_kind == "cuda"
        dtype = self.autocast_dtype if on_cuda else torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if self.llm_quantization is not None:
            kwargs["device_map"] = {"": device_8bit if on_cuda else "cpu"}
            if self.llm_quantization == "8bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4"
                )
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
        missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
        if missing or mismatched:
            raise CheckpointError(
                f"{path} (model.llama_model): the weights do not fit the folder's config.json: "
                f"missing {describe_keys(missing)}, mismatched {describe_keys(mismatched)}"
            )
        if info["unexpected_keys"]:
            logger.warning(
                "Ignored %d key(s) of %s (model.llama_model): %s",
                len(info["unexpected_keys"]),
                path,
                describe_keys(sorted(info["unexpected_keys"])),
            )
        if self.llm_quantization == "4bit" and not on_cuda:
            _keep_unpacked_4bit_layers(model)
        return model

    @staticmethod
    def load_prompts(prompt_path: str, prompt_template: str) -> list[str]:
        """Lines of ``prompt_path`` containing ``<ImageHere>``, each formatted into the template."""
        path = resolve_path(prompt_path)
        with open(path, encoding="utf-8") as f:
            raw_prompts = f.read().splitlines()
        filtered = [p for p in raw_prompts if IMAGE_PLACEHOLDER in p]
        if not filtered:
            raise ValueError(
                f"{path} (model.prompt_path) has no line containing {IMAGE_PLACEHOLDER}"
            )
        prompt_list = [prompt_template.format(p) for p in filtered]
        logger.info("Load %d training prompts", len(prompt_list))
        logger.info("Prompt Example \n%s", random.choice(prompt_list))
        return prompt_list

    # --- weights -----------------------------------------------------------------------------

    def _log_ignored(self, config_key: str, path: str) -> None:
        ignored = self.load_report.get(config_key, [])
        if ignored:
            logger.info(
                "Ignored %d key(s) of %s (%s): %s",
                len(ignored),
                path,
                config_key,
                describe_keys(ignored),
            )

    def _copy_checked(
        self, state: Mapping[str, torch.Tensor], required: list[str], where: str
    ) -> None:
        own = self.state_dict()
        missing = [k for k in required if k not in state]
        mismatched = [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in state
            if k in own and tuple(state[k].shape) != tuple(own[k].shape)
        ]
        if missing or mismatched:
            raise CheckpointError(
                f"{where} does not fit the model built from the config: "
                + (f"missing {describe_keys(missing)}; " if missing else "")
                + (f"mismatched shapes {describe_keys(mismatched)}; " if mismatched else "")
                + "check model.num_query_token, model.vit_config and model.qformer_config."
            )
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)

    def load_blip2_checkpoint(self, path: str) -> list[str]:
        """Load ``query_tokens``, ``ln_vision`` and the Q-Former from a LAVIS BLIP-2 checkpoint.

        Every model key of those parts must be present with the right shape; all other keys
        (``t5_proj.*``, the ``position_ids`` buffer, ...) are ignored, returned and logged.
        """
        where = f"{path} (model.q_former_model)"
        state = lavis_to_ours(load_state_dict_file(path, "model.q_former_model"))
        required = [
            k
            for k in self.state_dict()
            if k == "query_tokens" or k.startswith(("ln_vision.", "Qformer."))
        ]
        used = {k: state[k] for k in required if k in state}
        self._copy_checked(used, required, where)
        ignored = sorted(set(state) - set(used))
        self.load_report["model.q_former_model"] = ignored
        unusual = [
            k
            for k in ignored
            if k != LAVIS_POSITION_IDS and not k.startswith(BLIP2_UNUSED_PREFIXES)
        ]
        if unusual:
            logger.warning("Unexpected key(s) in %s, ignored: %s", where, describe_keys(unusual))
        logger.info("load checkpoint from %s", path)
        self._log_ignored("model.q_former_model", path)
        return ignored

    def load_checkpoint(self, path: str) -> list[str]:
        """Load a MiniGPT-4 checkpoint (released ``pretrained_minigpt4*.pth`` or a runner one).

        ``llama_proj.weight`` and ``llama_proj.bias`` must be there and fit the LLM; any other key
        that names a tensor of this model is loaded too (shape-checked); the rest (buffers kept by
        runner checkpoints: rotary ``inv_freq``, ``position_ids``) is ignored and returned.
        """
        logger.info("Load BLIP2-LLM Checkpoint: %s", path)
        where = f"{path} (model.ckpt)"
        state = lavis_to_ours(load_state_dict_file(path, "model.ckpt"))
        proj = self.llama_proj.weight
        file_proj = state.get("llama_proj.weight")
        if (
            file_proj is not None
            and file_proj.ndim == 2
            and tuple(file_proj.shape) != tuple(proj.shape)
        ):
            file_out, file_in = file_proj.shape
            if file_in == proj.shape[1] and file_out != proj.shape[0]:
                ckpt_size, llm_size = _llm_size(file_out), _llm_size(proj.shape[0])
                raise CheckpointError(
                    f"{where} is a {ckpt_size} checkpoint (llama_proj outputs {file_out} "
                    f"features) but the LLM at model.llama_model is {llm_size} (hidden size "
                    f"{proj.shape[0]}): "
                    f"a {ckpt_size} checkpoint with a {llm_size} LLM cannot work. Use the "
                    f"MiniGPT-4 checkpoint made for a {llm_size} LLM, or point "
                    f"model.llama_model at the {ckpt_size} LLM."
                )
        own = self.state_dict()
        used = {k: v for k, v in state.items() if k in own}
        self._copy_checked(used, ["llama_proj.weight", "llama_proj.bias"], where)
        ignored = sorted(set(state) - set(used))
        self.load_report["model.ckpt"] = ignored
        self._log_ignored("model.ckpt", path)
        return ignored

    # --- compute -----------------------------------------------------------------------------

    def vit_to_cpu(self) -> None:
        """Low-resource mode: the ViT and ``ln_vision`` run on CPU in fp32 (as the original)."""
        self.ln_vision.to("cpu").float()
        self.visual_encoder.to("cpu").float()

    def _check_image(self, image: Any) -> None:
        size = self.vit_config.img_size
        expected = (3, size, size)
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1:] != expected:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(
                f"encode_img expects a batch of images shaped [B, 3, {size}, {size}] "
                f"(model.image_size {size}); got {got}. Use the blip2_image_eval / "
                f"blip2_image_train processor with image_size {size}."
            )

    def encode_img(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] -> (LLM input embeddings [B, num_query_token, H_llm], ones mask)."""
        self._check_image(image)
        device = image.device
        if self.low_resource:
            self.vit_to_cpu()
            image = image.to("cpu")
        with self.maybe_autocast():
            image_embeds = self.ln_vision(self.visual_encoder(image)).to(device)
            image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
            query_tokens = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            query_output = self.Qformer(
                query_embeds=query_tokens,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_atts,
                return_dict=True,
            )
            inputs_llama = self.llama_proj(query_output.last_hidden_state)
            atts_llama = torch.ones(inputs_llama.shape[:-1], dtype=torch.long, device=device)
        return inputs_llama, atts_llama

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """LLM input embeddings of ``token_ids``."""
        return self.llama_model.get_input_embeddings()(token_ids)

    def prompt_wrap(
        self, img_embeds: torch.Tensor, atts_img: torch.Tensor, prompt: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the image embeddings in place of ``<ImageHere>`` in ``prompt`` (no BOS added)."""
        if not prompt:
            return img_embeds, atts_img
        parts = prompt.split(IMAGE_PLACEHOLDER)
        if len(parts) != 2:
            raise ValueError(
                f"a prompt must contain {IMAGE_PLACEHOLDER} exactly once; got {prompt!r}"
            )
        batch_size = img_embeds.shape[0]
        p_before, p_after = parts
        device = img_embeds.device
        p_before_tokens = self.llama_tokenizer(
            p_before, return_tensors="pt", add_special_tokens=False
        ).to(device)
        p_after_tokens = self.llama_tokenizer(
            p_after, return_tensors="pt", add_special_tokens=False
        ).to(device)
        p_before_embeds = self.embed_tokens(p_before_tokens.input_ids).expand(batch_size, -1, -1)
        p_after_embeds = self.embed_tokens(p_after_tokens.input_ids).expand(batch_size, -1, -1)
        wrapped_img_embeds = torch.cat([p_before_embeds, img_embeds, p_after_embeds], dim=1)
        wrapped_atts_img = atts_img[:, :1].expand(-1, wrapped_img_embeds.shape[1])
        return wrapped_img_embeds, wrapped_atts_img

    def prepare_llm_inputs(
        self, samples: Mapping[str, Any], prompt: str | None = None
    ) -> dict[str, torch.Tensor]:
        """What ``forward`` feeds the LLM: ``inputs_embeds``, ``attention_mask`` and ``labels``.

        Layout per row: [BOS][prompt before][image][prompt after][text + end_sym][right padding];
        labels are -100 everywhere but on the text tokens. ``prompt`` defaults to one random
        choice from ``prompt_list`` for the whole batch (none in stage 1).
        """
        image = samples["image"]
        texts = samples["text_input"]
        if isinstance(texts, str) or len(texts) != image.shape[0]:
            raise ValueError(
                f"samples['text_input'] must be a list of {image.shape[0]} strings (one per image)"
            )
        img_embeds, atts_img = self.encode_img(image)
        if prompt is None and self.prompt_list:
            prompt = random.choice(self.prompt_list)
        if prompt:
            img_embeds, atts_img = self.prompt_wrap(img_embeds, atts_img, prompt)

        device = img_embeds.device
        tokenizer = self.llama_tokenizer
        tokenizer.padding_side = "right"
        text = [t + self.end_sym for t in texts]
        to_regress_tokens = tokenizer(
            text,
            return_tensors="pt",
            padding="longest",
            truncation=True,
            max_length=self.max_txt_len,
            add_special_tokens=False,
        ).to(device)
        input_ids = to_regress_tokens.input_ids
        # pad = eos, so an eos written in the text is masked too, exactly as in the original.
        targets = input_ids.masked_fill(input_ids == tokenizer.pad_token_id, IGNORE_INDEX)
        batch_size = input_ids.shape[0]
        empty_targets = torch.full(
            (batch_size, atts_img.shape[1] + 1), IGNORE_INDEX, dtype=torch.long, device=device
        )  # +1 for BOS
        targets = torch.cat([empty_targets, targets], dim=1)

        bos = torch.full(
            (batch_size, 1), tokenizer.bos_token_id, dtype=input_ids.dtype, device=device
        )
        bos_embeds = self.embed_tokens(bos)
        atts_bos = atts_img[:, :1]
        to_regress_embeds = self.embed_tokens(input_ids)
        inputs_embeds = torch.cat([bos_embeds, img_embeds, to_regress_embeds], dim=1)
        attention_mask = torch.cat([atts_bos, atts_img, to_regress_tokens.attention_mask], dim=1)
        return {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "labels": targets}

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"image": [B,3,H,W], "text_input": [B strings]}`` -> ``{"loss": mean token CE}``."""
        llm_inputs = self.prepare_llm_inputs(samples)
        with self.maybe_autocast():
            outputs = self.llama_model(
                inputs_embeds=llm_inputs["inputs_embeds"],
                attention_mask=llm_inputs["attention_mask"],
                return_dict=True,
            )
            loss = causal_lm_loss(outputs.logits, llm_inputs["labels"])
        return {"loss": loss}

    # --- config ------------------------------------------------------------------------------

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        """Absolute path of the default YAML of ``model_type`` (``pretrain_vicuna``)."""
        if model_type not in cls.PRETRAINED_MODEL_CONFIG_DICT:
            raise KeyError(
                f"unknown model_type '{model_type}' for arch mini_gpt4; known: "
                f"{sorted(cls.PRETRAINED_MODEL_CONFIG_DICT)}"
            )
        library_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return os.path.join(library_root, cls.PRETRAINED_MODEL_CONFIG_DICT[model_type])

    @classmethod
    def from_config(cls, cfg: Mapping) -> MiniGPT4:
        """Build from a config's ``model`` section (OmegaConf node or dict), then load ``ckpt``."""
        for key in sorted(set(cfg.keys()) - MODEL_CONFIG_KEYS):
            close = difflib.get_close_matches(key, sorted(MODEL_CONFIG_KEYS), n=1)
            hint = f" (did you mean model.{close[0]}?)" if close else ""
            logger.warning("model.%s is not a MiniGPT-4 model key and is ignored%s", key, hint)
        allow = downloads_allowed(cfg.get("allow_download"))
        ckpt = _cfg_get(cfg, "ckpt", "")
        vit_model_path = cfg.get("vit_model_path") or EVA_VIT_G_URL
        q_former_model = _cfg_get(cfg, "q_former_model", BLIP2_FLANT5XXL_URL)
        llama_model = _cfg_get(cfg, "llama_model", "")
        if not llama_model:
            raise ValueError("model.llama_model is not set: point it at your Vicuna/LLaMA folder")
        prompt_path = _cfg_get(cfg, "prompt_path", "")
        # Check every file before anything heavy is loaded, and report all the missing ones at once.
        sources = [
            weight_source("model.vit_model_path", vit_model_path),
            weight_source("model.q_former_model", q_former_model),
            weight_source("model.llama_model", llama_model, is_llm_folder=True),
        ]
        if ckpt:
            sources.append(weight_source("model.ckpt", ckpt))
        if prompt_path:
            sources.append(
                WeightSource("model.prompt_path", prompt_path, resolve_path(prompt_path))
            )
        preflight(sources, allow)

        model = cls(
            vit_model=_cfg_get(cfg, "vit_model", "eva_clip_g"),
            q_former_model=q_former_model,
            img_size=_cfg_get(cfg, "image_size", 224),
            drop_path_rate=_cfg_get(cfg, "drop_path_rate", 0),
            use_grad_checkpoint=_cfg_get(cfg, "use_grad_checkpoint", False),
            vit_precision=_cfg_get(cfg, "vit_precision", "fp16"),
            freeze_vit=_cfg_get(cfg, "freeze_vit", True),
            freeze_qformer=_cfg_get(cfg, "freeze_qformer", True),
            num_query_token=_cfg_get(cfg, "num_query_token", 32),
            llama_model=llama_model,
            prompt_path=prompt_path,
            prompt_template=_cfg_get(cfg, "prompt_template", ""),
            max_txt_len=_cfg_get(cfg, "max_txt_len", 32),
            end_sym=_cfg_get(cfg, "end_sym", "\n"),
            low_resource=_cfg_get(cfg, "low_resource", False),
            device_8bit=_cfg_get(cfg, "device_8bit", 0),
            vit_model_path=vit_model_path,
            vit_config=cfg.get("vit_config"),
            qformer_config=cfg.get("qformer_config"),
            llm_quantization=cfg.get("llm_quantization"),
            autocast_dtype=_cfg_get(cfg, "autocast_dtype", "fp16"),
            attn_implementation=cfg.get("attn_implementation"),
            device=cfg.get("device"),
            allow_download=allow,
        )
        if ckpt:
            model.load_checkpoint(fetch(weight_source("model.ckpt", ckpt), allow))
        return model


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100 (the original's loss).

    Computed explicitly over ``logits[:, :-1]`` and ``labels[:, 1:]`` in fp32: transformers 5's
    built-in loss differs from the original's by up to ~5e-7.
    """
    vocab = logits.shape[-1]
    shift_logits = logits[:, :-1, :].float().reshape(-1, vocab)
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)

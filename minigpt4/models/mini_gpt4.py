"""MiniGPT-4: frozen EVA ViT-g (+ Q-Former), one trainable Linear, a frozen causal LLM.

The model owns the math: it turns images into LLM input tokens (:meth:`MiniGPT4.encode_img`),
a prompt with image placeholders plus image embeddings into LLM inputs (training:
:meth:`prepare_llm_inputs`; generation: :meth:`get_context_emb`) and generates
(:meth:`generate_from_embeddings`). :meth:`answer` / :meth:`answer_batch` do the whole sequence
for a conversation (:mod:`minigpt4.models.answering`): the chat, the demo, the batch command, the
server and the evaluator answer through them.

``MiniGPT4`` is registered as ``mini_gpt4`` (MiniGPT-4 v1, Vicuna); the LLaMA-2 Chat model is the
same class with other defaults (:mod:`minigpt4.models.minigpt4_llama2`). Building is apart from
loading: ``MiniGPT4(config, llm_hidden_size)`` builds the modules (:meth:`build_empty`: on the meta
device, then allocated in the run's dtypes, :mod:`minigpt4.models.precision`); :meth:`from_config`
reads the config and loads every weight file through :mod:`minigpt4.models.loading`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.common.registry import registry
from minigpt4.models import generation, lora, multi_turn
from minigpt4.models import prompt as assembly
from minigpt4.models.answering import Answer, Answerer, Question
from minigpt4.models.base_model import BaseModel, LayerNorm
from minigpt4.models.eva_vit import create_eva_vit_g
from minigpt4.models.loading import quantized
from minigpt4.models.model_config import MiniGPT4Config
from minigpt4.models.model_section import complete_section
from minigpt4.models.precision import Precision, materialize, run_device_kind
from minigpt4.models.prompt import IGNORE_INDEX
from minigpt4.models.tokenizer_base import Tokenizer
from minigpt4.models.trainable import apply_trainable, eval_frozen_parts, trainable_names

logger = logging.getLogger(__name__)

# One generation at a time per process: callers on several threads (the demo's users, the
# server) take turns instead of slowing each other down.
_GENERATE_LOCK = threading.Lock()


@registry.register_model("mini_gpt4")
class MiniGPT4(BaseModel):
    """BLIP-2's frozen vision side feeding a frozen LLM through one trained projection."""

    PRETRAINED_MODEL_CONFIG_DICT: ClassVar[dict[str, str]] = {
        "pretrain_vicuna": "configs/models/minigpt4.yaml"
    }
    # The variant's own defaults over MiniGPT4Config's (v1 has none).
    CONFIG_DEFAULTS: ClassVar[dict[str, Any]] = {}
    CHECKPOINT_LOG = "Load BLIP2-LLM Checkpoint: %s"
    # v1's low_resource mode also runs the ViT on the CPU in fp32 (when the model is on a GPU).
    LOW_RESOURCE_VIT_ON_CPU = True

    def __init__(self, config: MiniGPT4Config, llm_hidden_size: int) -> None:
        """Build the modules of ``config`` (random weights; the LLM comes with attach_llm)."""
        super().__init__()
        self.config = config
        self.device_kind = run_device_kind(config)
        self.precision = Precision.of(config, self.device_kind)
        self.autocast_dtype = self.precision.autocast or torch.float16
        self.low_resource = config.low_resource
        self.max_txt_len = config.max_txt_len
        self.max_context_len = config.max_context_len
        self.end_sym = config.end_sym
        self.prompt_list: list[str] = []

        vit = config.vit_config
        self.visual_encoder = create_eva_vit_g(
            vit, config.drop_path_rate, config.use_grad_checkpoint
        )
        self.ln_vision = LayerNorm(vit.embed_dim)  # the original's default eps 1e-5
        self.image_adapter = config.adapter
        width = self.image_adapter.build(self, config)
        self.register_module("llama_model", None)  # keeps the original's module order
        self.llama_tokenizer: Tokenizer | None = None
        self.llama_proj = nn.Linear(width, llm_hidden_size)
        # The LLM comes later (attach_llm), so names inside it are checked then.
        apply_trainable(self, trainable_names(config), check=False)
        self.train()

    @classmethod
    def build_empty(cls, config: MiniGPT4Config, llm_hidden_size: int) -> MiniGPT4:
        """The modules of ``config`` allocated once in their run dtypes, without computing any
        random weights: the ViT and Q-Former tensors are left for the weight files to fill;
        ``llama_proj`` gets nn.Linear's random init and ``ln_vision`` ones/zeros, as built
        (files may overwrite both). No LLM yet (:meth:`attach_llm`)."""
        with torch.device("meta"):
            model = cls(config, llm_hidden_size)
        materialize(model, model.precision.dtype_rule(model))
        for part in (model.ln_vision, model.llama_proj):
            part.reset_parameters()
        return model

    def attach_llm(self, llm: nn.Module, tokenizer: Tokenizer) -> None:
        """Set the (frozen) LLM and its tokenizer."""
        if llm.config.hidden_size != self.llama_proj.out_features:
            raise ValueError(
                f"the LLM's hidden size {llm.config.hidden_size} differs from llama_proj's "
                f"{self.llama_proj.out_features}"
            )
        if self.config.use_grad_checkpoint_llm:
            # Non-reentrant: gradients reach llama_proj through the frozen LLM from the
            # inputs_embeds, which require grad; transformers also hooks the embedding output.
            llm.activation_checkpointing_enable({"use_reentrant": False})
        if self.config.lora_r:
            llm = lora.add_lora(llm, self.config.lora_r, self.config.lora_alpha)
        self._lora_dropouts = {id(m) for m in lora.dropout_modules(llm)}
        self.llama_model = llm
        self.llama_tokenizer = tokenizer
        apply_trainable(self, trainable_names(self.config))
        self.train(self.training)

    def merge_lora(self) -> None:
        """Fold the LoRA weights into the LLM's own (``model.merge_lora``: inference without
        the extra products); the LLM is a plain Hugging Face model afterwards."""
        if not self.config.lora_r:
            raise ValueError("model.merge_lora is set but the model has no LoRA (model.lora_r 0)")
        self.llama_model = self.llama_model.merge_and_unload()
        self._lora_dropouts = set()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign=False):
        """``nn.Module.load_state_dict`` that also takes the original's LoRA names (peft 0.2.0,
        :mod:`minigpt4.models.lora`), as its checkpoints and ``strict=False`` loading use them."""
        return super().load_state_dict(lora.from_original_names(state_dict), strict, assign)

    def train(self, mode: bool = True) -> MiniGPT4:
        """Train mode where a part trains; parts without a trained parameter stay in eval mode
        (dropout off, as the original's frozen parts), except an LLM under gradient
        checkpointing, which transformers runs only in train mode (LLaMA has no dropout), and
        LoRA's dropout, active in training as in the original."""
        super().train(mode)
        if mode:
            eval_frozen_parts(self, self._keeps_training)
        return self

    def _keeps_training(self, part: nn.Module) -> bool:
        if id(part) in getattr(self, "_lora_dropouts", ()):
            return True
        return part is self.llama_model and self.config.use_grad_checkpoint_llm

    @classmethod
    def from_config(cls, cfg: Mapping) -> MiniGPT4:
        """Build from a config's ``model`` section (OmegaConf node or dict) and load its weights.

        A section read without ``Config`` gets its missing keys from the default YAML of its
        model type (:mod:`minigpt4.models.model_section`)."""
        from minigpt4.models.loading.model import load_model

        section = complete_section(cls, cfg)
        return load_model(cls, MiniGPT4Config.from_cfg(section, **cls.CONFIG_DEFAULTS))

    @classmethod
    def default_model_type(cls, section: Mapping) -> str:
        """The model type of a section without a known one: this arch's only type."""
        return next(iter(cls.PRETRAINED_MODEL_CONFIG_DICT))

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        """Absolute path of the default YAML of ``model_type``."""
        if model_type not in cls.PRETRAINED_MODEL_CONFIG_DICT:
            arch = next(
                (n for n, c in registry.mapping["model_name_mapping"].items() if c is cls), "?"
            )
            raise KeyError(
                f"unknown model_type '{model_type}' for arch {arch}; known: "
                f"{sorted(cls.PRETRAINED_MODEL_CONFIG_DICT)}"
            )
        library_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return os.path.join(library_root, cls.PRETRAINED_MODEL_CONFIG_DICT[model_type])

    @property
    def device(self) -> torch.device:
        """Where the model runs: the device of the trained projection (always on the run
        device, also when low-resource mode keeps the ViT on the CPU)."""
        return self.llama_proj.weight.device

    # --- images ------------------------------------------------------------------------------

    def vit_to_cpu(self) -> None:
        """Low-resource mode: the ViT and ``ln_vision`` run on CPU in fp32 (as the original)."""
        self.ln_vision.to("cpu").float()
        self.visual_encoder.to("cpu").float()

    def _check_image(self, image: Any) -> None:
        size = self.config.vit_config.img_size
        expected = (3, size, size)
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1:] != expected:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(
                f"encode_img expects a batch of images shaped [B, 3, {size}, {size}] "
                f"(model.image_size {size}); got {got}. Use the blip2_image_eval / "
                f"blip2_image_train processor with image_size {size}."
            )

    def encode_img(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] -> (LLM input embeddings [B, T, H_llm], all-ones mask [B, T])."""
        self._check_image(image)
        device = image.device
        if self.low_resource and self.LOW_RESOURCE_VIT_ON_CPU and device.type != "cpu":
            self.vit_to_cpu()
            image = image.to("cpu")
        vit = self.visual_encoder
        with self.maybe_autocast():
            # Without autocast (CPU) each part computes in its own weights' dtype.
            image = image.to(vit.patch_embed.proj.weight.dtype)
            image_embeds = self.ln_vision(vit(image)).to(device)
            features = self.image_adapter.features(self, image_embeds)
            inputs_llama = self.llama_proj(features.to(self.llama_proj.weight.dtype))
        inputs_llama = inputs_llama.to(self.llm_input_dtype)
        atts_llama = torch.ones(inputs_llama.shape[:-1], dtype=torch.long, device=device)
        return inputs_llama, atts_llama

    @property
    def image_token_count(self) -> int:
        """How many LLM input tokens :meth:`encode_img` makes of one image."""
        return self.image_adapter.tokens_per_image(self.config)

    # --- prompts -----------------------------------------------------------------------------

    @property
    def llm_input_dtype(self) -> torch.dtype:
        """The dtype the LLM takes its input embeddings in (its embedding table's)."""
        if self.llama_model is None:
            return self.llama_proj.weight.dtype
        return self.llama_model.get_input_embeddings().weight.dtype

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """LLM input embeddings of ``token_ids``."""
        return self.llama_model.get_input_embeddings()(token_ids)

    def segment_ids(self, prompt: str) -> list[list[int]]:
        """Token ids of the text around each ``<ImageHere>`` (BOS on the first segment)."""
        return assembly.segment_ids(self.llama_tokenizer, prompt)

    def get_context_emb(self, prompt: str, img_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Context embeddings [1, L, H] of a chat prompt with its images ([1, tokens, H] each)."""
        return assembly.context_embeddings(
            self.llama_tokenizer, self.embed_tokens, prompt, img_list
        )

    def _batch_prompts(self, samples: Mapping[str, Any], given: str | None, n: int):
        own = list(samples.get("instruction_input") or [""] * n)  # one prompt per sample
        if all(own):
            if self.config.template_instructions:  # the original's chat_template: True
                return [self.config.prompt_template.format(p) for p in own]
            return own
        if given is None and self.prompt_list:
            given = random.choice(self.prompt_list)  # one random prompt for the whole batch
        if not given:
            if any(own):
                raise ValueError(
                    "some samples have an instruction_input and others none, and the model has "
                    "no training prompts for them: set model.prompt_path or give every sample one"
                )
            return None
        return [p or given for p in own]

    def prepare_llm_inputs(
        self, samples: Mapping[str, Any], prompt: str | None = None
    ) -> dict[str, torch.Tensor]:
        """What ``forward`` feeds the LLM: ``inputs_embeds``, ``attention_mask`` and ``labels``.

        ``samples``: ``image`` [B, 3, H, W] (absent in a text-only batch) and ``text_input`` (or
        ``answer``) B strings, and
        optionally ``instruction_input`` (B prompts, "" where a sample has none). The samples
        without one get ``prompt``, by default one random choice from ``prompt_list`` for the
        whole batch (none in stage 1). A conversation batch (``conv_q``, ``conv_a``,
        ``connect_sym``) is laid out by :mod:`minigpt4.models.multi_turn`.
        """
        if "image" not in samples:  # text only (MiniGPT-v2's unnatural instructions)
            return self._text_only_inputs(samples)
        image = samples["image"]
        img_embeds, atts_img = self.encode_img(image)
        tokenizer = self.llama_tokenizer
        targets = None
        if multi_turn.is_conversation(samples):
            questions, answers = multi_turn.split_turns(samples, self.config.prompt_template)
            prompts = [q[0] for q in questions]
            ids, mask, targets = multi_turn.conversation_targets(
                tokenizer, questions, answers, self.end_sym, self.max_txt_len, img_embeds.device
            )
        else:
            texts = self._answers(samples, image.shape[0])
            prompts = self._batch_prompts(samples, prompt, image.shape[0])
            ids, mask = tokenizer.pad_batch(
                [t + self.end_sym for t in texts], self.max_txt_len, device=img_embeds.device
            )
        if prompts:
            cond, cond_mask = assembly.wrap_prompts(
                tokenizer, self.embed_tokens, img_embeds, prompts, self.max_context_len
            )
        else:
            cond, cond_mask = img_embeds, atts_img
        return assembly.training_inputs(
            cond,
            cond_mask,
            ids,
            mask,
            self.embed_tokens,
            tokenizer.bos_token_id,
            tokenizer.pad_token_id,
            targets,
        )

    def _text_only_inputs(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """A batch of ``instruction_input``/``answer`` without images, laid out as the
        original's: [BOS][prompt in the template][answer + end_sym][padding]."""
        tokenizer = self.llama_tokenizer
        own = list(samples.get("instruction_input") or [])
        if not own or not all(own):
            raise ValueError("a batch without images needs an instruction_input per sample")
        texts = self._answers(samples, len(own))
        if self.config.template_instructions:
            own = [self.config.prompt_template.format(p) for p in own]
        cond, cond_mask = assembly.wrap_text_prompts(
            tokenizer, self.embed_tokens, own, self.device, self.max_context_len
        )
        ids, mask = tokenizer.pad_batch(
            [t + self.end_sym for t in texts], self.max_txt_len, device=self.device
        )
        return assembly.training_inputs(
            cond, cond_mask, ids, mask, self.embed_tokens, tokenizer.bos_token_id,
            tokenizer.pad_token_id,
        )  # fmt: skip

    @staticmethod
    def _answers(samples: Mapping[str, Any], count: int) -> list[str]:
        texts = samples["text_input"] if "text_input" in samples else samples.get("answer")
        if isinstance(texts, str) or texts is None or len(texts) != count:
            raise ValueError(
                f"samples['text_input'] must be a list of {count} strings (one per image)"
            )
        return list(texts)

    def forward(
        self, samples: Mapping[str, Any], reduction: str = "mean"
    ) -> dict[str, torch.Tensor]:
        """``{"image", "text_input"}`` -> ``{"loss"}`` (mean token CE; ``reduction="none"``: one
        value per sample, averaged over all its positions as the original's LLaMA-2 code does)."""
        if torch.is_grad_enabled():
            quantized.unpack_4bit_for_training(self.llama_model)
        llm_inputs = self.prepare_llm_inputs(samples)
        with self.maybe_autocast():
            outputs = self.llama_model(
                inputs_embeds=llm_inputs["inputs_embeds"],
                attention_mask=llm_inputs["attention_mask"],
                use_cache=False,  # the loss needs no KV cache
                return_dict=True,
            )
            loss = causal_lm_loss(outputs.logits, llm_inputs["labels"], reduction)
        return {"loss": loss}

    @torch.no_grad()
    def multi_select(
        self,
        images: torch.Tensor,
        texts: Sequence[str],
        answers: Sequence[Sequence[str]],
        num_cand: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """Candidate answers ranked by loss, as the original's (IconQA evaluation).

        ``texts[i]``: the prompt of image i (with ``<ImageHere>``); ``answers[j][i]``:
        candidate j of sample i. Returns per sample the candidate indices, lowest loss first;
        the loss of a candidate is ``forward``'s ``reduction="none"`` value (its token losses
        summed over the row and divided by the row length - 1). Candidates at or beyond
        ``num_cand[i]`` (padding of samples with fewer candidates) rank last.
        """
        losses = torch.stack(
            [
                self(
                    {"image": images, "instruction_input": list(texts), "answer": list(column)},
                    reduction="none",
                )["loss"]
                for column in answers
            ],
            dim=-1,
        )
        for i, count in enumerate(num_cand or ()):
            losses[i, count:] = math.inf
        return torch.argsort(losses, dim=-1, stable=True).tolist()

    # --- generation --------------------------------------------------------------------------

    @property
    def end_token_ids(self) -> frozenset[int]:
        """Token ids that end an answer: the tokenizer's and the LLM's end-of-sequence ids and
        the config's ``stop_token_ids`` (e.g. Llama-3's ``<|eot_id|>``)."""
        ids = {self.llama_tokenizer.eos_token_id, *self.config.stop_token_ids}
        configured = getattr(self.llama_model.generation_config, "eos_token_id", None)
        if configured is not None:
            ids |= set(configured) if isinstance(configured, list) else {configured}
        return frozenset(ids)

    @contextlib.contextmanager
    def _generating(self) -> Iterator[None]:
        """One generation at a time, under the model's autocast, with a 4-bit LLM in its
        inference layout."""
        with _GENERATE_LOCK, self.maybe_autocast():
            quantized.pack_4bit_for_cpu_inference(self.llama_model)
            yield

    @torch.no_grad()
    def generate_from_embeddings(
        self,
        contexts: Sequence[torch.Tensor],
        settings: Sequence[generation.GenerationSettings],
        rules: Sequence[generation.StopRule],
        on_token: Any = None,
        extra: Sequence[Any] = (),
    ) -> list[generation.Generation]:
        """Answers for context embeddings (one [1, L_i, H] tensor per row), batched; see
        :func:`minigpt4.models.generation.generate`. Every answer of the project comes from
        here."""
        with self._generating():
            return generation.generate(
                self.llama_model,
                contexts,
                settings,
                rules,
                decode=self.llama_tokenizer.decode,
                pad_token_id=self.llama_tokenizer.pad_token_id,
                on_token=on_token,
                extra=extra,
                vocab_size=len(self.llama_tokenizer),
            )

    @functools.cached_property
    def answerer(self) -> Answerer:
        """The :class:`~minigpt4.models.answering.Answerer` of the model's own chat template."""
        # Imported here: the conversation package imports this one (its templates' settings).
        from minigpt4.conversation.model_template import template_for

        return Answerer(self, template_for(self))

    def answer(
        self,
        conversation: Any,
        images: Sequence[torch.Tensor],
        settings: generation.GenerationSettings | None = None,
        stream: bool = False,
    ) -> Answer | Iterator[str]:
        """The answer to ``conversation`` (a ``Conversation`` in the model's template, ending
        with the user's question; the answer is stored in it) about ``images`` (one per
        ``<ImageHere>``: processed [1, 3, H, W] or encoded [1, T, H]). ``settings`` default to
        the template's. Returns the :class:`~minigpt4.models.answering.Answer`, or with
        ``stream`` an iterator of its text so far. The prompt is built, the context embedded
        once, cut on the left to fit ``max_length`` (logged) and answered."""
        answerer = self.answerer
        settings = settings or answerer.template.settings
        if stream:
            return answerer.stream(conversation, images, settings)
        return answerer.answer(conversation, images, settings)

    def answer_batch(self, questions: Sequence[Question]) -> list[Answer | Exception]:
        """Answers to many :class:`~minigpt4.models.answering.Question` s, generated together
        (:meth:`Answerer.answer_batch`)."""
        return self.answerer.answer_batch(questions)

    @torch.no_grad()
    def llm_generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """transformers' ``generate`` on the LLM with the caller's own arguments (what the
        original's ``Chat.model_generate`` ran); ``pad_token_id`` defaults to the tokenizer's."""
        kwargs.setdefault("pad_token_id", self.llama_tokenizer.pad_token_id)
        with self._generating():
            return self.llama_model.generate(*args, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        texts: Sequence[str],
        num_beams: int = 1,
        max_new_tokens: int = 20,
        min_length: int = 1,
        top_p: float = 0.9,
        repetition_penalty: float = 1,
        length_penalty: float = 1,
        temperature: float = 1,
        do_sample: bool = False,
        stop_words_ids: Sequence[int] = (2,),
    ) -> list[str]:
        """The original HEAD's batch answer: ``texts[i]`` is a full prompt with one
        ``<ImageHere>`` for ``images[i]``; returns the answers, decoded and cleaned as the
        original cleaned them. (The original built a criterion from ``stop_words_ids`` and did
        not pass it; here each id ends its row, which for the default, end of sequence, is the
        same.)"""
        image_embs, _ = self.encode_img(images.to(self.device))
        contexts = [self.get_context_emb(t, [e[None]]) for t, e in zip(texts, image_embs)]
        row = generation.GenerationSettings(
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            min_length=min_length,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
            temperature=temperature,
            do_sample=do_sample,
            max_length=max(generation.GenerationSettings.max_length, max_new_tokens + 1),
        )
        rule = generation.StopRule(
            sequences=tuple((int(i),) for i in stop_words_ids), end_ids=self.end_token_ids
        )
        results = self.generate_from_embeddings(
            contexts, [row] * len(contexts), [rule] * len(contexts)
        )
        return [self._clean_batch_answer(r.tokens) for r in results]

    def _clean_batch_answer(self, tokens: Sequence[int]) -> str:
        text = self.llama_tokenizer.decode(tokens, skip_special_tokens=True)
        return text.split("</s>")[0].replace("<s>", "").split("[/INST]")[-1].strip()


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy over positions whose label is not -100 (the original's loss).

    Computed explicitly over ``logits[:, :-1]`` and ``labels[:, 1:]`` in fp32: transformers 5's
    built-in loss differs from the original's by up to ~5e-7.
    """
    vocab = logits.shape[-1]
    shift_logits = logits[:, :-1, :].float().reshape(-1, vocab)
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    loss = F.cross_entropy(
        shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction=reduction
    )
    return loss.view(logits.shape[0], -1).mean(1) if reduction == "none" else loss

"""BLIP-2 Q-Former query path from transformers' ``Blip2QFormerModel``, plus LAVIS key conversion.

MiniGPT-4 only ever runs the Q-Former on its learned query tokens (no text), so the pruned LAVIS
``BertLMHeadModel`` (no word/position embeddings, no text FFNs, no MLM head) and
``Blip2QFormerModel(use_qformer_text_input=False)`` hold the same weights and compute the same
function. Only the names differ; the functions here convert between the two layouts (LAVIS -> ours):

- ``Qformer.bert.embeddings.LayerNorm.*`` -> ``Qformer.layernorm.*``
- ``Qformer.bert.encoder.layer.N.attention.self.*`` ->
  ``Qformer.encoder.layer.N.attention.attention.*``
- ``Qformer.bert.encoder.layer.N.crossattention.self.*`` ->
  ``Qformer.encoder.layer.N.crossattention.attention.*``
- ``Qformer.bert.encoder.*`` (everything else) -> ``Qformer.encoder.*``
- ``Qformer.bert.embeddings.position_ids`` (a buffer) has no counterpart: no position embeddings
  are used on the query path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

LAVIS_PREFIX = "Qformer.bert."
OUR_PREFIX = "Qformer."
# A buffer of the LAVIS BERT embeddings; MiniGPT-4 never uses position embeddings.
LAVIS_POSITION_IDS = "Qformer.bert.embeddings.position_ids"
# bert-base-uncased, the BERT config the original downloads at start-up.
BERT_BASE_MAX_POSITIONS = 512


@dataclass(frozen=True)
class QFormerConfig:
    """Sizes of the Q-Former; the defaults are bert-base-uncased's as BLIP-2 uses them."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_freq: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, values: Mapping | None) -> QFormerConfig:
        """Defaults overridden by ``values`` (model key ``qformer_config``); unknown keys: error."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"model.qformer_config: unknown key(s) {unknown}; allowed keys are {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def build_qformer(config: QFormerConfig, vision_width: int) -> Blip2QFormerModel:
    """A randomly initialised query-only Q-Former reading ``vision_width``-wide image features."""
    hf_config = Blip2QFormerConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        layer_norm_eps=config.layer_norm_eps,
        cross_attention_frequency=config.cross_attention_freq,
        encoder_hidden_size=vision_width,
        use_qformer_text_input=False,
    )
    # Eager attention is the textbook formula the original uses; the Q-Former is small (32 queries),
    # so the faster kernels would buy little.
    hf_config._attn_implementation = "eager"
    return Blip2QFormerModel(hf_config)


def _lavis_to_ours(key: str) -> str:
    rest = key[len(LAVIS_PREFIX) :]
    if rest.startswith("embeddings.LayerNorm."):
        return OUR_PREFIX + "layernorm." + rest[len("embeddings.LayerNorm.") :]
    rest = rest.replace(".attention.self.", ".attention.attention.")
    rest = rest.replace(".crossattention.self.", ".crossattention.attention.")
    return OUR_PREFIX + rest


def _ours_to_lavis(key: str) -> str:
    rest = key[len(OUR_PREFIX) :]
    if rest.startswith("layernorm."):
        return LAVIS_PREFIX + "embeddings.LayerNorm." + rest[len("layernorm.") :]
    rest = rest.replace(".attention.attention.", ".attention.self.")
    rest = rest.replace(".crossattention.attention.", ".crossattention.self.")
    return LAVIS_PREFIX + rest


def lavis_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``Qformer.bert.*`` keys (LAVIS layout) to this project's ``Qformer.*`` names.

    Other keys (``query_tokens``, ``ln_vision.*``, ``llama_proj.*`` ...) pass through unchanged.
    ``Qformer.bert.embeddings.position_ids`` is kept under its LAVIS name, since it has no
    counterpart here; the loader reports it as ignored.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(LAVIS_PREFIX) and key != LAVIS_POSITION_IDS:
            key = _lavis_to_ours(key)
        out[key] = value
    return out


def ours_to_lavis(
    state_dict: Mapping[str, torch.Tensor], max_position_embeddings: int | None = None
) -> dict[str, torch.Tensor]:
    """Rename this project's ``Qformer.*`` keys to the LAVIS ``Qformer.bert.*`` layout.

    With ``max_position_embeddings`` the LAVIS ``position_ids`` buffer ([1, N] int64) is added, as
    in the real ``blip2_pretrained_flant5xxl.pth`` (N = 512 for bert-base).
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(OUR_PREFIX):
            key = _ours_to_lavis(key)
        out[key] = value
    if max_position_embeddings is not None:
        out[LAVIS_POSITION_IDS] = torch.arange(max_position_embeddings).unsqueeze(0)
    return out

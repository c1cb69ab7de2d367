"""What the model and the chat ask of an LLM tokenizer, whichever kind reads the folder.

Two kinds implement it: :class:`~minigpt4.models.tokenizer.LlamaTokenizer` (SentencePiece, the
original's slow LLaMA tokenizer to the id, which the parity tests depend on) and
:class:`~minigpt4.models.hf_tokenizer.HFTokenizer` (``transformers.AutoTokenizer``, every other
Hugging Face causal-LM family). The prompt assembly, the training forward, generation and the
chat's stop words use only what is declared here, so neither of them knows which kind it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch


class Tokenizer(ABC):
    """An LLM tokenizer as MiniGPT-4 uses it.

    ``bos_token_id`` is None for a tokenizer without a beginning-of-sequence token (Qwen): then
    no BOS is ever added. ``unk_token_id`` is None for byte-level vocabularies, which have no
    unknown token. ``pad_token_id`` always exists (it falls back to the end-of-sequence id).
    """

    bos_token: str | None
    eos_token: str
    pad_token: str
    unk_token: str | None
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int
    unk_token_id: int | None

    @abstractmethod
    def __len__(self) -> int:
        """Vocabulary size."""

    @abstractmethod
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; BOS first when ``add_bos`` and the tokenizer has one.
        Special-token strings in the text become their ids."""

    @abstractmethod
    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (special tokens dropped when ``skip_special_tokens``)."""

    @abstractmethod
    def piece_to_id(self, piece: str) -> int | None:
        """Id of one vocabulary piece; the unknown id (None without one) when it is not there."""

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """``messages`` rendered by the tokenizer's own chat template, as text."""
        raise ValueError(
            f"{type(self).__name__} has no chat template of its own: set model.tokenizer: auto "
            "to read the folder with transformers, or name a known model.chat_template"
        )

    def pad_batch(
        self, texts: Sequence[str], max_length: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids [B, T] and mask [B, T] of ``texts``: no BOS, each cut to ``max_length`` tokens,
        right-padded with the pad id to the longest row (``padding="longest"``)."""
        rows = [self.encode(t)[:max_length] for t in texts]
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(device), mask.to(device)

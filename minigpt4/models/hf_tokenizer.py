"""Any Hugging Face LLM's tokenizer (``transformers.AutoTokenizer``) behind the project's
:class:`~minigpt4.models.tokenizer_base.Tokenizer` interface.

LLaMA/Vicuna folders keep the exact SentencePiece tokenizer of the original
(:mod:`minigpt4.models.tokenizer`); every other family (Llama-3, Qwen2.5, Mistral v0.3, ...)
ships a ``tokenizer.json`` that only transformers reads faithfully, with special tokens and a
chat template of its own. The special tokens come from the config when it names them
(``model.bos_token``, ``model.eos_token``, ``model.pad_token``) and otherwise from the
tokenizer; a tokenizer without a BOS adds none, and the pad token falls back to the
end-of-sequence token, as MiniGPT-4 v1 pads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minigpt4.models.tokenizer_base import Tokenizer


class HFTokenizer(Tokenizer):
    """``AutoTokenizer.from_pretrained(folder)`` with the project's special-token rules.

    ``bos_token``: None keeps the tokenizer's, "" means none; ``eos_token`` / ``pad_token``:
    None keeps the tokenizer's (pad: else the end-of-sequence token). A named token must be in
    the vocabulary (nothing is added to it: the LLM's embedding table is frozen).
    """

    def __init__(
        self,
        folder: str,
        pad_token: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.folder = folder
        self._args = (pad_token, bos_token, eos_token)
        self.hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self._vocab = self.hf.get_vocab()  # built anew on each call: read it once
        self.bos_token = self.hf.bos_token if bos_token is None else (bos_token or None)
        self.eos_token = eos_token or self.hf.eos_token
        if not self.eos_token:
            raise ValueError(
                f"the tokenizer of {folder} has no end-of-sequence token: set model.eos_token "
                "to the token that ends an answer"
            )
        self.pad_token = pad_token or self.hf.pad_token or self.eos_token
        self.unk_token = self.hf.unk_token
        self.bos_token_id = self._known_id(self.bos_token, "bos_token")
        self.eos_token_id = self._known_id(self.eos_token, "eos_token")
        self.pad_token_id = self._known_id(self.pad_token, "pad_token")
        self.unk_token_id = self.hf.unk_token_id

    def _known_id(self, token: str | None, key: str) -> int | None:
        if token is None:
            return None
        if token not in self._vocab:
            raise ValueError(
                f"model.{key} {token!r} is not a token of the tokenizer in {self.folder}; name "
                "one of its special tokens (tokenizer_config.json / special_tokens_map.json)"
            )
        return self._vocab[token]

    def __len__(self) -> int:
        return len(self.hf)

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "args": self._args}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], *state["args"])

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False)
        if add_bos and self.bos_token_id is not None:
            return [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        # An id past the last token (real embedding tables have spare rows, e.g. Qwen2.5's
        # 152064 for 151665 tokens) is no text.
        ids = [i for i in ids if 0 <= i < len(self)]
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def piece_to_id(self, piece: str) -> int | None:
        return self._vocab.get(piece, self.unk_token_id)

    @property
    def has_chat_template(self) -> bool:
        """Whether the folder carries a chat template (``tokenizer_config.json`` or
        ``chat_template.jinja``)."""
        return bool(self.hf.chat_template)

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        # load_tokenizer has checked that there is a template when the config asks for it
        return self.hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

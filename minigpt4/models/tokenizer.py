"""The LLaMA tokenizer exactly as the original used it, read from ``tokenizer.model``.

Both MiniGPT-4 models were trained and released with transformers' *slow* ``LlamaTokenizer``
(transformers 4.28 / 4.30): the text is split on the special-token strings ``<s>``, ``</s>`` and
``<unk>``, each special string becomes its id, and every other piece of text is encoded by
SentencePiece on its own (so it gets SentencePiece's dummy-prefix "▁"). transformers 5 has only
the fast tokenizer, which differs right after a literal ``<s>`` (LLaMA-2's chat template has one
per turn: ``[`` instead of ``▁[``), on strings that start with a space, and in decoding
byte-fallback pieces. This class reproduces the slow tokenizer's ids and decoded text with the
``sentencepiece`` library, which is all the slow tokenizer was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sentencepiece as spm
import torch

from minigpt4.models.tokenizer_base import Tokenizer

TOKENIZER_FILE = "tokenizer.model"


class LlamaTokenizer(Tokenizer):
    """SentencePiece LLaMA tokenizer with the slow transformers tokenizer's behaviour.

    ``pad_token`` is a piece of the vocabulary (``None``: the end-of-sequence token, as in
    MiniGPT-4 v1; ``"$$"`` in the LLaMA-2 model). A pad piece missing from the vocabulary maps to
    the unknown id, as the original's tokenizer did; nothing is ever added to the vocabulary.
    """

    def __init__(self, model_file: str, pad_token: str | None = None) -> None:
        self.model_file = model_file
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        self.unk_token_id = self.sp.unk_id()
        self.bos_token = self.sp.id_to_piece(self.bos_token_id)
        self.eos_token = self.sp.id_to_piece(self.eos_token_id)
        self.unk_token = self.sp.id_to_piece(self.unk_token_id)
        self.pad_token = pad_token or self.eos_token
        self.pad_token_id = self.sp.piece_to_id(self.pad_token)
        self._no_split = {t: self.sp.piece_to_id(t) for t in (self.bos_token, self.eos_token)}
        self._no_split[self.unk_token] = self.unk_token_id
        pattern = "|".join(re.escape(t) for t in sorted(self._no_split, key=len, reverse=True))
        self._split_re = re.compile(f"({pattern})")
        # Special for decoding: the three above plus the pad token (the original set it as one).
        self.special_tokens = set(self._no_split) | {self.pad_token}
        self.special_ids = set(self._no_split.values()) | {self.pad_token_id}

    @classmethod
    def from_folder(cls, folder: str, pad_token: str | None = None) -> LlamaTokenizer:
        return cls(os.path.join(folder, TOKENIZER_FILE), pad_token)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def __getstate__(self) -> dict:
        return {"model_file": self.model_file, "pad_token": self.pad_token}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_file"], state["pad_token"])

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` (with BOS first when ``add_bos``), as the slow tokenizer."""
        ids = [self.bos_token_id] if add_bos else []
        for chunk in self._split_re.split(text):
            if chunk in self._no_split:
                ids.append(self._no_split[chunk])
            elif chunk:
                ids += self.sp.encode(chunk)
        return ids

    def piece_to_id(self, piece: str) -> int:
        """Id of one vocabulary piece (the unknown id when it is not in the vocabulary)."""
        return self.sp.piece_to_id(piece)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``: special pieces verbatim (or dropped), the rest through SentencePiece."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        # An id past the last piece (an LLM embedding with spare rows) is no text.
        ids = [i for i in ids if 0 <= i < len(self)]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        pieces = [self.sp.id_to_piece(int(i)) for i in ids]
        out, pending, prev_special = "", [], False
        for i, piece in enumerate(pieces):
            if piece in self.special_tokens:
                if not prev_special and i != 0:
                    out += " "
                out += self.sp.decode_pieces(pending) + piece
                pending, prev_special = [], True
            else:
                pending.append(piece)
                prev_special = False
        return out + self.sp.decode_pieces(pending)

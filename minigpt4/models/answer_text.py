"""From generated token ids to an answer's text: stop words, post-processing, streaming hold-back.

The final text of an answer is the original's post-processing (:meth:`AnswerDecoder.decode`:
the text before the first stop word, "###", after the last "Assistant:", stripped) cut before
the first of the caller's stop strings (the OpenAI API's ``stop``, left out of the answer). While
an answer streams, the visible text is the same function of the tokens so far, holding back what
may still change (:class:`VisibleText`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigpt4.models.tokenizer_base import Tokenizer

# Held back at the end of a streamed text: a "#" may start the "###" stop word, U+FFFD is half a
# UTF-8 character (byte-fallback tokens arrive one byte at a time).
HELD_BACK_CHARS = "#\ufffd"


def stop_word_ids(tokenizer: Tokenizer, word: str) -> list[list[int]]:
    """Every token-id sequence by which the LLM can write ``word``.

    The original listed two encodings of "###" for the LLaMA vocabulary: one piece ("###") and
    "##" + "#". Those are looked up as pieces; the encodings the tokenizer itself produces, for the
    word after other text and on its own (with SentencePiece's leading "▁"), are added. Sequences
    containing the unknown token (a piece missing from the vocabulary; None for a vocabulary
    without one) are left out.
    """
    candidates = [
        [tokenizer.piece_to_id(word)],
        [tokenizer.piece_to_id(p) for p in (word[:-1], word[-1])],
    ]
    anchor = tokenizer.encode("a")
    after_text = tokenizer.encode("a" + word)
    if after_text[: len(anchor)] == anchor:
        candidates.append(after_text[len(anchor) :])
    candidates.append(tokenizer.encode(word))
    result: list[list[int]] = []
    for ids in candidates:
        known = all(i is not None and i != tokenizer.unk_token_id for i in ids)
        if ids and known and ids not in result:
            result.append(ids)
    if not result:
        raise ValueError(f"the tokenizer cannot encode the stop word {word!r}")
    return result


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` before the first occurrence of any of ``stops``."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(ends)] if ends else text


class AnswerDecoder:
    """Decodes answers the way ``template`` (a ``ChatTemplate``) says: ``skip_special_tokens``,
    ``stop_words`` (cut before the first), ``answer_after`` (keep what follows the last)."""

    def __init__(self, tokenizer: Tokenizer, template: Any, end_ids: frozenset[int]) -> None:
        self.tokenizer, self.template = tokenizer, template
        self.trailing = set(end_ids) | {tokenizer.pad_token_id}

    def decode(self, token_ids: Sequence[int]) -> str:
        """The original's post-processing of an answer's tokens."""
        ids = list(token_ids)
        while ids and ids[-1] in self.trailing:  # end of sequence / padding of rows ended early
            ids.pop()
        text = self.tokenizer.decode(ids, skip_special_tokens=self.template.skip_special_tokens)
        for word in self.template.stop_words:
            text = text.split(word)[0]
        if self.template.answer_after:
            text = text.split(self.template.answer_after)[-1]
        return text.strip()

    def final(self, token_ids: Sequence[int], stops: Sequence[str] = ()) -> str:
        """The answer's text: :meth:`decode`, cut before the first of ``stops``."""
        return cut_at_stop(self.decode(token_ids), stops).strip()


def _partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins one of ``stops``."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class VisibleText:
    """One streaming answer's text so far: tokens in, the text that can be shown out.

    Held back: a trailing "#" and half a UTF-8 character, trailing spaces, and an ending that
    may be the start of one of ``stops``. The final text (:meth:`AnswerDecoder.final`) extends
    what was shown, except where the post-processing restarts the answer (an "Assistant:" inside
    it).
    """

    def __init__(self, decoder: AnswerDecoder, stops: Sequence[str] = ()) -> None:
        self.decoder, self.stops = decoder, tuple(stops)
        self.tokens: list[int] = []
        self.text = ""

    def push(self, token: int) -> bool:
        """Add a generated token; whether the visible :attr:`text` changed."""
        self.tokens.append(token)
        text = cut_at_stop(self.decoder.decode(self.tokens), self.stops)
        text = text.rstrip(HELD_BACK_CHARS).rstrip()
        text = text[: len(text) - _partial_stop_length(text, self.stops)].rstrip()
        changed, self.text = text != self.text, text
        return changed


class Pieces:
    """Texts that grow, as the pieces to append: a stream cannot take text back, so a text that
    does not extend what was sent waits (gives "") until one does."""

    def __init__(self) -> None:
        self.sent = ""

    def next(self, text: str) -> str:
        """The piece of ``text`` not sent yet ("" if none, or if ``text`` does not extend it)."""
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece

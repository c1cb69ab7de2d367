"""A row's answer text as it is generated, and as it is finally returned.

The final text is the Chat's answer (``chat.decode_answer``: the text before the first "###",
after "Assistant:", stripped) cut before the first of the request's ``stop`` strings, which the
OpenAI API leaves out of the answer. While streaming, the visible text is the same function of
the tokens so far, holding back what may still change: a trailing "#" (maybe the start of the
"###" stop word) and half a UTF-8 character, as ``Chat.stream_text`` does, trailing spaces, and
the start of a stop string. The streamed pieces add up to the final text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` before the first occurrence of any of ``stops``."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(ends)] if ends else text


def final_text(decode_answer: Callable[[list[int]], str], tokens: list[int], stops: Sequence[str]):
    return cut_at_stop(decode_answer(tokens), stops).strip()


def _partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins one of ``stops``."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class AnswerStream:
    """Feeds one row's tokens; returns the new text to send after each."""

    def __init__(self, decode_answer: Callable[[list[int]], str], stops: Sequence[str]) -> None:
        self.decode_answer, self.stops = decode_answer, tuple(stops)
        self.tokens: list[int] = []
        self.shown = ""

    def push(self, token: int) -> str:
        self.tokens.append(token)
        text = cut_at_stop(self.decode_answer(self.tokens), self.stops)
        text = text.rstrip("#\ufffd").rstrip()
        held = _partial_stop_length(text, self.stops)
        return self._advance(text[: len(text) - held].rstrip())

    def finish(self, text: str) -> str:
        """What remains to send of the final ``text``."""
        return self._advance(text)

    def _advance(self, text: str) -> str:
        # The Chat's post-processing can change text already shown (an "Assistant:" written
        # inside the answer restarts it); a stream cannot take text back, so it waits.
        if len(text) <= len(self.shown) or not text.startswith(self.shown):
            return ""
        delta, self.shown = text[len(self.shown) :], text
        return delta

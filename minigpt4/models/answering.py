"""One call from a conversation to its answer, for every client of the model.

:class:`Answerer` (``model.answer``, ``model.answer_batch``) does the whole sequence: it opens the
Assistant's turn and builds the prompt with the conversation's template, encodes the images that
are not encoded yet (all of a batch in one ``encode_img`` call), embeds each context once, fits it
to ``max_length`` (the original's left truncation, logged), generates (one
``generate_from_embeddings`` call for the batch, each row with its own settings and stops) and
turns the tokens into the answer's text, streamed with the hold-back of
:class:`~minigpt4.models.answer_text.VisibleText`. The Chat (the original's v1 and HEAD methods),
the demo, the batch command, the evaluator, the lmms-eval plugin and the HTTP server's batcher all
answer through it.

Before generating, :meth:`Answerer.context_length` counts a conversation's context (text tokens
and image tokens) without embedding it, and :func:`fit` is the refusal rule of clients that
refuse instead of truncating (the server: :class:`ContextTooLong`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from queue import Queue
from typing import Any

import torch

from minigpt4.models import prompt as assembly
from minigpt4.models.answer_text import AnswerDecoder, VisibleText, stop_word_ids
from minigpt4.models.generation import Generation, GenerationSettings, StopRule

logger = logging.getLogger(__name__)

TRUNCATION_WARNING = (
    "Warning: The number of tokens in current conversation exceeds the max length. "
    "The model will not see the contexts outside the range."
)


def truncate(embs: torch.Tensor, max_new_tokens: int, max_length: int) -> torch.Tensor:
    """The original's left truncation: keep room for ``max_new_tokens`` within ``max_length``.

    It cuts embeddings, not tokens, and may cut the BOS and the system text; a warning says so.
    """
    current_max_len = embs.shape[1] + max_new_tokens
    if current_max_len - max_length > 0:
        logger.warning(TRUNCATION_WARNING)
    begin_idx = max(0, current_max_len - max_length)
    return embs[:, begin_idx:]


class ContextTooLong(ValueError):
    """A context of ``length`` tokens leaves no room within ``max_length`` for an answer, or for
    the ``asked`` answer length (None: for any answer)."""

    def __init__(self, length: int, max_length: int, asked: int | None = None) -> None:
        self.length, self.max_length, self.asked = length, max_length, asked
        what = "an answer" if asked is None else f"an answer of {asked} tokens"
        super().__init__(
            f"the context is {length} tokens and the model takes at most {max_length} with "
            f"its answer: no room for {what}"
        )

    @property
    def room(self) -> int:
        """How many answer tokens fit after the context."""
        return self.max_length - self.length


def fit(length: int, settings: GenerationSettings, asked: int | None = None) -> GenerationSettings:
    """``settings`` for a context of ``length`` tokens that must not be cut: the answer length
    ``asked``, or (None) the settings' own or what room is left, whichever is less. Raises
    :class:`ContextTooLong` if the context, or it with ``asked`` tokens, exceeds ``max_length``."""
    room = settings.max_length - length
    if room < 1:
        raise ContextTooLong(length, settings.max_length)
    if asked is not None and asked > room:
        raise ContextTooLong(length, settings.max_length, asked)
    return settings.replace(
        max_new_tokens=asked if asked is not None else min(settings.max_new_tokens, room)
    )


@dataclass(frozen=True, eq=False)
class CancellableStop(StopRule):
    """A stop rule that also ends the row once ``cancelled`` is set."""

    cancelled: threading.Event = field(default_factory=threading.Event)

    def stops(self, ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> bool:
        return self.cancelled.is_set() or super().stops(ids, decode)


@dataclass
class Question:
    """One answer to generate.

    ``conversation``: a ``Conversation`` ending with the user's question (the Assistant's turn is
    opened, and then filled with the answer, here); ``images``: one per image placeholder, each
    processed pixels [1, 3, H, W] or already image embeddings [1, T, H]; ``stop``: strings that
    end the answer and are left out of it; ``on_text(text)``: the visible text so far, each time
    it changes (from the generating thread); ``cancelled``: set, the row stops at its next token.
    """

    conversation: Any
    images: Sequence[torch.Tensor]
    settings: GenerationSettings
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None
    cancelled: threading.Event | None = None

    def __post_init__(self) -> None:
        self.stop = tuple(s for s in self.stop if s)  # "" would end every answer at once


@dataclass(frozen=True)
class Answer:
    """An answer's text (stored in its conversation too), its token ids, why it ended
    (``"stop"`` or ``"length"``) and the length of its context before any truncation."""

    text: str
    tokens: list[int]
    finish_reason: str
    context_length: int


class Answerer:
    """Answers conversations in ``template`` (a ``ChatTemplate``) with ``model``.

    ``stop_rule`` defaults to the template's stop words (every encoding the tokenizer has) and
    the model's end-of-sequence ids; ``extra``: more transformers stopping criteria, applied as
    they are.
    """

    def __init__(
        self,
        model: Any,
        template: Any,
        stop_rule: StopRule | None = None,
        extra: Sequence[Any] = (),
    ) -> None:
        self.model, self.template, self.extra = model, template, tuple(extra)
        if stop_rule is None:
            tokenizer = model.llama_tokenizer
            words = template.stop_words
            sequences = tuple(tuple(ids) for w in words for ids in stop_word_ids(tokenizer, w))
            stop_rule = StopRule(sequences=sequences, end_ids=model.end_token_ids)
        self.stop_rule = stop_rule
        self.decoder = AnswerDecoder(model.llama_tokenizer, template, stop_rule.end_ids)

    # --- the context -----------------------------------------------------------------------------

    def open(self, conv: Any) -> str:
        """Open the Assistant's turn of ``conv`` (unless it is open: an answer tried again);
        the prompt the LLM answers."""
        if not conv.messages or conv.messages[-1] != [conv.roles[1], None]:
            conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def _is_embedding(self, image: Any) -> bool:
        """Whether ``image`` is an image embedding [1, T, H] (H: the LLM's width)."""
        width = self.model.llama_proj.out_features
        return isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[-1] == width

    def _is_pixels(self, image: Any) -> bool:
        """Whether ``image`` is one processed image [1, 3, H, W]; else, and not an embedding
        either, an error saying what an image may be."""
        if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] == 1:
            return True
        if self._is_embedding(image) and image.shape[0] == 1:
            return False
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            "an image of a conversation to answer is one processed image [1, 3, H, W] or its "
            f"embedding [1, tokens, {self.model.llama_proj.out_features}]; got {got}"
        )

    def _image_length(self, image: Any) -> int:
        return image.shape[1] if self._is_embedding(image) else self.model.image_token_count

    def context_length(self, conv: Any, images: Sequence[Any]) -> int:
        """How many embeddings the LLM gets for ``conv``'s next answer, before any truncation:
        its text tokens and image tokens, counted without embedding (``conv`` is not changed)."""
        seg_ids = self.model.segment_ids(self.open(conv.copy()))
        assembly.check_image_count(seg_ids, len(images))
        return sum(map(len, seg_ids)) + sum(self._image_length(image) for image in images)

    def _image_embeddings(self, questions: Sequence[Question]) -> list[list[torch.Tensor]]:
        """Every question's images as embeddings; the pixels of all in one ``encode_img`` call."""
        is_pixels = [[self._is_pixels(im) for im in q.images] for q in questions]
        pixels = [
            im for q, kinds in zip(questions, is_pixels) for im, p in zip(q.images, kinds) if p
        ]
        encoded = iter(())
        if pixels:
            encoded = iter(self.model.encode_img(torch.cat(pixels).to(self.model.device))[0])
        return [
            [next(encoded)[None] if p else im for im, p in zip(q.images, kinds)]
            for q, kinds in zip(questions, is_pixels)
        ]

    def _context(self, question: Question, images: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """The context embeddings of ``question`` (computed once), cut to fit, and their length."""
        context = self.model.get_context_emb(self.open(question.conversation), images)
        settings = question.settings
        return truncate(context, settings.max_new_tokens, settings.max_length), context.shape[1]

    @torch.no_grad()
    def context(self, conv: Any, images: Sequence[torch.Tensor], settings: GenerationSettings):
        """Open ``conv``'s Assistant turn; its context embeddings [1, L, H], cut to fit."""
        question = Question(conv, images, settings)
        return self._context(question, self._image_embeddings([question])[0])[0]

    # --- answers ---------------------------------------------------------------------------------

    def _rule(self, question: Question) -> StopRule:
        rule, strings = self.stop_rule, tuple(question.stop)
        if question.cancelled is None:
            return StopRule(rule.sequences, rule.strings + strings, rule.end_ids)
        return CancellableStop(
            rule.sequences, rule.strings + strings, rule.end_ids, cancelled=question.cancelled
        )

    @torch.no_grad()
    def answer_batch(self, questions: Sequence[Question]) -> list[Answer | Exception]:
        """Answers to ``questions``, generated together (see the module docstring).

        A question whose context cannot be built (e.g. images and placeholders that do not
        match) gets its exception in its place and the others go on; a failure of the image
        encoding or of generation is raised."""
        embedded = self._image_embeddings(questions)
        results: list[Answer | Exception | None] = [None] * len(questions)
        rows: list[tuple[int, torch.Tensor, int]] = []
        for i, (question, images) in enumerate(zip(questions, embedded)):
            try:
                rows.append((i, *self._context(question, images)))
            except Exception as exc:  # this row fails alone
                results[i] = exc
        if rows:
            generated = self._generate([questions[i] for i, _, _ in rows], [c for _, c, _ in rows])
            for (i, _, length), result in zip(rows, generated):
                results[i] = self._finish(questions[i], result, length)
        return results

    def _generate(
        self, questions: list[Question], contexts: list[torch.Tensor]
    ) -> list[Generation]:
        texts = [VisibleText(self.decoder, q.stop) for q in questions]

        def on_token(row: int, token: int) -> None:
            if texts[row].push(token) and questions[row].on_text is not None:
                questions[row].on_text(texts[row].text)

        streams = any(q.on_text is not None for q in questions)
        return self.model.generate_from_embeddings(
            contexts,
            [q.settings for q in questions],
            [self._rule(q) for q in questions],
            on_token=on_token if streams else None,
            extra=self.extra,
        )

    def _finish(self, question: Question, result: Generation, length: int) -> Answer:
        text = self.decoder.final(result.tokens, question.stop)
        question.conversation.messages[-1][1] = text
        return Answer(text, result.tokens, result.finish_reason, length)

    def answer(
        self,
        conv: Any,
        images: Sequence[torch.Tensor],
        settings: GenerationSettings,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """The answer to ``conv`` (stored in it); errors are raised. ``on_text``: see
        :class:`Question`."""
        (result,) = self.answer_batch([Question(conv, images, settings, on_text=on_text)])
        if isinstance(result, Exception):
            raise result
        return result

    def stream(
        self, conv: Any, images: Sequence[torch.Tensor], settings: GenerationSettings
    ) -> Iterator[str]:
        """Like :meth:`answer`, yielding the answer's visible text so far each time it changes;
        the last value is the final answer. Beam search cannot stream: one value then."""
        if settings.num_beams > 1:
            yield self.answer(conv, images, settings).text
            return
        texts: Queue[str | None] = Queue()
        outcome: list[Answer | BaseException] = []

        def run() -> None:
            try:
                outcome.append(self.answer(conv, images, settings, texts.put))
            except BaseException as exc:  # handed to the consumer below
                outcome.append(exc)
            texts.put(None)

        thread = threading.Thread(target=run, name="minigpt4-generate", daemon=True)
        thread.start()
        shown = ""
        while (text := texts.get()) is not None:
            shown = text
            yield text
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        if outcome[0].text != shown:
            yield outcome[0].text

"""The Chat: conversations in, answers out, through the model's single generation path.

The Chat keeps what is the chat's own: the conversation template, stop words, the original's
left truncation of long conversations, streaming and answer post-processing. Turning the prompt
and images into embeddings, and generating, are the model's (:meth:`MiniGPT4.get_context_emb`,
:meth:`MiniGPT4.generate`). What differs from the original, on purpose:

- stop words are computed from the tokenizer (not hard-coded LLaMA ids) and checked for every
  row of a batch (the original looked at row 0 only);
- transformers 5 ``generate(inputs_embeds=...)`` returns only the new tokens, so the original's
  "strip a leading 0, then a leading 1" step is not done (it would eat a real token); a trailing
  end-of-sequence or padding token is removed before decoding;
- ``do_sample``, ``top_p`` and a ``seed`` are settings; answers can be streamed; questions about
  many images are answered in one batch (:meth:`Chat.answer_batch`);
- the over-length warning is logged instead of printed; images are read by the project's one
  image loader (8-bit RGB from any bit depth, size-checked).

Both of the original's Python APIs work on this one class: v1's (``upload_img`` encodes at once,
``answer`` returns ``(text, token array)``) and HEAD's (``stopping_criteria=`` in the
constructor, ``encode_img``, ``answer_prepare`` + ``model_generate``, ``stream_answer`` returning
an iterator of text pieces). :meth:`Chat.stream_text` is the project's own streaming (the whole
answer so far at each step).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from queue import Queue
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteriaList

from minigpt4.conversation.model_template import template_for
from minigpt4.conversation.stopping import criteria_of, split_criteria
from minigpt4.conversation.templates import IMAGE_MESSAGE, ChatTemplate, Conversation
from minigpt4.models.generation import GenerationSettings, StopRule
from minigpt4.models.tokenizer_base import Tokenizer
from minigpt4.processors.image_io import load_image

logger = logging.getLogger(__name__)

TRUNCATION_WARNING = (
    "Warning: The number of tokens in current conversation exceeds the max length. "
    "The model will not see the contexts outside the range."
)


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


def truncate(embs: torch.Tensor, max_new_tokens: int, max_length: int) -> torch.Tensor:
    """The original's left truncation: keep room for ``max_new_tokens`` within ``max_length``.

    It cuts embeddings, not tokens, and may cut the BOS and the system text; a warning says so.
    """
    current_max_len = embs.shape[1] + max_new_tokens
    if current_max_len - max_length > 0:
        logger.warning(TRUNCATION_WARNING)
    begin_idx = max(0, current_max_len - max_length)
    return embs[:, begin_idx:]


class Chat:
    """Runs a MiniGPT-4 model in a conversation (the original's ``Chat``).

    ``vis_processor`` turns a PIL image into a [3, H, W] tensor; ``stopping_criteria`` (the
    original HEAD's argument) replaces the template's stop words; ``template`` defaults to the
    model's (:func:`~minigpt4.conversation.model_template.template_for`: ``model.chat_template``,
    else the one of ``model_type``).
    """

    def __init__(
        self,
        model: Any,
        vis_processor: Any,
        device: str | torch.device = "cuda:0",
        stopping_criteria: StoppingCriteriaList | None = None,
        template: ChatTemplate | None = None,
    ) -> None:
        self.device = device
        self.model = model
        self.vis_processor = vis_processor
        self.template = template or template_for(model)
        if stopping_criteria is None:
            tokenizer = model.llama_tokenizer
            words = self.template.stop_words
            sequences = tuple(tuple(ids) for w in words for ids in stop_word_ids(tokenizer, w))
            self.extra_criteria: tuple = ()
            self.stopping_criteria = criteria_of(sequences)
        else:
            sequences, self.extra_criteria = split_criteria(stopping_criteria)
            self.stopping_criteria = stopping_criteria
        self.stop_rule = StopRule(sequences=sequences, end_ids=model.end_token_ids)

    # --- conversation ----------------------------------------------------------------------------

    def new_conversation(self) -> Conversation:
        """An empty conversation in this chat's template."""
        return self.template.conversation.copy()

    def settings(
        self, settings: GenerationSettings | None = None, **overrides: Any
    ) -> GenerationSettings:
        """``settings`` (default: the template's) with ``overrides`` applied."""
        return (settings or self.template.settings).replace(**overrides)

    def ask(self, text: str, conv: Conversation) -> None:
        """Add a question; right after an image it joins the image message (as the original)."""
        if (
            len(conv.messages) > 0
            and conv.messages[-1][0] == conv.roles[0]
            and conv.messages[-1][1][-6:] == "</Img>"
        ):
            conv.messages[-1][1] = " ".join([conv.messages[-1][1], text])
        else:
            conv.append_message(conv.roles[0], text)

    def process_image(self, image: str | Image.Image | torch.Tensor) -> torch.Tensor:
        """A path, PIL image or tensor as a processed batch [1, 3, H, W] on the chat's device."""
        if isinstance(image, (str, Image.Image)):
            # The shared loader: 16-bit, palette, transparent and huge images handled (the
            # original skipped the RGB conversion of PIL images; RGBA/greyscale ones broke).
            image = self.vis_processor(load_image(image)).unsqueeze(0)
        elif isinstance(image, torch.Tensor):
            image = image.unsqueeze(0) if image.dim() == 3 else image
        else:
            raise TypeError(
                f"an image is a file path, a PIL image or a tensor, not {type(image).__name__}"
            )
        return image.to(self.device)

    def _is_embedding(self, item: Any) -> bool:
        """Whether an ``img_list`` entry is already encoded: [1, tokens, LLM width]."""
        width = self.model.llama_proj.out_features
        return (
            isinstance(item, torch.Tensor)
            and item.dim() == 3
            and item.shape[0] == 1
            and (item.shape[-1] == width)
        )

    @torch.no_grad()
    def _encode(self, image: str | Image.Image | torch.Tensor) -> torch.Tensor:
        image_emb, _ = self.model.encode_img(self.process_image(image))
        return image_emb

    def upload_img(
        self, image: str | Image.Image | torch.Tensor, conv: Conversation, img_list: list
    ) -> str:
        """Encode an image into ``img_list`` and add the image message; returns "Received."."""
        img_list.append(self._encode(image))
        conv.append_message(conv.roles[0], IMAGE_MESSAGE)
        return "Received."

    def encode_img(self, img_list: list) -> None:
        """Encode, in place, every entry of ``img_list`` that is still an image (a path, PIL
        image or image tensor), keeping the order; encoded entries stay as they are.

        The original HEAD's step after ``upload_img`` (which there only stored the image); here
        ``upload_img`` encodes at once, so after it this has nothing left to do.
        """
        for i, item in enumerate(img_list):
            if not self._is_embedding(item):
                img_list[i] = self._encode(item)

    def _embedded(self, img_list: Sequence[Any]) -> Sequence[torch.Tensor]:
        """``img_list`` with every entry encoded (a list is encoded in place, as HEAD did)."""
        if all(self._is_embedding(item) for item in img_list):
            return img_list
        if isinstance(img_list, list):
            self.encode_img(img_list)
            return img_list
        return [item if self._is_embedding(item) else self._encode(item) for item in img_list]

    # --- prompt ----------------------------------------------------------------------------------

    @torch.no_grad()
    def context_length(self, conv: Conversation, img_list: Sequence[torch.Tensor]) -> int:
        """How many embeddings the LLM gets for the conversation's next answer, before the
        left truncation (compare with ``max_length - max_new_tokens``)."""
        conv = conv.copy()
        conv.append_message(conv.roles[1], None)
        return self.get_context_emb(conv, img_list).shape[1]

    @torch.no_grad()
    def get_context_emb(self, conv: Conversation, img_list: Sequence[Any]) -> torch.Tensor:
        """Context embeddings [1, L, H] of ``conv``'s prompt as it stands (the original v1
        Chat's method; the model's :meth:`get_context_emb` takes the prompt text)."""
        return self.model.get_context_emb(conv.get_prompt(), self._embedded(img_list))

    def overflow(
        self,
        conv: Conversation,
        img_list: Sequence[torch.Tensor],
        settings: GenerationSettings | None = None,
    ) -> int:
        """By how many embeddings the next answer's context exceeds its room (``max_length -
        max_new_tokens``): what the left truncation would cut; 0 when it fits."""
        settings = self.settings(settings)
        room = settings.max_length - settings.max_new_tokens
        return max(0, self.context_length(conv, img_list) - room)

    def question_overflow(
        self,
        question: str,
        img_list: Sequence[torch.Tensor],
        settings: GenerationSettings | None = None,
    ) -> int:
        """:meth:`overflow` of a fresh conversation holding only the first image and
        ``question``: above 0, the question can never be answered with its image in view."""
        probe = self.new_conversation()
        probe.append_message(probe.roles[0], IMAGE_MESSAGE)
        self.ask(question, probe)
        return self.overflow(probe, img_list[:1], settings)

    @torch.no_grad()
    def _open_answer(
        self, conv: Conversation, img_list: Sequence[torch.Tensor], settings: GenerationSettings
    ) -> torch.Tensor:
        img_list = self._embedded(img_list)
        conv.append_message(conv.roles[1], None)
        embs = self.get_context_emb(conv, img_list)
        return truncate(embs, settings.max_new_tokens, settings.max_length)

    def decode_answer(self, token_ids: torch.Tensor | Sequence[int]) -> str:
        """The original's post-processing: text before the first stop word ("###"), after the
        last "Assistant:" (the template's ``stop_words`` and ``answer_after``)."""
        ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        tokenizer = self.model.llama_tokenizer
        end_ids = set(self.stop_rule.end_ids) | {tokenizer.pad_token_id}
        while ids and ids[-1] in end_ids:  # end of sequence / padding of rows that ended early
            ids.pop()
        text = tokenizer.decode(ids, skip_special_tokens=self.template.skip_special_tokens)
        for word in self.template.stop_words:
            text = text.split(word)[0]
        if self.template.answer_after:
            text = text.split(self.template.answer_after)[-1]
        return text.strip()

    # --- answers ---------------------------------------------------------------------------------

    def _generate(self, embs: torch.Tensor, settings: GenerationSettings, on_token: Any = None):
        (result,) = self.model.generate_from_embeddings(
            [embs], [settings], [self.stop_rule], on_token=on_token, extra=self.extra_criteria
        )
        return result

    def answer(
        self,
        conv: Conversation,
        img_list: Sequence[Any],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> tuple[str, np.ndarray]:
        """Generate the Assistant's reply, store it in ``conv`` and return (text, token ids).

        ``overrides`` are :class:`GenerationSettings` fields (the original's ``max_new_tokens``,
        ``num_beams``, ``min_length``, ``top_p``, ``repetition_penalty``, ``length_penalty``,
        ``temperature``, ``max_length``, and ``do_sample``, ``top_k``, ``seed``).
        """
        settings = self.settings(settings, **overrides)
        embs = self._open_answer(conv, img_list, settings)
        result = self._generate(embs, settings)
        text = self.decode_answer(result.tokens)
        conv.messages[-1][1] = text
        return text, np.array(result.tokens, dtype=np.int64)

    def answer_prepare(
        self,
        conv: Conversation,
        img_list: Sequence[Any],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """The original HEAD's first half of ``answer``: open the Assistant's turn and return
        the keyword arguments of transformers' ``generate`` for it (the context embeddings cut
        on the left as :meth:`answer` cuts them, the chat's stopping criteria, the settings).
        Pass them to :meth:`model_generate`."""
        settings = self.settings(settings, **overrides)
        if settings.seed is not None:
            raise ValueError(
                "answer_prepare cannot carry a seed (transformers' generate samples from the "
                "global generator): call torch.manual_seed before model_generate, or use answer"
            )
        embs = self._open_answer(conv, img_list, settings)
        return {
            "inputs_embeds": embs,
            "max_new_tokens": settings.max_new_tokens,
            "stopping_criteria": self.stopping_criteria,
            "num_beams": settings.num_beams,
            "do_sample": settings.do_sample,
            "min_length": settings.min_length,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty,
            "length_penalty": settings.length_penalty,
            "temperature": float(settings.temperature),
        }

    def model_generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """transformers' ``generate`` on the LLM (the original HEAD's method): new token ids
        [B, T], which ``model.llama_tokenizer.decode(ids[0], skip_special_tokens=True)`` reads."""
        return self.model.llm_generate(*args, **kwargs)

    def stream_text(
        self,
        conv: Conversation,
        img_list: Sequence[Any],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> Iterator[str]:
        """Like :meth:`answer`, yielding the whole answer text so far each time it grows.

        The last value yielded is the final answer, which is also stored in ``conv``. With beam
        search (which cannot be streamed) the answer comes in one piece.
        """
        settings = self.settings(settings, **overrides)
        if settings.num_beams > 1:
            yield self.answer(conv, img_list, settings)[0]
            return
        embs = self._open_answer(conv, img_list, settings)
        tokens: Queue[int | None] = Queue()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(self._generate(embs, settings, lambda _, t: tokens.put(t)))
            except BaseException as exc:  # handed to the consumer below
                outcome.append(exc)
            tokens.put(None)

        thread = threading.Thread(target=run, name="minigpt4-generate", daemon=True)
        thread.start()
        received: list[int] = []
        shown = ""
        while (token := tokens.get()) is not None:
            received.append(token)
            # Hold back a trailing "#" (maybe the start of the "###" stop word) and half a UTF-8
            # character (byte-fallback tokens arrive one byte at a time).
            text = self.decode_answer(received).rstrip("#\ufffd").rstrip()
            if text != shown:
                shown = text
                yield text
        thread.join()
        if outcome and isinstance(outcome[0], BaseException):
            raise outcome[0]
        text = self.decode_answer(outcome[0].tokens)
        conv.messages[-1][1] = text
        if text != shown:
            yield text

    def stream_answer(
        self,
        conv: Conversation,
        img_list: Sequence[Any],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> Iterator[str]:
        """The original HEAD's streaming: an iterator of new pieces of text, which joined make
        the answer (``for piece in chat.stream_answer(...): output += piece``).

        The pieces come from :meth:`stream_text`, so they are post-processed like the answer
        (no "###", nothing after it); the final answer is stored in ``conv``.
        """
        shown = ""
        for text in self.stream_text(conv, img_list, settings, **overrides):
            if text.startswith(shown) and text != shown:
                yield text[len(shown) :]
                shown = text

    def answer_batch(
        self,
        images: torch.Tensor | Sequence[str | Image.Image | torch.Tensor],
        questions: str | Sequence[str],
        settings: GenerationSettings | Sequence[GenerationSettings] | None = None,
        **overrides: Any,
    ) -> list[str]:
        """Answers to one question per image, each in a fresh conversation (upload, ask, answer,
        as the demo asks it), generated together in one batch.

        ``images``: a processed batch [B, 3, H, W] or B paths / PIL images / tensors;
        ``questions``: one for all or B; ``settings``: one for all or B (e.g. per-row seeds).
        """
        if isinstance(images, torch.Tensor):
            batch = images.to(self.device)
        else:
            batch = torch.cat([self.process_image(im) for im in images])
        count = batch.shape[0]
        questions = [questions] * count if isinstance(questions, str) else list(questions)
        if isinstance(settings, GenerationSettings) or settings is None:
            settings = [self.settings(settings, **overrides)] * count
        else:
            settings = [self.settings(s, **overrides) for s in settings]
        if not len(questions) == len(settings) == count:
            raise ValueError(f"{count} images need {count} questions and settings")
        with torch.no_grad():
            image_embs, _ = self.model.encode_img(batch)
        contexts = []
        for image_emb, question, row_settings in zip(image_embs, questions, settings):
            conv = self.new_conversation()
            conv.append_message(conv.roles[0], IMAGE_MESSAGE)
            self.ask(question, conv)
            contexts.append(self._open_answer(conv, [image_emb[None]], row_settings))
        results = self.model.generate_from_embeddings(
            contexts, settings, [self.stop_rule] * count, extra=self.extra_criteria
        )
        return [self.decode_answer(r.tokens) for r in results]

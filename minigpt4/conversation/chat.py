"""The Chat: conversations in, answers out, each answer one call of the model's answerer.

The Chat keeps what is the chat's own: the conversation template (and stop words or stopping
criteria of the caller's), the conversation's turns and images (read, processed, encoded at
upload as v1 did). Every answer (v1's ``answer``, HEAD's ``answer_prepare`` and
``stream_answer``, :meth:`Chat.stream_text`, :meth:`Chat.answer_batch`) is one call of its
:class:`~minigpt4.models.answering.Answerer`, which builds the prompt, embeds the context once,
applies the original's left truncation of long conversations, generates and post-processes the
text. What differs from the original, on purpose:

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

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteriaList

from minigpt4.conversation.model_template import template_for
from minigpt4.conversation.stopping import criteria_of, split_criteria
from minigpt4.conversation.templates import IMAGE_MESSAGE, ChatTemplate, Conversation
from minigpt4.models.answer_text import Pieces, stop_word_ids
from minigpt4.models.answering import TRUNCATION_WARNING, Answerer, Question, truncate
from minigpt4.models.generation import GenerationSettings, StopRule
from minigpt4.processors.image_io import load_image

# Re-exported: their import path before they moved to the model's answering modules.
__all__ = ["TRUNCATION_WARNING", "Chat", "stop_word_ids", "truncate"]


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
            self.answerer = Answerer(model, self.template)
            self.stopping_criteria = criteria_of(self.answerer.stop_rule.sequences)
        else:
            sequences, extra = split_criteria(stopping_criteria)
            rule = StopRule(sequences=sequences, end_ids=model.end_token_ids)
            self.answerer = Answerer(model, self.template, rule, extra)
            self.stopping_criteria = stopping_criteria
        self.stop_rule = self.answerer.stop_rule

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

    def context_length(self, conv: Conversation, img_list: Sequence[Any]) -> int:
        """How many embeddings the LLM gets for the conversation's next answer, before the
        left truncation (compare with ``max_length - max_new_tokens``); counted, not embedded."""
        return self.answerer.context_length(conv, img_list)

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

    def decode_answer(self, token_ids: torch.Tensor | Sequence[int]) -> str:
        """The original's post-processing: text before the first stop word ("###"), after the
        last "Assistant:" (the template's ``stop_words`` and ``answer_after``)."""
        ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        return self.answerer.decoder.decode(ids)

    # --- answers: each one call of the model's answerer ------------------------------------------

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
        result = self.answerer.answer(conv, self._embedded(img_list), settings)
        return result.text, np.array(result.tokens, dtype=np.int64)

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
        embs = self.answerer.context(conv, self._embedded(img_list), settings)
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
        yield from self.answerer.stream(conv, self._embedded(img_list), settings)

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
        pieces = Pieces()
        for text in self.stream_text(conv, img_list, settings, **overrides):
            if piece := pieces.next(text):
                yield piece

    def answer_batch(
        self,
        images: torch.Tensor | Sequence[str | Image.Image | torch.Tensor],
        questions: str | Sequence[str],
        settings: GenerationSettings | Sequence[GenerationSettings] | None = None,
        stop: Sequence[str] = (),
        **overrides: Any,
    ) -> list[str]:
        """Answers to one question per image, each in a fresh conversation (upload, ask, answer,
        as the demo asks it), generated together in one batch.

        ``images``: a processed batch [B, 3, H, W] or B paths / PIL images / tensors;
        ``questions``: one for all or B; ``settings``: one for all or B (e.g. per-row seeds);
        ``stop``: strings that end an answer, left out of it.
        """
        if isinstance(images, torch.Tensor):
            batch = images.to(self.device)
        else:
            batch = torch.cat([self.process_image(im) for im in images])
        count = batch.shape[0]
        texts = [questions] * count if isinstance(questions, str) else list(questions)
        if isinstance(settings, GenerationSettings) or settings is None:
            settings = [self.settings(settings, **overrides)] * count
        else:
            settings = [self.settings(s, **overrides) for s in settings]
        if not len(texts) == len(settings) == count:
            raise ValueError(f"{count} images need {count} questions and settings")
        rows = []
        for pixels, text, row_settings in zip(batch, texts, settings):
            conv = self.new_conversation()
            conv.append_message(conv.roles[0], IMAGE_MESSAGE)
            self.ask(text, conv)
            rows.append(Question(conv, [pixels[None]], row_settings, stop=tuple(stop)))
        results = self.answerer.answer_batch(rows)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [result.text for result in results]

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

from minigpt4.conversation.conversation import (
    IMAGE_MESSAGE,
    STOP_WORD,
    ChatTemplate,
    Conversation,
    chat_template,
)
from minigpt4.models.generation import GenerationSettings, StopRule
from minigpt4.models.tokenizer import LlamaTokenizer
from minigpt4.processors.image_io import load_image

logger = logging.getLogger(__name__)

TRUNCATION_WARNING = (
    "Warning: The number of tokens in current conversation exceeds the max length. "
    "The model will not see the contexts outside the range."
)


def stop_word_ids(tokenizer: LlamaTokenizer, word: str) -> list[list[int]]:
    """Every token-id sequence by which the LLM can write ``word``.

    The original listed two encodings of "###" for the LLaMA vocabulary: one piece ("###") and
    "##" + "#". Those are looked up as pieces; the encodings the tokenizer itself produces, for the
    word after other text and on its own (with SentencePiece's leading "▁"), are added. Sequences
    containing the unknown token (a piece missing from the vocabulary) are left out.
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
        if ids and tokenizer.unk_token_id not in ids and ids not in result:
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

    ``vis_processor`` turns a PIL image into a [3, H, W] tensor; ``template`` defaults to the one
    of the model's ``model_type``.
    """

    def __init__(
        self,
        model: Any,
        vis_processor: Any,
        device: str | torch.device = "cuda:0",
        template: ChatTemplate | None = None,
    ) -> None:
        self.device = device
        self.model = model
        self.vis_processor = vis_processor
        self.template = template or chat_template(model.config.model_type)
        tokenizer = model.llama_tokenizer
        sequences = [ids for w in self.template.stop_words for ids in stop_word_ids(tokenizer, w)]
        self.stop_rule = StopRule(
            sequences=tuple(tuple(s) for s in sequences), end_ids=model.end_token_ids
        )

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

    @torch.no_grad()
    def upload_img(
        self, image: str | Image.Image | torch.Tensor, conv: Conversation, img_list: list
    ) -> str:
        """Encode an image into ``img_list`` and add the image message; returns "Received."."""
        image_emb, _ = self.model.encode_img(self.process_image(image))
        img_list.append(image_emb)
        conv.append_message(conv.roles[0], IMAGE_MESSAGE)
        return "Received."

    # --- prompt ----------------------------------------------------------------------------------

    @torch.no_grad()
    def context_length(self, conv: Conversation, img_list: Sequence[torch.Tensor]) -> int:
        """How many embeddings the LLM gets for the conversation's next answer, before the
        left truncation (compare with ``max_length - max_new_tokens``)."""
        conv = conv.copy()
        conv.append_message(conv.roles[1], None)
        return self.model.get_context_emb(conv.get_prompt(), img_list).shape[1]

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
        conv.append_message(conv.roles[1], None)
        embs = self.model.get_context_emb(conv.get_prompt(), img_list)
        return truncate(embs, settings.max_new_tokens, settings.max_length)

    def decode_answer(self, token_ids: torch.Tensor | Sequence[int]) -> str:
        """The original's post-processing: text before the first "###", after "Assistant:"."""
        ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        tokenizer = self.model.llama_tokenizer
        end_ids = set(self.stop_rule.end_ids) | {tokenizer.pad_token_id}
        while ids and ids[-1] in end_ids:  # end of sequence / padding of rows that ended early
            ids.pop()
        text = tokenizer.decode(ids, skip_special_tokens=self.template.skip_special_tokens)
        return text.split(STOP_WORD)[0].split("Assistant:")[-1].strip()

    # --- answers ---------------------------------------------------------------------------------

    def answer(
        self,
        conv: Conversation,
        img_list: Sequence[torch.Tensor],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> tuple[str, np.ndarray]:
        """Generate the Assistant's reply, store it in ``conv`` and return (text, token ids).

        ``overrides`` are :class:`GenerationSettings` fields (``max_new_tokens``, ``num_beams``,
        ``temperature``, ``max_length``, ``do_sample``, ``seed``, ...).
        """
        settings = self.settings(settings, **overrides)
        embs = self._open_answer(conv, img_list, settings)
        (result,) = self.model.generate([embs], [settings], [self.stop_rule])
        text = self.decode_answer(result.tokens)
        conv.messages[-1][1] = text
        return text, np.array(result.tokens, dtype=np.int64)

    def stream_answer(
        self,
        conv: Conversation,
        img_list: Sequence[torch.Tensor],
        settings: GenerationSettings | None = None,
        **overrides: Any,
    ) -> Iterator[str]:
        """Like :meth:`answer`, yielding the answer text as it grows.

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
                outcome.extend(
                    self.model.generate(
                        [embs], [settings], [self.stop_rule], on_token=lambda _, t: tokens.put(t)
                    )
                )
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
        results = self.model.generate(contexts, settings, [self.stop_rule] * count)
        return [self.decode_answer(r.tokens) for r in results]

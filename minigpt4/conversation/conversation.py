"""Conversation template and the Chat that turns a conversation into an answer.

The strings, roles, separators and the way the prompt and its embeddings are assembled are those
of the original MiniGPT-4 v1 (they are what the released ``llama_proj`` was trained against).
What differs, on purpose:

- Stop words are computed from the tokenizer (not hard-coded LLaMA ids) and checked for every
  sequence in the batch (the original looked at row 0 only), so generation ends when every row
  has produced "###".
- transformers 5 ``generate(inputs_embeds=...)`` returns only the new tokens. The original
  (transformers 4.28) got a one-token placeholder in front and stripped a leading 0 and then a
  leading 1; doing that here would eat a real token, so nothing is stripped.
- A trailing end-of-sequence or padding token is removed before decoding, so "</s>" never shows
  up in an answer (nor in the next turn's prompt).
- ``do_sample``, ``top_p`` and a ``seed`` are arguments; answers can be streamed
  (:meth:`Chat.stream_answer`).
- The over-length warning is logged (``logging.WARNING``) instead of printed; the left
  truncation itself is the original's.
- A PIL image is converted to RGB before the processor (the original skipped that for PIL
  input, so RGBA or greyscale uploads failed).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from enum import Enum, auto
from queue import Queue
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_MESSAGE = "<Img><ImageHere></Img>"
STOP_WORD = "###"
TRUNCATION_WARNING = (
    "Warning: The number of tokens in current conversation exceeds the max length. "
    "The model will not see the contexts outside the range."
)


class SeparatorStyle(Enum):
    """How messages are joined into one prompt string."""

    SINGLE = auto()
    TWO = auto()


@dataclasses.dataclass
class Conversation:
    """A conversation: system text, two roles and the messages exchanged so far."""

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    skip_next: bool = False
    conv_id: Any = None

    def get_prompt(self) -> str:
        """The prompt text; a message whose text is empty/None ends with ``role + ":"``."""
        if self.sep_style == SeparatorStyle.SINGLE:
            ret = self.system + self.sep
            for role, message in self.messages:
                if message:
                    ret += role + ": " + message + self.sep
                else:
                    ret += role + ":"
            return ret
        if self.sep_style == SeparatorStyle.TWO:
            seps = [self.sep, self.sep2]
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(self.messages):
                if message:
                    ret += role + ": " + message + seps[i % 2]
                else:
                    ret += role + ":"
            return ret
        raise ValueError(f"Invalid style: {self.sep_style}")

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def to_gradio_chatbot(self) -> list[list[str | None]]:
        """Messages after ``offset`` as [user, assistant] pairs."""
        ret: list[list[str | None]] = []
        for i, (_, msg) in enumerate(self.messages[self.offset :]):
            if i % 2 == 0:
                ret.append([msg, None])
            else:
                ret[-1][-1] = msg
        return ret

    def copy(self) -> Conversation:
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[role, msg] for role, msg in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            conv_id=self.conv_id,
        )

    def dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": self.messages,
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
            "conv_id": self.conv_id,
        }


CONV_VISION = Conversation(
    system="Give the following image: <Img>ImageContent</Img>. "
    "You will be able to see the image once I provide it to you. Please answer my questions.",
    roles=("Human", "Assistant"),
    messages=[],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)


def stop_word_ids(tokenizer: Any, word: str = STOP_WORD) -> list[list[int]]:
    """Every token-id sequence by which the LLM can write ``word``.

    The original listed two encodings of "###" for the LLaMA vocabulary: one piece ("###") and
    "##" + "#". Those are looked up as pieces; the encodings the tokenizer itself produces, for the
    word after other text and on its own (with SentencePiece's leading "▁"), are added. Sequences
    containing the unknown token (a piece missing from the vocabulary) are left out.
    """
    unk = tokenizer.unk_token_id
    candidates: list[list[int]] = []
    for pieces in ([word], [word[:-1], word[-1]]):
        ids = tokenizer.convert_tokens_to_ids(pieces)
        candidates.append(list(ids))
    anchor = "a"
    anchor_ids = tokenizer(anchor, add_special_tokens=False).input_ids
    after_text = tokenizer(anchor + word, add_special_tokens=False).input_ids
    if after_text[: len(anchor_ids)] == anchor_ids:
        candidates.append(after_text[len(anchor_ids) :])
    candidates.append(tokenizer(word, add_special_tokens=False).input_ids)

    result: list[list[int]] = []
    for ids in candidates:
        if ids and None not in ids and unk not in ids and ids not in result:
            result.append([int(i) for i in ids])
    if not result:
        raise ValueError(f"the tokenizer cannot encode the stop word {word!r}")
    return result


class StopOnTokens(StoppingCriteria):
    """Marks each sequence done once it ends with one of ``stops`` (checked row by row).

    transformers ends generation when every row is done; rows that finished earlier are padded.
    """

    def __init__(self, stops: Sequence[Sequence[int]]):
        self.stops = [torch.tensor(s, dtype=torch.long) for s in stops]

    def __call__(
        self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any
    ) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for stop in self.stops:
            n = stop.numel()
            if input_ids.shape[1] < n:
                continue
            tail = input_ids[:, -n:]
            done |= (tail == stop.to(input_ids.device)).all(dim=1)
        return done


class _TokenQueueStreamer(BaseStreamer):
    """Hands the new token ids of batch row 0 to a consumer thread."""

    def __init__(self) -> None:
        self.queue: Queue[int | None] = Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            # generate() first puts the prompt ids (empty with inputs_embeds); skip them.
            self._prompt_seen = True
            return
        # Each decoding step puts the new token of every row: shape [batch].
        row0 = value[0] if value.dim() > 0 else value
        for token in row0.reshape(-1).tolist():
            self.queue.put(int(token))

    def end(self) -> None:
        self.queue.put(None)


class Chat:
    """Runs a MiniGPT-4 model in a conversation (the original's ``Chat``).

    ``model`` needs ``encode_img(image) -> (embeds [B, Q, H], atts)``, ``llama_model`` and
    ``llama_tokenizer``; ``vis_processor`` turns a PIL image into a [3, H, W] tensor.
    """

    def __init__(self, model: Any, vis_processor: Any, device: str | torch.device = "cuda:0"):
        self.device = device
        self.model = model
        self.vis_processor = vis_processor
        self.stop_words_ids = stop_word_ids(model.llama_tokenizer)
        self.stopping_criteria = StoppingCriteriaList([StopOnTokens(self.stop_words_ids)])
        # One generation at a time: seeded sampling relies on the global torch RNG.
        self._lock = threading.Lock()

    # --- conversation ----------------------------------------------------------------------------

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

    @torch.no_grad()
    def upload_img(
        self, image: str | Image.Image | torch.Tensor, conv: Conversation, img_list: list
    ) -> str:
        """Encode an image (path, PIL image or tensor) into ``img_list``; returns "Received."."""
        if isinstance(image, str):
            raw = Image.open(image).convert("RGB")
            image = self.vis_processor(raw).unsqueeze(0).to(self.device)
        elif isinstance(image, Image.Image):
            # The original skipped the RGB conversion here; an RGBA/greyscale image then broke
            # the processor's normalisation.
            image = self.vis_processor(image.convert("RGB")).unsqueeze(0).to(self.device)
        elif isinstance(image, torch.Tensor):
            if image.dim() == 3:
                image = image.unsqueeze(0)
            image = image.to(self.device)
        else:
            raise TypeError(
                f"upload_img takes a file path, a PIL image or a tensor, not {type(image).__name__}"
            )
        image_emb, _ = self.model.encode_img(image)
        img_list.append(image_emb)
        conv.append_message(conv.roles[0], IMAGE_MESSAGE)
        return "Received."

    # --- prompt ----------------------------------------------------------------------------------

    def segment_ids(self, prompt: str) -> list[list[int]]:
        """Token ids of the text around each image; only the first segment starts with BOS."""
        segments = prompt.split(IMAGE_PLACEHOLDER)
        tokenizer = self.model.llama_tokenizer
        return [
            tokenizer(seg, add_special_tokens=(i == 0)).input_ids for i, seg in enumerate(segments)
        ]

    def get_context_emb(self, conv: Conversation, img_list: list[torch.Tensor]) -> torch.Tensor:
        """Input embeddings of the prompt with the image embeddings put in place of each image."""
        prompt = conv.get_prompt()
        seg_ids = self.segment_ids(prompt)
        if len(seg_ids) != len(img_list) + 1:
            raise ValueError(
                f"the conversation has {len(seg_ids) - 1} image placeholders but "
                f"{len(img_list)} images were uploaded"
            )
        embed = self.model.llama_model.get_input_embeddings()
        device = embed.weight.device
        seg_embs = [embed(torch.tensor([ids], dtype=torch.long, device=device)) for ids in seg_ids]
        mixed: list[torch.Tensor] = []
        for seg, img in zip(seg_embs[:-1], img_list):
            mixed += [seg, img.to(device=device, dtype=seg.dtype)]
        mixed.append(seg_embs[-1])
        return torch.cat(mixed, dim=1)

    # --- generation ------------------------------------------------------------------------------

    @staticmethod
    def truncate(embs: torch.Tensor, max_new_tokens: int, max_length: int) -> torch.Tensor:
        """The original's left truncation: keep room for ``max_new_tokens`` within ``max_length``.

        It cuts embeddings, not tokens, and may cut the BOS and the system text; a warning says so.
        """
        current_max_len = embs.shape[1] + max_new_tokens
        if current_max_len - max_length > 0:
            logger.warning(TRUNCATION_WARNING)
        begin_idx = max(0, current_max_len - max_length)
        return embs[:, begin_idx:]

    def _prepare(
        self, conv: Conversation, img_list: list[torch.Tensor], max_new_tokens: int, max_length: int
    ) -> torch.Tensor:
        conv.append_message(conv.roles[1], None)
        return self.truncate(self.get_context_emb(conv, img_list), max_new_tokens, max_length)

    def generation_kwargs(
        self,
        embs: torch.Tensor,
        max_new_tokens: int = 300,
        num_beams: int = 1,
        min_length: int = 1,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1,
        temperature: float = 1.0,
        do_sample: bool = True,
    ) -> dict[str, Any]:
        """Arguments of ``llama_model.generate`` for context embeddings ``embs`` [B, L, H].

        Sampling-only settings are passed only when sampling, and ``length_penalty`` only with
        beams, so transformers does not warn about unused settings.
        """
        tokenizer = self.model.llama_tokenizer
        kwargs: dict[str, Any] = dict(
            inputs_embeds=embs,
            attention_mask=torch.ones(embs.shape[:2], dtype=torch.long, device=embs.device),
            max_new_tokens=max_new_tokens,
            stopping_criteria=self.stopping_criteria,
            num_beams=num_beams,
            do_sample=do_sample,
            min_length=min_length,
            repetition_penalty=repetition_penalty,
        )
        if tokenizer.pad_token_id is not None:
            kwargs["pad_token_id"] = tokenizer.pad_token_id
        if num_beams > 1:
            kwargs["length_penalty"] = length_penalty
        if do_sample:
            kwargs.update(top_p=top_p, temperature=temperature)
        return kwargs

    def generate(
        self,
        embs: torch.Tensor,
        seed: int | None = None,
        streamer: BaseStreamer | None = None,
        **settings: Any,
    ) -> torch.Tensor:
        """New token ids [B, T] for context embeddings ``embs`` [B, L, H] (rows of equal length).

        ``settings`` are those of :meth:`generation_kwargs`. Rows that end early are padded.
        ``seed`` seeds torch's generator first; one generation runs at a time.
        """
        kwargs = self.generation_kwargs(embs, **settings)
        if streamer is not None:
            kwargs["streamer"] = streamer
        with self._lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            return self.model.llama_model.generate(**kwargs)

    def _strip_end(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Drop trailing end-of-sequence / padding ids (padding fills rows that ended early)."""
        tokenizer = self.model.llama_tokenizer
        generation_config = getattr(self.model.llama_model, "generation_config", None)
        end_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        if generation_config is not None:
            end_ids.add(generation_config.pad_token_id)
        end_ids.discard(None)
        n = token_ids.shape[0]
        while n > 0 and int(token_ids[n - 1]) in end_ids:
            n -= 1
        return token_ids[:n]

    def decode_answer(self, token_ids: torch.Tensor | Sequence[int]) -> str:
        """The original's post-processing: text before the first "###", after "Assistant:"."""
        if not isinstance(token_ids, torch.Tensor):
            token_ids = torch.tensor(list(token_ids), dtype=torch.long)
        token_ids = self._strip_end(token_ids.cpu())
        text = self.model.llama_tokenizer.decode(token_ids, skip_special_tokens=False)
        text = text.split(STOP_WORD)[0]
        return text.split("Assistant:")[-1].strip()

    def answer(
        self,
        conv: Conversation,
        img_list: list[torch.Tensor],
        max_new_tokens: int = 300,
        num_beams: int = 1,
        min_length: int = 1,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1,
        temperature: float = 1.0,
        max_length: int = 2000,
        do_sample: bool = True,
        seed: int | None = None,
    ) -> tuple[str, np.ndarray]:
        """Generate the Assistant's reply, store it in ``conv`` and return (text, token ids)."""
        embs = self._prepare(conv, img_list, max_new_tokens, max_length)
        outputs = self.generate(
            embs,
            seed=seed,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            min_length=min_length,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
            temperature=temperature,
            do_sample=do_sample,
        )
        output_token = outputs[0]
        text = self.decode_answer(output_token)
        conv.messages[-1][1] = text
        return text, output_token.cpu().numpy()

    def stream_answer(
        self,
        conv: Conversation,
        img_list: list[torch.Tensor],
        max_new_tokens: int = 300,
        num_beams: int = 1,
        min_length: int = 1,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1,
        temperature: float = 1.0,
        max_length: int = 2000,
        do_sample: bool = True,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Like :meth:`answer`, yielding the answer text as it grows.

        The last value yielded is the final answer, which is also stored in ``conv``. With beam
        search (which transformers cannot stream) the answer comes in one piece.
        """
        settings = dict(
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            min_length=min_length,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
            temperature=temperature,
            do_sample=do_sample,
        )
        if num_beams > 1:
            text, _ = self.answer(conv, img_list, max_length=max_length, seed=seed, **settings)
            yield text
            return

        embs = self._prepare(conv, img_list, max_new_tokens, max_length)
        streamer = _TokenQueueStreamer()
        error: list[BaseException] = []

        def run() -> None:
            try:
                self.generate(embs, seed=seed, streamer=streamer, **settings)
            except BaseException as exc:  # handed to the consumer below
                error.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="minigpt4-generate", daemon=True)
        thread.start()
        tokens: list[int] = []
        shown = ""
        while True:
            token = streamer.queue.get()
            if token is None:
                break
            tokens.append(token)
            # Hold back a trailing "#" (maybe the start of the "###" stop word) and half a UTF-8
            # character (byte-fallback tokens arrive one byte at a time).
            text = self.decode_answer(tokens).rstrip("#\ufffd").rstrip()
            if text != shown:
                shown = text
                yield text
        thread.join()
        if error:
            raise error[0]
        text = self.decode_answer(tokens)
        conv.messages[-1][1] = text
        if text != shown:
            yield text

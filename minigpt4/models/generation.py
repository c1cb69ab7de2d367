"""Generation from context embeddings: one settings object, per-row stops, sampling and streaming.

Every answer the project produces (the demo's chat, the batch command, benchmark evaluation, the
HTTP server) goes through :func:`generate`, once for a batch of context embeddings. Rows may
differ in length (they are left-padded, as the original's batched ``generate`` does) and in their
own stop rule, answer length, sampling settings, repetition penalty and minimum length:

- greedy and sampled answers run this project's decoding loop (:mod:`.decoding`); each row
  chooses its own token (greedy rows take the arg-max, sampling rows apply temperature, top-k
  and top-p as transformers does and draw with their own seeded generator), so a seeded answer
  does not depend on what else is in the batch; the loop applies each row's repetition penalty
  and minimum length (counted, as transformers counts it, with the row's own context);
- stopping is checked row by row (a stop token sequence, a stop string, end-of-sequence or the
  row's ``max_new_tokens``); a finished row is padded until every row is done;
- beam search (``num_beams`` > 1) runs transformers' ``generate``; all rows share one setting,
  as transformers requires.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from transformers import LogitsProcessor, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from minigpt4.models import decoding

# The prompt comes as embeddings, so a repetition penalty applies to the generated tokens only, as
# in the original; transformers would say so on every answer.
warnings.filterwarnings(
    "ignore", message="Passing `repetition_penalty` with `inputs_embeds`", category=UserWarning
)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate one answer; the defaults are the original ``Chat.answer``'s.

    ``max_length`` bounds context + answer: the chat cuts the context on the left to keep room
    for ``max_new_tokens`` (the original's behaviour). ``seed`` seeds this answer's sampling only.
    """

    max_new_tokens: int = 300
    num_beams: int = 1
    min_length: int = 1
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    temperature: float = 1.0
    do_sample: bool = True
    max_length: int = 2000
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if self.max_length <= self.max_new_tokens:
            problems.append(
                f"max_length ({self.max_length}) must exceed max_new_tokens "
                f"({self.max_new_tokens}): the context needs room"
            )
        if self.num_beams < 1:
            problems.append(f"num_beams must be at least 1 (got {self.num_beams})")
        if self.do_sample and not self.temperature > 0:
            problems.append(f"temperature must be > 0 when sampling (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0 or self.repetition_penalty <= 0:
            problems.append("top_k must be >= 0 and repetition_penalty > 0")
        if problems:
            raise ValueError("generation settings: " + "; ".join(problems))

    def replace(self, **changes: object) -> GenerationSettings:
        """A copy with ``changes``; an unknown name is an error listing the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown generation setting(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StopRule:
    """When a row is finished: one of ``sequences`` (token ids) ends it, or one of ``strings``
    appears in its decoded text, or it writes an id of ``end_ids`` (end of sequence)."""

    sequences: tuple[tuple[int, ...], ...] = ()
    strings: tuple[str, ...] = ()
    end_ids: frozenset[int] = field(default_factory=frozenset)

    def stops(self, ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> bool:
        """Whether the row whose new tokens are ``ids`` is finished now."""
        if not ids:
            return False
        if ids[-1] in self.end_ids:
            return True
        if any(len(ids) >= len(s) and tuple(ids[-len(s) :]) == s for s in self.sequences):
            return True
        return bool(self.strings) and any(s in decode(ids) for s in self.strings)

    def first_stop(self, ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> int | None:
        """Length of the shortest prefix of ``ids`` at which the row is finished, if any."""
        return next((n for n in range(1, len(ids) + 1) if self.stops(ids[:n], decode)), None)


@dataclass(frozen=True)
class Generation:
    """One row's answer: its new token ids (up to and including what stopped it) and why it
    ended (``"stop"`` or ``"length"``)."""

    tokens: list[int]
    finish_reason: str


def left_pad(contexts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Context embeddings ([1, L_i, H] each) as one batch [B, L, H] with its attention mask.

    Shorter rows get zero embeddings on the left, masked out (the original's batched generate).
    """
    rows = [c[0] if c.dim() == 3 else c for c in contexts]
    width = max(r.shape[0] for r in rows)
    first = rows[0]
    embeds = first.new_zeros((len(rows), width, first.shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        embeds[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return embeds, mask


class _RowStops(StoppingCriteria):
    """Per-row stop rules and answer lengths; remembers where each row ended and why."""

    def __init__(self, rules, limits, decode) -> None:
        self.rules, self.limits, self.decode = rules, limits, decode
        self.ended_at: list[int | None] = [None] * len(rules)
        self.reasons: list[str] = [FINISH_LENGTH] * len(rules)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        length = input_ids.shape[1]  # generated tokens only: the prompt came as embeddings
        for row, rule in enumerate(self.rules):
            if self.ended_at[row] is not None:
                continue
            if rule.stops(input_ids[row].tolist(), self.decode):
                self.ended_at[row], self.reasons[row] = length, FINISH_STOP
            elif length >= self.limits[row]:
                self.ended_at[row] = length
        ended = [e is not None for e in self.ended_at]
        return torch.tensor(ended, dtype=torch.bool, device=input_ids.device)


class _BeamStops(StoppingCriteria):
    """With beams transformers asks about every beam: any beam with a stop sequence is done."""

    def __init__(self, rule: StopRule, decode) -> None:
        self.rule, self.decode = rule, decode

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = [self.rule.stops(row.tolist(), self.decode) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowChooser:
    """Chooses each row's next token with the row's own settings and generator: greedy rows
    take the arg-max, sampling rows apply temperature, top-k and top-p as transformers does and
    draw with their own seeded generator (or the global one when unseeded)."""

    def __init__(self, settings: Sequence[GenerationSettings]) -> None:
        self.settings = settings
        self.warpers = [self._warpers(s) for s in settings]
        self.generators: list[torch.Generator | None] | None = None
        self.greedy = not any(s.do_sample for s in settings)

    @staticmethod
    def _warpers(s: GenerationSettings) -> list[LogitsProcessor]:
        """Called one by one, not as a ``LogitsProcessorList``: the list inspects each
        processor's signature on every call (a tenth of a tiny model's answer time)."""
        warpers = []  # transformers' order: temperature, top-k, top-p
        if s.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(s.temperature))
        if s.top_k:
            warpers.append(TopKLogitsWarper(top_k=s.top_k))
        if s.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=s.top_p))
        return warpers

    def _generator(self, seed: int | None, device: torch.device) -> torch.Generator | None:
        return None if seed is None else torch.Generator(device=device).manual_seed(seed)

    def __call__(self, ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if self.greedy:
            return scores.argmax(dim=-1)
        if self.generators is None:
            self.generators = [self._generator(s.seed, scores.device) for s in self.settings]
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for row, s in enumerate(self.settings):
            row_scores = scores[row : row + 1]
            if not s.do_sample:
                chosen[row] = row_scores.argmax(dim=-1)[0]
                continue
            warped = row_scores
            for warper in self.warpers[row]:
                warped = warper(ids[row : row + 1], warped)
            probs = torch.softmax(warped.float(), dim=-1)
            chosen[row] = torch.multinomial(probs, 1, generator=self.generators[row])[0, 0]
        return chosen


class _RowStreamer:
    """Hands each row's new tokens to ``on_token(row, token)``, nothing after the row ended."""

    def __init__(self, stops: _RowStops, on_token: Callable[[int, int], None]) -> None:
        self.stops, self.on_token = stops, on_token
        self.received = [0] * len(stops.rules)

    def __call__(self, tokens: torch.Tensor) -> None:
        for row, token in enumerate(tokens.tolist()):
            ended_at = self.stops.ended_at[row]
            if ended_at is None or self.received[row] < ended_at:
                self.received[row] += 1
                self.on_token(row, int(token))


def _batch_setting(settings: Sequence[GenerationSettings], name: str) -> object:
    values = {getattr(s, name) for s in settings}
    if len(values) > 1:
        raise ValueError(f"rows generated together must share {name}; got {sorted(values)}")
    return values.pop()


def _beam_sampling_kwargs(settings: Sequence[GenerationSettings]) -> dict:
    if not any(s.do_sample for s in settings):
        # Neutral values: an LLM folder's own sampling defaults (Llama-2-chat: temperature 0.6,
        # top_p 0.9) would otherwise be reported as unused on every greedy answer.
        return {"do_sample": False, "temperature": 1.0, "top_p": 1.0}
    kwargs = {name: _batch_setting(settings, name) for name in ("temperature", "top_k", "top_p")}
    seed = _batch_setting(settings, "seed")
    if seed is not None:
        torch.manual_seed(seed)  # beam sampling draws from the global generator
    return {"do_sample": True, **kwargs}


def _beam_search(llm, embeds, mask, settings, rule, decode, pad_token_id, extra, suppressed):
    """transformers' beam search (all rows share their settings and their stop rule)."""
    kwargs = {
        name: _batch_setting(settings, name)
        for name in ("min_length", "repetition_penalty", "length_penalty", "num_beams")
    }
    if suppressed:
        kwargs["suppress_tokens"] = suppressed
    return llm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max(s.max_new_tokens for s in settings),
        stopping_criteria=StoppingCriteriaList([_BeamStops(rule, decode), *extra]),
        pad_token_id=pad_token_id,
        **kwargs,
        **_beam_sampling_kwargs(settings),
    )


def generate(
    llm: nn.Module,
    contexts: Sequence[torch.Tensor],
    settings: Sequence[GenerationSettings],
    rules: Sequence[StopRule],
    decode: Callable[[Sequence[int]], str],
    pad_token_id: int,
    on_token: Callable[[int, int], None] | None = None,
    extra: Sequence[StoppingCriteria] = (),
    vocab_size: int | None = None,
) -> list[Generation]:
    """Answers for ``contexts`` (one [1, L_i, H] embedding tensor per row), one row each.

    ``settings`` and ``rules`` are per row; ``decode`` turns token ids into text (for stop
    strings); ``on_token(row, token)`` receives tokens as they are generated (not with beams);
    ``extra``: a caller's own stopping criteria, applied as transformers applies them.
    ``vocab_size``: the tokenizer's; ids at or above it (an embedding with more rows than the
    tokenizer has pieces, as Vicuna-13B v1.1's 32,001 for 32,000) are never generated.
    """
    embeds, mask = left_pad(contexts)
    limits = [s.max_new_tokens for s in settings]
    rows = llm.get_output_embeddings().weight.shape[0]
    suppressed_from = vocab_size if vocab_size is not None and rows > vocab_size else None
    if _batch_setting(settings, "num_beams") > 1:
        if len(set(rules)) > 1:
            raise ValueError("rows generated together with beam search must share their stops")
        suppressed = list(range(suppressed_from, rows)) if suppressed_from is not None else []
        out = _beam_search(
            llm, embeds, mask, settings, rules[0], decode, pad_token_id, extra, suppressed
        )
        return [
            _beam_result(out[row].tolist(), rule, decode, limits[row])
            for row, rule in enumerate(rules)
        ]
    row_stops = _RowStops(rules, limits, decode)
    score_rules = decoding.ScoreRules(
        [s.repetition_penalty for s in settings],
        # transformers counts a minimum length with the context (given as embeddings) in it;
        # each row counts its own, so that its answer does not depend on its batch's padding
        [max(s.min_length - c.shape[1], 0) for s, c in zip(settings, contexts, strict=True)],
        llm.generation_config.eos_token_id,
        suppressed_from,
    )
    streamer = _RowStreamer(row_stops, on_token) if on_token is not None else None
    out = decoding.decode(
        llm,
        embeds,
        mask,
        max(limits),
        score_rules,
        _RowChooser(settings),
        [row_stops, *extra],
        streamer,
        pad_token_id,
    )
    return [
        Generation(out[row].tolist()[: row_stops.ended_at[row]], row_stops.reasons[row])
        for row in range(len(rules))
    ]


def _beam_result(ids: list[int], rule: StopRule, decode, limit: int) -> Generation:
    end = rule.first_stop(ids, decode)
    return Generation(ids[: end or limit], FINISH_LENGTH if end is None else FINISH_STOP)

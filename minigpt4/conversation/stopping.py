"""The original's ``StoppingCriteriaSub`` and how a caller's stopping criteria become a stop rule.

Code written for the original builds ``StoppingCriteriaList([StoppingCriteriaSub(stops=[...])])``
with token-id tensors (VLMEvalKit: ``[[835], [2277, 29937]]``, the two encodings of "###") and
hands it to ``Chat(..., stopping_criteria=...)``. The chat honours it: each
``StoppingCriteriaSub``'s sequences become its :class:`~minigpt4.models.generation.StopRule`
(checked per row), and any other criterion is called at each step as transformers calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


class StoppingCriteriaSub(StoppingCriteria):
    """Stops a row once its generated ids end with one of ``stops`` (token-id tensors or lists).

    The original checked ``torch.all`` over the batch (every row had to end with the sequence,
    and a sequence longer than the ids so far was compared by broadcasting); here each row is
    checked on its own, which is the same for the one-row batches the original's Chat makes.
    ``encounters`` is accepted and unused, as in the original.
    """

    def __init__(self, stops: Sequence[torch.Tensor | Sequence[int]] = (), encounters: int = 1):
        super().__init__()
        self.stops = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in stops]
        self.encounters = encounters

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for stop in self.stops:
            if 0 < len(stop) <= input_ids.shape[1]:
                tail = input_ids[:, -len(stop) :]
                done |= (tail == stop.to(input_ids.device)).all(dim=1)
        return done

    def sequences(self) -> list[tuple[int, ...]]:
        """The stop sequences as tuples of ids."""
        return [tuple(int(i) for i in s.tolist()) for s in self.stops if len(s)]


def split_criteria(
    criteria: Iterable[StoppingCriteria],
) -> tuple[tuple[tuple[int, ...], ...], tuple[StoppingCriteria, ...]]:
    """(stop sequences of the ``StoppingCriteriaSub`` entries, every other criterion)."""
    sequences: list[tuple[int, ...]] = []
    others: list[StoppingCriteria] = []
    for criterion in criteria:
        if isinstance(criterion, StoppingCriteriaSub):
            sequences += [s for s in criterion.sequences() if s not in sequences]
        elif isinstance(criterion, StoppingCriteria):
            others.append(criterion)
        else:
            raise TypeError(
                "stopping_criteria must hold transformers StoppingCriteria (for example "
                f"StoppingCriteriaSub(stops=[...])), not {type(criterion).__name__}"
            )
    return tuple(sequences), tuple(others)


def criteria_of(sequences: Iterable[Sequence[int]]) -> StoppingCriteriaList:
    """A ``StoppingCriteriaList`` that stops at any of ``sequences`` (what ``answer_prepare``
    hands to ``generate`` when the caller gave no criteria of its own)."""
    return StoppingCriteriaList([StoppingCriteriaSub(stops=[list(s) for s in sequences])])

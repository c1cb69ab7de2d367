"""Ask every item once, in fixed batches, recording answers as they come (resumable)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tqdm import tqdm

from minigpt4.evaluation.items import Item
from minigpt4.evaluation.resume import AnswerLog

logger = logging.getLogger(__name__)

Asker = Callable[[list[Item]], list[str]]


def check_unique(items: Sequence[Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"two benchmark items share the id {item.id!r}")
        seen.add(item.id)


def answer_all(
    items: Sequence[Item], ask: Asker, log: AnswerLog, batch_size: int, progress: bool = True
) -> list[str]:
    """The prediction for every item, in order.

    Batches are fixed slices of ``items`` (not of what is left), and a batch is recorded only
    once all its answers are in: a resumed run asks exactly the batches an uninterrupted run
    would have asked, so its answers are the same.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    check_unique(items)
    todo = sum(item.id not in log.answers for item in items)
    logger.info("%d of %d questions to ask", todo, len(items))
    bar = tqdm(total=todo, unit="q", disable=not progress or todo == 0)
    for start in range(0, len(items), batch_size):
        batch = [it for it in items[start : start + batch_size] if it.id not in log.answers]
        if not batch:
            continue
        predictions = ask(batch)
        if len(predictions) != len(batch):
            raise RuntimeError(f"asked {len(batch)} questions, got {len(predictions)} answers")
        log.add([it.id for it in batch], predictions)
        bar.update(len(batch))
    bar.close()
    return [log.answers[item.id] for item in items]

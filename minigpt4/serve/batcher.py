"""Request batching: answers asked for while the model is busy are generated together.

One worker thread owns the model. It takes the oldest waiting job and every job already waiting
(up to ``max_batch_size``), and waits, up to ``max_wait_s``, for requests still being prepared
(announced, see :meth:`Batcher.announce`: their images decoded) and, right after a batch, for as
many requests as that batch had rows: clients whose answers just went out tend to send their next
request at once, and a batch started before they are back splits them into a small batch and a
large one from then on. A request that comes to an idle batcher starts at once.

A job is a conversation (built through the Chat) and its processed images, and a batch is one
call of ``model.answer_batch`` (:class:`~minigpt4.models.answering.Answerer`), the model's one
entry for answers: it builds each row's prompt, encodes the images of the whole batch together,
embeds each row's context once and generates the batch in one ``generate_from_embeddings``
call, each row with its own stops, answer length and sampling settings (and seed), streaming
each row's visible text. Every row keeps its own settings (sampling, seed, repetition penalty,
minimum length: the decoding loop applies them per row); only beam-search rows run alone, one
after the other (transformers' beam search takes one set of settings, beams cannot stream, and
rows with beams must share their stops).

A job can be cancelled (its client went away): before it starts it is dropped, while it runs
its stop rule ends it at its next token, so it stops taking batch time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from minigpt4.models.answering import Answer, Question
from minigpt4.models.generation import GenerationSettings
from minigpt4.serve.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_S

logger = logging.getLogger(__name__)

_POLL_S = 0.002


class Cancelled(Exception):
    """The job was cancelled before it was generated."""


@dataclass(eq=False)
class Job:
    """One answer to generate (``question``); ``on_done`` gets the
    :class:`~minigpt4.models.answering.Answer` or the exception that ended it."""

    question: Question
    on_done: Callable[[Answer | BaseException], None]
    streamed: bool = False  # text reached the client: the row cannot be generated again

    def cancel(self) -> None:
        self.question.cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self.question.cancelled.is_set()


def _stream_to(job: Job, on_text: Callable[[str], None], text: str) -> None:
    """Hand a row's visible text to its client; a client's failure cancels its row only."""
    job.streamed = True
    if job.cancelled:
        return
    try:
        on_text(text)
    except Exception:  # one client's failure must not end the other rows
        logger.exception("streaming an answer failed; the row is cancelled")
        job.cancel()


@dataclass
class Stats:
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    cancelled: int = 0  # rows whose client went away before or while they were generated


def group_key(job: Job) -> tuple:
    return (id(job),) if job.question.settings.num_beams > 1 else ()


def groups(jobs: Sequence[Job]) -> list[list[Job]]:
    """``jobs`` split into rows that can be generated together, in order of arrival."""
    out: dict[tuple, list[Job]] = {}
    for job in jobs:
        out.setdefault(group_key(job), []).append(job)
    return list(out.values())


class Batcher:
    """Runs :class:`Job` s in batches (see the module docstring) on ``model``: anything with
    ``answer_batch(questions)``, a model or a Chat's answerer."""

    def __init__(
        self,
        model: Any,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(
                f"max batch size must be >= 1 and max wait >= 0 (got {max_batch_size}, "
                f"{max_wait_s})"
            )
        self.model, self.max_batch_size, self.max_wait_s = model, max_batch_size, max_wait_s
        self.stats = Stats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._announced = 0  # requests being prepared (see announce)
        self._returning = 0  # rows of the last batch, while their clients may come back
        self._delivered_at = float("-inf")

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="minigpt4-batcher", daemon=True)
            self._worker.start()

    def close(self, timeout_s: float = 30) -> None:
        """Finish what is queued, then stop the worker."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout_s)
            self._worker = None

    def submit(
        self,
        conversation: Any,
        images: Sequence[torch.Tensor],
        settings: GenerationSettings,
        on_done: Callable[[Answer | BaseException], None],
        on_text: Callable[[str], None] | None = None,
        stop: Sequence[str] = (),
    ) -> Job:
        """Queue the answer to ``conversation`` (ending with the question) about ``images``
        (processed, [1, 3, H, W] each); ``on_text(text)`` gets its visible text as it grows
        (from the worker thread), ``stop``: strings that end it. Thread-safe. Returns the job
        (to cancel it)."""
        question = Question(
            conversation, list(images), settings, tuple(stop), cancelled=threading.Event()
        )
        job = Job(question, on_done)
        if on_text is not None:
            question.on_text = functools.partial(_stream_to, job, on_text)
        self._queue.put(job)
        return job

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def announce(self) -> Iterator[None]:
        """Around preparing a request that will be submitted: while any is announced, a batch
        being gathered waits for it (up to ``max_wait_s``)."""
        with self._lock:
            self._announced += 1
        try:
            yield
        finally:
            with self._lock:
                self._announced -= 1

    # --- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while (batch := self._gather()) is not None:
            for group in groups(batch):
                self._run(group)
            self._returning, self._delivered_at = len(batch), time.monotonic()

    def _gather(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        now = time.monotonic()
        deadline = now + self.max_wait_s
        # Right after a batch, its clients are expected back; after a pause, no one is.
        returning = self._returning if now - self._delivered_at < self.max_wait_s else 0
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                now = time.monotonic()
                # Wait only for requests on their way (being prepared or coming back): a request
                # to an idle batcher starts at once, and none waits longer than max_wait_s.
                if now >= deadline or (self._announced == 0 and len(batch) >= returning):
                    break
                try:
                    job = self._queue.get(timeout=min(deadline - now, _POLL_S))
                except queue.Empty:
                    continue
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(job)
        live = []
        for job in batch:
            if job.cancelled:
                self.stats.cancelled += 1
                _deliver(job, Cancelled("cancelled before it was generated"))
            else:
                live.append(job)
        return live

    def _run(self, jobs: list[Job]) -> None:
        """Answer ``jobs`` together; if that fails, each row that has not streamed anything
        yet is tried again alone, so one bad row fails alone (a row that has streamed text
        cannot be replayed and gets the error)."""
        results = self._answer(jobs)
        if isinstance(results, BaseException):
            results = self._one_by_one(jobs, results)
        self.stats.batches += 1
        self.stats.rows += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        self.stats.cancelled += sum(job.cancelled for job in jobs)
        for job, result in zip(jobs, results):
            if isinstance(result, Exception):
                logger.error("a row failed: %s: %s", type(result).__name__, result)
            _deliver(job, result)

    def _one_by_one(self, jobs: list[Job], error: BaseException) -> list[Any]:
        """After ``jobs`` failed together: each row that streamed nothing yet, alone."""
        if len(jobs) == 1:
            return [error]
        logger.warning("a batch of %d failed; its rows are tried one by one", len(jobs))
        results: list[Any] = []
        for job in jobs:
            alone = error if job.streamed else self._answer([job])
            results.append(alone if isinstance(alone, BaseException) else alone[0])
        return results

    def _answer(self, jobs: list[Job]) -> list[Answer | Exception] | BaseException:
        """One ``answer_batch`` call for ``jobs``, or the exception it raised."""
        try:
            return self.model.answer_batch([job.question for job in jobs])
        except Exception as exc:  # handed to the waiting requests; the worker goes on
            logger.exception("answering %d row(s) failed", len(jobs))
            return exc


def _deliver(job: Job, result: Answer | BaseException) -> None:
    try:
        job.on_done(result)
    except Exception:  # a callback's failure must not stop the worker
        logger.exception("delivering an answer failed")

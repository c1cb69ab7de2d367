"""Request batching: answers asked for while the model is busy are generated together.

One worker thread owns the model. It takes the oldest waiting job and every job already waiting
(up to ``max_batch_size``), and waits, up to ``max_wait_s``, for requests still being prepared
(announced, see :meth:`Batcher.announce`: their images decoded) and, right after a batch, for as
many requests as that batch had rows: clients whose answers just went out tend to send their next
request at once, and a batch started before they are back splits them into a small batch and a
large one from then on. A request that comes to an idle batcher starts at once.

A job is a prompt (with image placeholders) and its processed images: the images of the whole
batch go through the vision encoder in one ``model.encode_img`` call, each row's context
embeddings are ``model.get_context_emb(prompt, its images)`` (as the Chat computes them), and the
batch runs as one call of ``model.generate_from_embeddings(contexts, settings_per_row,
rules_per_row, on_token=...)``, the model's single generation path: each row keeps its own stop
rule, answer length and sampling settings (and seed). Rows generated together must agree on what
transformers applies to a whole batch (``GenerationSettings.BATCH_FIELDS``: beams, minimum
length, repetition and length penalties), so a gathered batch is split into groups by those, run
one after the other; beam-search rows run alone (beams cannot stream, and rows with beams must
share their stops).

A job can be cancelled (its client went away): before it starts it is dropped, while it runs
its stop rule ends it at its next token, so it stops taking batch time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from minigpt4.models.generation import Generation, GenerationSettings, StopRule
from minigpt4.serve.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_S

logger = logging.getLogger(__name__)

_POLL_S = 0.002


class Cancelled(Exception):
    """The job was cancelled before it was generated."""


@dataclass(frozen=True, eq=False)
class CancellableStop(StopRule):
    """A stop rule that also ends the row once ``cancelled`` is set."""

    cancelled: threading.Event = field(default_factory=threading.Event)

    def stops(self, ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> bool:
        return self.cancelled.is_set() or super().stops(ids, decode)


@dataclass(eq=False)
class Job:
    """One answer to generate: ``prompt`` (the Chat's prompt string, one image placeholder per
    image) and ``images`` (processed, [1, 3, H, W] each). ``on_token(token)`` gets its tokens as
    they come (from the worker thread); ``on_done`` gets the :class:`Generation` or the
    exception that ended it. ``context`` is set by the worker before generation."""

    prompt: str
    images: list[torch.Tensor]
    settings: GenerationSettings
    rule: CancellableStop
    on_done: Callable[[Generation | BaseException], None]
    on_token: Callable[[int], None] | None = None
    context: torch.Tensor | None = None
    streamed: bool = False  # a token reached the client: the row cannot be generated again

    def cancel(self) -> None:
        self.rule.cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self.rule.cancelled.is_set()


@dataclass
class Stats:
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    cancelled: int = 0  # rows whose client went away before or while they were generated


def group_key(job: Job) -> tuple:
    key = tuple(getattr(job.settings, name) for name in GenerationSettings.BATCH_FIELDS)
    return key + ((id(job),) if job.settings.num_beams > 1 else ())


def groups(jobs: Sequence[Job]) -> list[list[Job]]:
    """``jobs`` split into rows that can be generated together, in order of arrival."""
    out: dict[tuple, list[Job]] = {}
    for job in jobs:
        out.setdefault(group_key(job), []).append(job)
    return list(out.values())


class Batcher:
    """Runs :class:`Job` s on ``model`` in batches (see the module docstring)."""

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
        prompt: str,
        images: Sequence[torch.Tensor],
        settings: GenerationSettings,
        rule: StopRule,
        on_done: Callable[[Generation | BaseException], None],
        on_token: Callable[[int], None] | None = None,
    ) -> Job:
        """Queue one answer; thread-safe. Returns the job (to cancel it)."""
        stop = CancellableStop(rule.sequences, rule.strings, rule.end_ids)
        job = Job(prompt, list(images), settings, stop, on_done, on_token)
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
        """Generate ``jobs`` together; if that fails, each row that has not streamed anything
        yet is tried again alone, so one bad row fails alone (a row that has streamed tokens
        cannot be replayed and gets the error)."""
        ready = self._contexts(jobs)
        results = self._generate(ready) if ready else []
        if isinstance(results, BaseException):
            results = self._one_by_one(ready, results)
        self.stats.batches += 1
        self.stats.rows += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        self.stats.cancelled += sum(job.cancelled for job in jobs)
        for job, result in zip(ready, results):
            _deliver(job, result)

    def _one_by_one(self, jobs: list[Job], error: BaseException) -> list[Any]:
        """After ``jobs`` failed together: each row that streamed nothing yet, alone."""
        if len(jobs) == 1:
            return [error]
        logger.warning("a batch of %d failed; its rows are tried one by one", len(jobs))
        results: list[Any] = []
        for job in jobs:
            alone = error if job.streamed else self._generate([job])
            results.append(alone if isinstance(alone, BaseException) else alone[0])
        return results

    def _generate(self, jobs: list[Job]) -> list[Generation] | BaseException:
        """One ``generate_from_embeddings`` call for ``jobs``, or the exception it raised."""

        def on_token(row: int, token: int) -> None:
            job = jobs[row]
            job.streamed = True
            if job.on_token is None or job.cancelled:
                return
            try:
                job.on_token(token)
            except Exception:  # one client's failure must not end the other rows
                logger.exception("streaming a token failed; the row is cancelled")
                job.cancel()

        streams = any(job.on_token is not None for job in jobs)
        try:
            return self.model.generate_from_embeddings(
                [job.context for job in jobs],
                [job.settings for job in jobs],
                [job.rule for job in jobs],
                on_token=on_token if streams else None,
            )
        except Exception as exc:  # handed to the waiting requests; the worker goes on
            logger.exception("generation of %d row(s) failed", len(jobs))
            return exc

    @torch.no_grad()
    def _contexts(self, jobs: list[Job]) -> list[Job]:
        """Every row's context embeddings, the images of all rows encoded together; a row whose
        context cannot be built gets its error now. Returns the rows that are ready."""
        try:
            pixels = [image for job in jobs for image in job.images]
            embeds = self.model.encode_img(torch.cat(pixels))[0] if pixels else None
        except Exception:
            if len(jobs) == 1:
                raise
            logger.exception("encoding the images of %d rows failed; each row alone", len(jobs))
            return [job for one in jobs for job in self._contexts_alone(one)]
        ready, start = [], 0
        for job in jobs:
            own = [embeds[i : i + 1] for i in range(start, start + len(job.images))]
            start += len(job.images)
            try:
                job.context = self.model.get_context_emb(job.prompt, own)
                ready.append(job)
            except Exception as exc:
                logger.exception("the context of a row could not be built")
                _deliver(job, exc)
        return ready

    def _contexts_alone(self, job: Job) -> list[Job]:
        try:
            return self._contexts([job])
        except Exception as exc:
            logger.exception("encoding a row's images failed")
            _deliver(job, exc)
            return []


def _deliver(job: Job, result: Generation | BaseException) -> None:
    try:
        job.on_done(result)
    except Exception:  # a callback's failure must not stop the worker
        logger.exception("delivering an answer failed")

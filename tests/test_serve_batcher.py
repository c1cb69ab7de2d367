"""The server's batcher on the tiny-world model: rows generated together answer as they do one
at a time, incompatible settings are split, cancelled rows stop, failures reach every row."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from minigpt4.conversation.templates import IMAGE_MESSAGE
from minigpt4.models.answering import Answer
from minigpt4.serve.batcher import Batcher, Cancelled
from tiny_world import evaluate, text

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"
QUESTIONS = [text.DEMO_QUESTION] + [q for q, _ in text.FOLLOW_UPS]


@pytest.fixture(scope="module")
def chat():
    torch.set_num_threads(1)
    return evaluate.build_chat(TINY_EVAL)


@pytest.fixture(scope="module")
def contexts(chat):
    """Demo conversations about six held-out images, each with another question, and their
    processed images (what the server submits)."""
    out = []
    for i, (_, image) in enumerate(evaluate.held_out_images(evaluate.HELD_OUT_SEED, 6)):
        conv = chat.new_conversation()
        conv.append_message(conv.roles[0], IMAGE_MESSAGE)
        chat.ask(QUESTIONS[i % len(QUESTIONS)], conv)
        out.append((conv, [chat.process_image(image)]))
    assert len({len(conv.get_prompt()) for conv, _ in out}) > 1  # rows of different lengths
    return out


def submit(batcher: Batcher, context: tuple, *args, **kwargs):
    """Submit a copy of ``context``'s conversation (answering fills it in) and its images."""
    conv, images = context
    return batcher.submit(conv.copy(), images, *args, **kwargs)


class Calls:
    """Records the size of each ``model.generate_from_embeddings`` call."""

    def __init__(self, model, monkeypatch) -> None:
        self.sizes: list[int] = []
        generate = model.generate_from_embeddings

        def counting(contexts, settings, rules, on_token=None, extra=()):
            self.sizes.append(len(contexts))
            return generate(contexts, settings, rules, on_token=on_token, extra=extra)

        monkeypatch.setattr(model, "generate_from_embeddings", counting)


def run_all(batcher: Batcher, jobs: list[tuple], timeout_s: float = 60) -> list:
    """Submit every ((conversation, images), settings[, on_text]) before the worker starts (so
    they are waiting together), run, and return each job's result."""
    results: list = [None] * len(jobs)
    done = [threading.Event() for _ in jobs]
    for i, (context, settings, *rest) in enumerate(jobs):

        def on_done(result, i=i):
            results[i] = result
            done[i].set()

        on_text = rest[0] if rest else None
        submit(batcher, context, settings, on_done, on_text)
    batcher.start()
    try:
        for event in done:
            assert event.wait(timeout_s)
    finally:
        batcher.close()
    return results


def test_batched_rows_answer_as_one_at_a_time(chat, contexts, monkeypatch):
    lengths = [60, 12, 60, 30, 5, 60]
    settings = [chat.settings(do_sample=False, max_new_tokens=n) for n in lengths]
    alone = run_all(Batcher(chat.model, max_batch_size=1), list(zip(contexts, settings)))
    calls = Calls(chat.model, monkeypatch)
    together = run_all(Batcher(chat.model, max_batch_size=8), list(zip(contexts, settings)))
    assert calls.sizes == [6]
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    assert [g.finish_reason for g in together] == [g.finish_reason for g in alone]
    assert together[4].finish_reason == "length" and len(together[4].tokens) == 5
    assert "stop" in {g.finish_reason for g in together}


def test_batch_size_and_beams_split_batches(chat, contexts, monkeypatch):
    greedy = chat.settings(do_sample=False, max_new_tokens=20)
    penalised = greedy.replace(repetition_penalty=1.3)
    beams = greedy.replace(num_beams=2)
    jobs = [
        (contexts[0], greedy),
        (contexts[1], penalised),
        (contexts[2], greedy),
        (contexts[3], beams),
        (contexts[4], beams),
        (contexts[5], penalised),
    ]
    alone = run_all(Batcher(chat.model, max_batch_size=1), jobs)
    calls = Calls(chat.model, monkeypatch)
    results = run_all(Batcher(chat.model, max_batch_size=8), jobs)
    assert calls.sizes == [4, 1, 1]  # greedy and penalised rows together, each beam row alone
    assert [r.tokens for r in results] == [r.tokens for r in alone]

    calls.sizes.clear()
    run_all(Batcher(chat.model, max_batch_size=4), [(c, greedy) for c in contexts])
    assert calls.sizes == [4, 2]


def test_streamed_text_grows_to_each_rows_answer(chat, contexts):
    settings = chat.settings(do_sample=False, max_new_tokens=40)
    streamed: list[list[str]] = [[] for _ in contexts[:3]]
    jobs = [(c, settings, streamed[i].append) for i, c in enumerate(contexts[:3])]
    results = run_all(Batcher(chat.model), jobs)
    for texts, result in zip(streamed, results):
        assert len(texts) > 1 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
        assert result.text.startswith(texts[-1])


def test_a_cancelled_row_stops_and_the_others_go_on(chat, contexts, monkeypatch):
    settings = chat.settings(do_sample=False, max_new_tokens=60)
    alone = run_all(Batcher(chat.model, max_batch_size=1), [(c, settings) for c in contexts[:2]])
    seen: list[str] = []
    handle: list = []

    def leave_after_three(text: str) -> None:  # the client hangs up after 3 pieces of text
        seen.append(text)
        if len(seen) == 3:
            handle[0].cancel()

    batcher = Batcher(chat.model)
    results: dict[int, object] = {}
    done = threading.Event()

    def collect(i):
        def on_done(result):
            results[i] = result
            if len(results) == 3:
                done.set()

        return on_done

    dropped = submit(batcher, contexts[2], settings, collect(2))
    dropped.cancel()  # gone before it started
    handle.append(submit(batcher, contexts[0], settings, collect(0), leave_after_three))
    submit(batcher, contexts[1], settings, collect(1))
    calls = Calls(chat.model, monkeypatch)
    batcher.start()
    assert done.wait(60)
    batcher.close()
    assert calls.sizes == [2]  # the dropped job is not generated
    assert isinstance(results[2], Cancelled)
    # it ends at the next stop check, streamed no more; alone it goes on
    cut = results[0].tokens
    assert len(seen) == 3 and len(cut) < len(alone[0].tokens) - 1
    assert cut == alone[0].tokens[: len(cut)] and results[0].text.startswith(seen[-1])
    assert results[1].tokens == alone[1].tokens
    assert batcher.stats.cancelled == 2


def test_a_failing_row_fails_alone_and_the_worker_goes_on(chat, contexts):
    settings = chat.settings(do_sample=False, max_new_tokens=10)
    conv, images = contexts[0]
    wrong = (conv.copy(), images)
    wrong[0].messages[-1][1] += IMAGE_MESSAGE  # two image placeholders, one image
    (failed,) = run_all(Batcher(chat.model), [(wrong, settings)])
    assert isinstance(failed, ValueError) and "placeholders" in str(failed)
    (alone,) = run_all(Batcher(chat.model), [(contexts[0], settings)])
    assert isinstance(alone, Answer) and alone.tokens
    jobs = [(wrong, settings), (contexts[0], settings), (contexts[1], settings)]
    failed, ok, other = run_all(Batcher(chat.model), jobs)
    assert isinstance(failed, ValueError)
    assert ok == alone and isinstance(other, Answer)


def test_a_row_that_fails_generation_is_retried_apart_from_the_others(chat, contexts):
    """A row whose settings break sampling (here a NaN-making temperature that validation
    would refuse) fails alone; its batch-mates are generated again without it."""
    greedy = chat.settings(do_sample=False, max_new_tokens=10)
    broken = chat.settings(max_new_tokens=10).replace(temperature=1e-300)
    texts_alone: list[str] = []
    (alone,) = run_all(Batcher(chat.model), [(contexts[1], greedy, texts_alone.append)])
    texts: list[str] = []
    jobs = [(contexts[0], broken), (contexts[1], greedy, texts.append)]
    failed, ok = run_all(Batcher(chat.model), jobs)
    assert isinstance(failed, RuntimeError)
    assert ok == alone and texts == texts_alone and texts  # streamed once, not twice


def submit_and_note(batcher, chat, context, settings) -> threading.Event:
    done = threading.Event()
    submit(batcher, context, settings, lambda r: done.set())
    return done


def test_a_batch_waits_for_announced_requests(chat, contexts, monkeypatch):
    settings = chat.settings(do_sample=False, max_new_tokens=10)
    calls = Calls(chat.model, monkeypatch)
    batcher = Batcher(chat.model, max_wait_s=60)
    batcher.start()
    try:
        with batcher.announce():  # a second request is being prepared
            first = submit_and_note(batcher, chat, contexts[0], settings)
            time.sleep(0.3)
            second = submit_and_note(batcher, chat, contexts[1], settings)
        assert first.wait(30) and second.wait(30)
    finally:
        batcher.close()
    assert calls.sizes == [2]


def test_a_request_to_an_idle_batcher_starts_at_once(chat, contexts, monkeypatch):
    settings = chat.settings(do_sample=False, max_new_tokens=10)
    calls = Calls(chat.model, monkeypatch)
    batcher = Batcher(chat.model, max_wait_s=60)
    batcher.start()
    try:  # nothing announced, no batch before: it does not wait out max_wait_s (60 s)
        assert submit_and_note(batcher, chat, contexts[0], settings).wait(30)
    finally:
        batcher.close()
    assert calls.sizes == [1]


def test_right_after_a_batch_its_clients_are_waited_for(chat, contexts, monkeypatch):
    """The rows of a batch that just ended are expected back (as clients send their next
    request); after a pause longer than max_wait_s, a lone request starts at once again."""
    settings = chat.settings(do_sample=False, max_new_tokens=10)
    calls = Calls(chat.model, monkeypatch)
    batcher = Batcher(chat.model, max_wait_s=1.5)
    pair = [(contexts[0], settings), (contexts[1], settings)]
    try:
        run_all(batcher, pair)  # one batch of two (then closed)
        batcher.start()
        first = submit_and_note(batcher, chat, contexts[2], settings)
        time.sleep(0.5)  # the second client comes back later: its row is waited for
        second = submit_and_note(batcher, chat, contexts[3], settings)
        assert first.wait(30) and second.wait(30)
        time.sleep(3)  # a pause: no one is expected back
        first = submit_and_note(batcher, chat, contexts[4], settings)
        time.sleep(0.5)
        second = submit_and_note(batcher, chat, contexts[5], settings)
        assert first.wait(30) and second.wait(30)
    finally:
        batcher.close()
    assert calls.sizes == [2, 2, 1, 1]

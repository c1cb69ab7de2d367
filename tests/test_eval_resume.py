"""The answer log and the runner's fixed batches (no model: the asker records its calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minigpt4.evaluation.items import Item
from minigpt4.evaluation.resume import AnswerLog, partial_path
from minigpt4.evaluation.runner import answer_all

HEADER = {"benchmark": "pope", "generation": {"do_sample": False, "max_new_tokens": 8}}


def _items(n: int) -> list[Item]:
    return [Item(f"q{i}", "c", f"{i}.jpg", Path(f"{i}.jpg"), f"Q{i}?", "yes") for i in range(n)]


class Recorder:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_after = fail_after

    def __call__(self, items: list[Item]) -> list[str]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # as if the run were killed here
        self.calls.append([it.id for it in items])
        return [f"answer to {it.question}" for it in items]


def test_killed_run_resumes_with_the_same_batches(tmp_path):
    path = partial_path(tmp_path / "results.json")
    assert path.name == "results.json.partial"
    items = _items(7)
    first = Recorder(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        answer_all(items, first, AnswerLog(path, HEADER), batch_size=3, progress=False)
    assert first.calls == [["q0", "q1", "q2"], ["q3", "q4", "q5"]]
    # a kill in the middle of writing leaves a torn last line
    with open(path, "a") as f:
        f.write('{"id": "q6", "predic')
    again = Recorder()
    log = AnswerLog(path, HEADER)
    assert set(log.answers) == {f"q{i}" for i in range(6)}
    predictions = answer_all(items, again, log, batch_size=3, progress=False)
    assert again.calls == [["q6"]]
    assert predictions == [f"answer to Q{i}?" for i in range(7)]
    lines = path.read_text().splitlines()
    ids = [json.loads(ln)["id"] for ln in lines[1:] if ln.startswith('{"id"') and ln.endswith("}")]
    assert sorted(ids) == [f"q{i}" for i in range(7)]
    assert AnswerLog(path, HEADER).answers == dict(zip([f"q{i}" for i in range(7)], predictions))


def test_partial_of_another_run_is_refused(tmp_path):
    path = tmp_path / "r.json.partial"
    AnswerLog(path, HEADER).add(["q0"], ["yes"])
    other = {**HEADER, "generation": {"do_sample": True, "max_new_tokens": 8}}
    with pytest.raises(ValueError, match=r"different run \(differs in: generation\); delete it"):
        AnswerLog(path, other)


def test_duplicate_ids_are_an_error(tmp_path):
    items = _items(2) + _items(1)
    with pytest.raises(ValueError, match="share the id 'q0'"):
        answer_all(items, Recorder(), AnswerLog(tmp_path / "p", HEADER), 2, progress=False)

"""``python -m minigpt4.evaluate`` end to end on the tiny world's benchmark (the shipped tiny
model, CPU): the results file, answers that are the demo's answers, scores that follow from
them, the issue's score targets and the untrained baseline below them, and resume after a kill.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minigpt4.conversation.templates import CONV_VISION
from minigpt4.evaluate import main
from minigpt4.evaluation import mme, pope, vqa
from tiny_world import evaluate as tiny_evaluate

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"
HELD_OUT_SEED = tiny_evaluate.HELD_OUT_SEED
POPE_ACC_MIN = 0.85  # the bar for yes/no answers, on POPE's layout (chance 0.5)
ITEM_KEYS = {"category", "image", "question", "answer", "prediction", "parsed"}


def _make_synthetic():
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_for_eval", REPO_ROOT / "dataset" / "make_synthetic.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_mme(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_mme")
    _make_synthetic().write_mme(str(out), HELD_OUT_SEED, 20)
    return out


def _run(data: Path, out: Path, benchmark: str, *extra: str) -> dict:
    argv = ["--cfg-path", EVAL_CONFIG, "--benchmark", benchmark, "--data", str(data)]
    argv += ["--out", str(out), "--device", "cpu", "--batch-size", "16", "--no-progress", *extra]
    return main(argv)


def test_mme_on_the_tiny_benchmark(tiny_mme, tmp_path, capsys):
    out = tmp_path / "results" / "mme.json"
    results = _run(tiny_mme, out, "mme")
    assert json.loads(out.read_text()) == results
    assert set(results) == {"benchmark", "config", "scores", "items"}
    assert results["benchmark"] == "mme" and results["config"]["model"]["arch"] == "mini_gpt4"
    assert set(results["config"]["weights"]) >= {"model.ckpt", "model.llama_model"}
    items = results["items"]
    assert len(items) == 5 * 20 * 2 and all(set(i) == ITEM_KEYS for i in items)
    assert sum(i["answer"] == "Yes" for i in items) == sum(i["answer"] == "No" for i in items)
    assert all(i["parsed"] == mme.parse_answer(i["prediction"]) for i in items)
    scores = results["scores"]
    assert list(scores["categories"]) == ["position", "background", "colour", "shape", "size"]
    for name, cat in scores["categories"].items():
        right = [i["parsed"] == i["answer"].lower() for i in items if i["category"] == name]
        assert cat["acc"] == pytest.approx(100 * sum(right) / len(right))
        assert cat["score"] == pytest.approx(cat["acc"] + cat["acc_plus"])
    other = sum(i["parsed"] == "other" for i in items)
    assert scores["other_rate"] == pytest.approx(other / len(items))
    assert scores["perception"] == scores["categories"]["position"]["score"]
    assert scores["cognition"] == 0.0
    table = capsys.readouterr().out
    assert "acc+" in table and "background" in table
    assert sorted(p.name for p in out.parent.iterdir()) == ["mme.json"]  # partial removed
    assert scores["acc"] >= tiny_evaluate.MME_ACC_TARGET, scores
    assert scores["acc_plus"] >= tiny_evaluate.MME_ACC_PLUS_TARGET, scores
    untrained = _run(tiny_mme, tmp_path / "untrained.json", "mme", "--options", "model.ckpt=")
    assert untrained["scores"]["acc_plus"] < tiny_evaluate.MME_ACC_PLUS_TARGET, untrained["scores"]


def test_each_question_is_the_demos_fresh_conversation(tiny_mme, tmp_path):
    results = _run(tiny_mme, tmp_path / "r.json", "mme", "--limit", "2")
    chat = tiny_evaluate.build_chat(EVAL_CONFIG)
    for item in results["items"][::3]:
        conv, img_list = CONV_VISION.copy(), []
        chat.upload_img(str(tiny_mme / item["category"] / item["image"]), conv, img_list)
        chat.ask(item["question"], conv)
        expected, _ = chat.answer(conv, img_list, max_new_tokens=64, do_sample=False)
        assert item["prediction"] == expected


def test_untrained_baseline_is_reproducible(tiny_mme, tmp_path):
    args = ("--limit", "3", "--options", "model.ckpt=")
    first = _run(tiny_mme, tmp_path / "a.json", "mme", *args)
    again = _run(tiny_mme, tmp_path / "b.json", "mme", *args)
    assert "model.ckpt" not in first["config"]["weights"]  # no checkpoint was used
    assert first["items"] == again["items"]
    shipped = _run(tiny_mme, tmp_path / "c.json", "mme", "--limit", "3")
    assert [i["prediction"] for i in first["items"]] != [i["prediction"] for i in shipped["items"]]


def test_pope_and_vqa_on_the_tiny_world(tmp_path):
    pope_dir = tmp_path / "pope"
    _make_synthetic().write_pope(str(pope_dir), HELD_OUT_SEED, 30)
    results = _run(pope_dir, tmp_path / "pope.json", "pope")
    assert len(results["items"]) == 60
    assert all(i["parsed"] == pope.parse_answer(i["prediction"]) for i in results["items"])
    assert [i["answer"] for i in results["items"]] == ["yes", "no"] * 30
    yes = sum(i["parsed"] == "yes" for i in results["items"])
    assert results["scores"]["yes_ratio"] == pytest.approx(yes / 60)
    assert results["scores"]["accuracy"] >= POPE_ACC_MIN, results["scores"]

    # VQAv2 files over the same images: the POPE questions, ten humans answering each
    records = [json.loads(ln) for ln in (pope_dir / "shapes_pope.jsonl").read_text().splitlines()]
    vqa_dir = tmp_path / "vqa"
    vqa_dir.mkdir()
    questions = [
        {"image_id": int(r["image"][:6]), "image": f"../pope/images/{r['image']}",
         "question": r["text"], "question_id": r["question_id"]}
        for r in records
    ]  # fmt: skip
    annotations = [
        {"question_id": r["question_id"], "image_id": int(r["image"][:6]), "answer_type": "yes/no",
         "question_type": "is there a", "answers": [{"answer": r["label"], "answer_id": k + 1}
                                                    for k in range(10)]}
        for r in records
    ]  # fmt: skip
    (vqa_dir / "tiny_questions.json").write_text(json.dumps({"questions": questions}))
    (vqa_dir / "tiny_annotations.json").write_text(json.dumps({"annotations": annotations}))
    results = _run(vqa_dir, tmp_path / "vqa.json", "vqa", "--limit", "20")
    assert len(results["items"]) == 20
    assert results["items"][0]["answer"] == ["yes"] * 10
    # unanimous humans: the prediction is only cleaned, not normalised
    assert all(i["parsed"] == vqa.clean(i["prediction"]) for i in results["items"])
    assert results["scores"]["perAnswerType"]["yes/no"] == results["scores"]["overall"]


@pytest.mark.slow
def test_a_killed_run_resumes_without_asking_again(tiny_mme, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed" / "mme.json"
    partial = out.with_name("mme.json.partial")
    cmd = [sys.executable, "-m", "minigpt4.evaluate", "--cfg-path", EVAL_CONFIG]
    cmd += ["--benchmark", "mme", "--data", str(tiny_mme), "--out", str(out)]
    cmd += ["--device", "cpu", "--batch-size", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) > 40:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    answered = set()
    for line in partial.read_text().splitlines()[1:]:
        try:
            answered.add(json.loads(line)["id"])
        except json.JSONDecodeError:
            pass  # the kill tore this line
    assert 0 < len(answered) < 200

    rerun = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert f"Resuming: {len(answered)} answers already in" in rerun.stderr
    assert f"{200 - len(answered)} of 200 questions to ask" in rerun.stderr
    resumed = json.loads(out.read_text())
    fresh = _run(tiny_mme, tmp_path / "fresh.json", "mme", "--batch-size", "2")
    assert resumed["items"] == fresh["items"]
    assert resumed["scores"] == fresh["scores"]

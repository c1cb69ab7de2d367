"""lmms-eval runs its own MME and POPE tasks on our model through the plugin (entry point
"lmms_eval.models"), offline on a local copy of the tasks' data made from the tiny world, and
its scoring functions agree with ours on the same predictions.

Uses the separate environment of eval_configs/lmms_eval/setup.sh (.venv-lmms-eval)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from minigpt4.evaluation import mme, pope
from minigpt4.evaluation.mme_data import read_mme
from minigpt4.evaluation.pope_data import read_pope

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = REPO_ROOT / ".venv-lmms-eval" / "bin"
EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"
HELD_OUT_SEED = 7777
ENV = {
    **os.environ,
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
}

pytestmark = pytest.mark.skipif(
    not (VENV / "lmms-eval").exists(),
    reason="lmms-eval is not installed in .venv-lmms-eval "
    "(run: bash eval_configs/lmms_eval/setup.sh)",
)


def _lmms_python(*args: str, cwd: Path = REPO_ROOT) -> str:
    proc = subprocess.run(
        [str(VENV / "python"), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_entry_point_registers_the_model():
    out = _lmms_python("-c", "from lmms_eval.models import get_model; print(get_model('minigpt4'))")
    assert "minigpt4.evaluation.lmms_eval_model.MiniGPT4" in out


def test_scorers_agree_with_lmms_eval():
    result = json.loads(_lmms_python(str(REPO_ROOT / "tests" / "lmms_eval_agreement.py")))
    for case in result["mme"]:
        assert case["ours"] == pytest.approx(case["theirs"])
    ours, theirs = result["pope"]["ours"], result["pope"]["theirs"]
    for key, their_key in (("accuracy", "accuracy"), ("precision", "precision"),
                           ("recall", "recall"), ("f1", "f1_score")):  # fmt: skip
        assert ours[key] == pytest.approx(theirs[their_key]), key
    # lmms-eval's "yes ratio" counts the ground truth's yes labels; POPE's (ours) the answers'.
    assert theirs["yes_ratio"] == pytest.approx(result["pope"]["label_yes_share"])
    assert ours["yes_ratio"] != pytest.approx(theirs["yes_ratio"])


def _make_synthetic():
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_for_lmms", REPO_ROOT / "dataset" / "make_synthetic.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples(out: Path, task: str) -> list[dict]:
    (path,) = glob.glob(str(out / "*" / f"*_samples_{task}.jsonl"))
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return sorted(rows, key=lambda r: r["doc_id"])


@pytest.mark.slow
def test_lmms_eval_runs_mme_and_pope_on_the_tiny_model(tmp_path):
    synthetic = _make_synthetic()
    synthetic.write_mme(str(tmp_path / "mme"), HELD_OUT_SEED, 4)
    synthetic.write_pope(str(tmp_path / "pope"), HELD_OUT_SEED, 8)
    tasks = tmp_path / "tasks"
    for benchmark in ("mme", "pope"):
        _lmms_python("-m", "minigpt4.evaluation.lmms_eval_data", "--benchmark", benchmark,
                     "--data", str(tmp_path / benchmark), "--out", str(tasks))  # fmt: skip
    out = tmp_path / "out"
    cmd = [str(VENV / "lmms-eval"), "--model", "minigpt4"]
    cmd += ["--model_args", f"cfg_path={EVAL_CONFIG},device=cpu", "--tasks", "mme_local,pope_local"]
    cmd += ["--include_path", str(tasks), "--batch_size", "8", "--output_path", str(out)]
    cmd += ["--log_samples"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results_path,) = glob.glob(str(out / "*" / "*_results.json"))
    results = json.loads(Path(results_path).read_text())["results"]

    # lmms-eval's numbers from its own scoring, ours from the same (logged) answers
    items = read_mme(tmp_path / "mme")
    samples = _samples(out, "mme_local")
    assert [s["target"] for s in samples] == [i.answer for i in items]
    assert all(s["input"].endswith("Answer the question using a single word or phrase.")
               for s in samples)  # fmt: skip
    ours = mme.score(items, [s["filtered_resps"] for s in samples])
    theirs = results["mme_local"]
    assert theirs["mme_perception_score,none"] == pytest.approx(ours["perception"])
    # lmms-eval puts every category outside MME's perception list under cognition
    assert theirs["mme_cognition_score,none"] == pytest.approx(ours["total"] - ours["perception"])

    items = read_pope(tmp_path / "pope")
    samples = _samples(out, "pope_local")
    assert [s["target"] for s in samples] == [i.answer for i in items]
    assert all(s["filtered_resps"] for s in samples)  # the model answered every question
    # lmms-eval's POPE accuracy counts an answer only when it is exactly the label (after
    # lower-casing and stripping); POPE's parser (ours) reads any answer without "no"/"not" in
    # its first sentence as "yes". The tiny model's chatty answers show the difference; on bare
    # yes/no answers the two agree (test_scorers_agree_with_lmms_eval).
    exact = [s["filtered_resps"].lower().strip() == s["target"] for s in samples]
    assert results["pope_local"]["pope_accuracy,none"] == pytest.approx(sum(exact) / len(exact))
    ours = pope.score(items, [s["filtered_resps"] for s in samples])
    parsed = [pope.parse_answer(s["filtered_resps"]) == s["target"] for s in samples]
    assert ours["accuracy"] == pytest.approx(sum(parsed) / len(parsed))

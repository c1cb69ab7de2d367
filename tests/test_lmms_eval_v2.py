"""lmms-eval runs MiniGPT-v2 through the plugin (``--model minigpt4``, the shipped
``eval_configs/minigptv2_eval.yaml`` with ``options=`` for the tiny v2 trained to answer with a
box, tests/v2_grounded.py): its own POPE task, offline on a local copy holding the scene and the
grounding question, without POPE's prompt suffix (``post_prompt``, which a task file may set:
the tiny model knows only its one question). The logged answer is the box as text; POPE
scores it as a wrong answer.

Uses the separate environment of eval_configs/lmms_eval/setup.sh (.venv-lmms-eval); the
checkout under test comes first on its path.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.v2_grounded import ANSWER, QUESTION, grounded_options, scene

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = REPO_ROOT / ".venv-lmms-eval" / "bin"
V2_EVAL = "eval_configs/minigptv2_eval.yaml"
ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO_ROOT),
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


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_lmms_eval_runs_pope_on_the_v2_model(tmp_path):
    data = tmp_path / "pope"
    (data / "images").mkdir(parents=True)
    scene().save(data / "images" / "scene.png")
    question = {"question_id": 1, "image": "scene.png", "text": QUESTION, "label": "yes"}
    (data / "grounding_pope.jsonl").write_text(json.dumps(question) + "\n")
    tasks = tmp_path / "tasks"
    _run([str(VENV / "python"), "-m", "minigpt4.evaluation.lmms_eval_data", "--benchmark",
          "pope", "--data", str(data), "--out", str(tasks)], REPO_ROOT)  # fmt: skip

    with open(tasks / "pope_local.yaml", "a") as task:
        task.write(
            'lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: ""\n    post_prompt: ""\n'
        )
    out = tmp_path / "out"
    model_args = f"cfg_path={V2_EVAL},device=cpu,options={';'.join(grounded_options())}"
    cmd = [str(VENV / "lmms-eval"), "--model", "minigpt4", "--model_args", model_args]
    cmd += ["--tasks", "pope_local", "--include_path", str(tasks), "--batch_size", "1"]
    cmd += ["--output_path", str(out), "--log_samples"]
    _run(cmd, REPO_ROOT)

    (samples_path,) = glob.glob(str(out / "*" / "*_samples_pope_local.jsonl"))
    (sample,) = [json.loads(line) for line in Path(samples_path).read_text().splitlines()]
    assert sample["input"] == QUESTION
    assert sample["filtered_resps"] == ANSWER
    (results_path,) = glob.glob(str(out / "*" / "*_results.json"))
    results = json.loads(Path(results_path).read_text())["results"]["pope_local"]
    assert results["pope_accuracy,none"] == 0.0  # the box is not "yes"

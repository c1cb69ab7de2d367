"""The evaluator on the tiny MiniGPT-v2 of reference set V: ``--benchmark refcoco`` gives the
answers the original's eval_ref.py path gave (``batch_generate.refcoco``: ``prepare_texts`` +
HEAD's batch ``generate``), and ``--resample`` asks the original's resample questions.

Needs the MiniGPT-v2 model and its reference files (``tests.model_fixtures.v2_options``); where
they are not there yet, the module is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minigpt4.evaluate import main
from minigpt4.evaluation import refcoco

model_fixtures = pytest.importorskip("tests.model_fixtures")
if not hasattr(model_fixtures, "v2_options"):
    pytest.skip("needs the MiniGPT-v2 model and reference set", allow_module_level=True)

BENCHMARK_CONFIG = "eval_configs/minigptv2_benchmark_evaluation.yaml"


@pytest.fixture(scope="module")
def ref():
    return model_fixtures.load_v2_reference()


@pytest.fixture(scope="module")
def refcoco_data(ref, tmp_path_factory) -> Path:
    """The reference's two images and expressions in the original's RefCOCO layout; the
    ``.jpg`` files hold PNG data (PIL reads by content), so the pixels are exactly the
    reference's."""
    root = tmp_path_factory.mktemp("refcoco")
    bg = ref["batch_generate"]
    records = []
    for raw, img_id, question in zip(
        ref["raw_images_uint8"], bg["refcoco_img_ids"], bg["refcoco"]["questions"], strict=True
    ):
        image = Image.fromarray(np.asarray(raw))
        (root / "images").mkdir(exist_ok=True)
        image.save(root / "images" / f"{img_id[:27]}.jpg", format="PNG")
        records.append({"img_id": img_id, "sents": question.split(" of ", 1)[1],
                        "bbox": [10.0, 10.0, 50.0, 40.0], "width": image.width,
                        "height": image.height})  # fmt: skip
    (root / "refcoco_val.json").write_text(json.dumps(records))
    return root


def _run(ref, data: Path, out: Path, *extra: str) -> dict:
    options = model_fixtures.v2_options(ref["tiny_hparams"])
    argv = ["--cfg-path", BENCHMARK_CONFIG, "--benchmark", "refcoco", "--data", str(data)]
    argv += ["--out", str(out), "--device", "cpu", "--no-progress", *extra]
    return main([*argv, "--options", *options])


def test_refcoco_answers_are_the_originals(ref, refcoco_data, tmp_path):
    expected = ref["batch_generate"]["refcoco"]
    results = _run(ref, refcoco_data, tmp_path / "r.json", "--batch-size", "2")
    items = results["items"]
    assert [i["question"] for i in items] == expected["questions"]
    assert [i["prediction"] for i in items] == expected["answers"]
    # the original resamples exactly these (no answer is a box)
    kept = [refcoco.kept(i["prediction"]) for i in items]
    assert kept == [False, False] and results["scores"]["accuracy"] == 0.0


def test_refcoco_resample_questions_are_the_originals(ref, refcoco_data, tmp_path, monkeypatch):
    asked: list[str] = []
    real = refcoco.ref_resample_question

    def spy(question: str) -> str:
        asked.append(real(question))
        return asked[-1]

    monkeypatch.setattr(refcoco, "ref_resample_question", spy)
    _run(ref, refcoco_data, tmp_path / "r.json", "--batch-size", "2", "--resample")
    first_round = asked[:2]
    assert first_round == ref["batch_generate"]["refcoco"]["eval_ref_resample_questions"]

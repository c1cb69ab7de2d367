"""``python -m minigpt4.evaluate`` on the MiniGPT-v2 benchmarks, end to end, with the shipped
tiny MiniGPT-4 as a stand-in model (CPU): data in each published layout (tests/v2_bench_data.py),
answers that are the model's batch ``generate`` on ``prepare_texts`` prompts, and scores that
follow from the answers by the original's rules. The tiny model never answers with a box, so
RefCOCO's hits are checked on hand-made answers in test_v2_eval_scoring.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minigpt4.common.eval_utils import prepare_texts
from minigpt4.evaluate import main, parse_args
from minigpt4.evaluation import refcoco, v2_vqa
from minigpt4.evaluation.ask import item_image
from minigpt4.evaluation.items import Item
from minigpt4.evaluation.resume import AnswerLog, partial_path
from minigpt4.evaluation.run import load_config, run_header
from tests import v2_bench_data
from tiny_world import evaluate as tiny_evaluate

EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"
ITEM_KEYS = {"category", "image", "question", "answer", "prediction", "parsed"}


@pytest.fixture(scope="module")
def chat():
    return tiny_evaluate.build_chat(EVAL_CONFIG)


def _run(benchmark: str, data: Path, out: Path, *extra: str) -> dict:
    argv = ["--cfg-path", EVAL_CONFIG, "--benchmark", benchmark, "--data", str(data)]
    argv += ["--out", str(out), "--device", "cpu", "--no-progress", *extra]
    return main(argv)


def _generate(chat, image_paths: list[Path], questions: list[str]) -> list[str]:
    """The original eval scripts' two lines, on the stand-in model."""
    images = torch.cat(
        [chat.process_image(item_image(Item("", "", "", p, "", None))) for p in image_paths]
    )
    texts = prepare_texts(questions, chat.new_conversation())
    answers = chat.model.generate(images, texts, max_new_tokens=20, do_sample=False)
    return [a.split("###")[0].strip() for a in answers]  # v1's turns end at "###"


def test_refcoco(chat, tmp_path, capsys):
    records = v2_bench_data.write_refcoco(tmp_path / "data", splits=("val", "testA"), n=3)
    out = tmp_path / "refcoco.json"
    results = _run("refcoco", tmp_path / "data", out, "--batch-size", "4")
    assert json.loads(out.read_text()) == results
    assert results["config"]["generation"]["max_new_tokens"] == 20  # the original's config
    assert results["config"]["flags"] == {"resample": False}
    items = results["items"]
    assert len(items) == 6 and all(set(i) == ITEM_KEYS | {"width", "height", "iou"} for i in items)
    for item, record in zip(items, records):
        x, y, w, h = record["bbox"]
        assert item["answer"] == [x, y, x + w, y + h]  # the truth box in pixels
        assert (item["width"], item["height"]) == (record["width"], record["height"])
        assert item["question"] == f"[refer] give me the location of {record['sents']}"
    images = [tmp_path / "data" / "images" / i["image"] for i in items]
    expected = _generate(chat, images, [i["question"] for i in items])
    assert [i["prediction"] for i in items] == expected
    scores = results["scores"]
    hits = [i["iou"] is not None and i["iou"] > 0.5 for i in items]
    assert scores["accuracy"] == sum(hits) / 6
    assert scores["not_a_box"] == sum(not refcoco.kept(i["prediction"]) for i in items)
    assert set(scores["splits"]) == {"refcoco_val", "refcoco_testA"}
    assert "refcoco_testA" in capsys.readouterr().out


def test_refcoco_resample_asks_again(chat, tmp_path):
    v2_bench_data.write_refcoco(tmp_path / "data", name="refcocog", n=2)
    results = _run("refcocog", tmp_path / "data", tmp_path / "r.json", "--resample")
    assert results["config"]["flags"] == {"resample": True}
    items = results["items"]
    # the stand-in never answers with a box: every item was asked 1 + 5 times, and the answer
    # kept is the one to the fifth resample question
    assert not any(refcoco.kept(i["prediction"]) for i in items)
    questions = [i["question"] for i in items]
    for _ in range(refcoco.RESAMPLE_ROUNDS):
        questions = [refcoco.ref_resample_question(q) for q in questions]
    images = [tmp_path / "data" / "images" / i["image"] for i in items]
    assert [i["prediction"] for i in items] == _generate(chat, images, questions)


def test_a_run_is_resumed_only_with_the_same_resample_flag(tmp_path):
    out = tmp_path / "r.json"
    argv = ["--cfg-path", EVAL_CONFIG, "--benchmark", "refcoco", "--data", str(tmp_path)]
    argv += ["--out", str(out)]
    cfg = load_config(EVAL_CONFIG)
    plain = run_header(parse_args(argv), cfg)
    AnswerLog(partial_path(out), plain).add(["refcoco_val/0"], ["{<1><2><3><4>}"])
    assert AnswerLog(partial_path(out), plain).answers == {"refcoco_val/0": "{<1><2><3><4>}"}
    resampled = run_header(parse_args([*argv, "--resample"]), cfg)
    with pytest.raises(ValueError, match=r"differs in: flags"):
        AnswerLog(partial_path(out), resampled)


def test_resample_is_only_for_refcoco(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run("gqa", tmp_path, tmp_path / "r.json", "--resample")
    assert "--resample is for refcoco" in capsys.readouterr().err


def _scored(results, hit) -> float:
    items = results["items"]
    return sum(hit(i) for i in items) / len(items)


def test_vqa_style_benchmarks(chat, tmp_path):
    root = tmp_path / "data"
    v2_bench_data.write_okvqa(root / "okvqa")
    v2_bench_data.write_vizwiz(root / "vizwiz")
    v2_bench_data.write_gqa(root / "gqa", published=True)
    v2_bench_data.write_vsr(root / "vsr")
    v2_bench_data.write_hm(root / "hm")
    runs = {name: _run(name, root / name, tmp_path / f"{name}.json") for name in
            ("okvqa", "vizwiz", "gqa", "vsr", "hm")}  # fmt: skip
    for name, results in runs.items():
        items = results["items"]
        assert len(items) == 3 and all(set(i) == ITEM_KEYS for i in items), name
        assert 0.0 <= results["scores"]["accuracy"] <= 1.0
        folder = root / name
        images = [next(folder.rglob(Path(i["image"]).name)) for i in items]
        assert [i["prediction"] for i in items] == _generate(
            chat, images, [i["question"] for i in items]
        ), name
    okvqa = runs["okvqa"]
    assert okvqa["scores"]["accuracy"] == pytest.approx(okvqa["scores"]["overall"] / 100)
    assert [i["parsed"] for i in okvqa["items"]] == [
        v2_vqa.okvqa_parse(Item("", "", "", Path(), "", i["answer"]), i["prediction"])
        for i in okvqa["items"]
    ]
    gqa = runs["gqa"]
    assert gqa["scores"]["accuracy"] == _scored(gqa, lambda i: i["prediction"].lower() == "yes")
    vsr = runs["vsr"]
    assert vsr["scores"]["accuracy"] == _scored(
        vsr, lambda i: i["prediction"].lower() == i["answer"]
    )
    hm = runs["hm"]
    assert [i["answer"] for i in hm["items"]] == [0, 1, 0]
    assert hm["scores"]["accuracy"] == _scored(hm, lambda i: i["parsed"] == i["answer"])
    vizwiz = runs["vizwiz"]
    expected = [
        min(1.0, sum(a.lower() == i["prediction"].lower() for a in i["answer"]) / 3)
        for i in vizwiz["items"]
    ]
    assert vizwiz["scores"]["accuracy"] == pytest.approx(sum(expected) / 3)


def test_iconqa_ranks_choices_by_the_models_loss(chat, tmp_path):
    v2_bench_data.write_iconqa(tmp_path / "data")
    path = tmp_path / "data" / "iconqa_val.json"
    results = _run("iconvqa", path, tmp_path / "r.json", "--batch-size", "1")
    items = results["items"]
    for index, item in enumerate(items):
        choices = json.loads(path.read_text())[index]["choices"]
        image = chat.process_image(item_image(Item("", "", "", path.parent / item["image"], "", 0)))
        prompt = prepare_texts([item["question"]], chat.new_conversation())
        losses = []
        with torch.no_grad():
            for choice in choices:
                samples = {"image": image, "instruction_input": prompt, "answer": [choice]}
                losses.append(float(chat.model.forward(samples, reduction="none")["loss"][0]))
        assert item["prediction"] == choices[losses.index(min(losses))]
        assert item["parsed"] == choices.index(item["prediction"])
    hits = _scored(results, lambda i: i["parsed"] == i["answer"])
    assert results["scores"] == {"accuracy": hits, "items": 3}

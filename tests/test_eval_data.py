"""The benchmark readers on small folders in each official layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from minigpt4.evaluation.mme_data import read_mme
from minigpt4.evaluation.pope_data import read_pope
from minigpt4.evaluation.vqa_data import read_vqa


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def _qa(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def mme_release(tmp_path) -> Path:
    root = tmp_path / "MME_Benchmark_release_version"
    # beside the images (existence, count, ...)
    for name in ("000000000139", "000000000285"):
        _image(root / "existence" / f"{name}.jpg")
        _qa(root / "existence" / f"{name}.txt", f"Is there a {name}?\tYes", "Is there a cat?\tNo")
    # images/ + questions_answers_YES_NO/ (artwork, celebrity, ...), PNG images
    _image(root / "artwork" / "images" / "10002.png")
    _qa(root / "artwork" / "questions_answers_YES_NO" / "10002.txt", "Q1?\tYes", "Q2?\tNo")
    # a non-official category sorts after the official ones
    _image(root / "colour" / "000000.jpg")
    _qa(root / "colour" / "000000.txt", "Red?\tYes", "Blue?\tNo")
    (root / "eval_tool").mkdir()
    return root


def test_mme_release_layout(mme_release):
    items = read_mme(mme_release)
    assert [i.category for i in items] == ["existence"] * 4 + ["artwork"] * 2 + ["colour"] * 2
    first = items[0]
    assert first.id == "existence/000000000139.jpg/0"
    assert (first.image, first.question, first.answer) == (
        "000000000139.jpg",
        "Is there a 000000000139?",
        "Yes",
    )
    assert first.image_path == mme_release / "existence" / "000000000139.jpg"
    art = items[4]
    assert art.image_path == mme_release / "artwork" / "images" / "10002.png"
    assert [i.answer for i in items[4:6]] == ["Yes", "No"]
    assert len({i.id for i in items}) == len(items)
    limited = read_mme(mme_release, limit=1)
    assert [i.category for i in limited] == ["existence"] * 2 + ["artwork"] * 2 + ["colour"] * 2


def test_mme_eval_tool_lists(mme_release, tmp_path):
    lists = tmp_path / "Your_Results"
    _qa(
        lists / "existence.txt",
        "000000000285.jpg\tIs there a dog?\tYes",
        "000000000285.jpg\tIs there a cat?\tNo\tno (a previous answer, ignored)",
    )
    _qa(lists / "artwork.txt", "10002.png\tQ1?\tYes", "10002.png\tQ2?\tNo")
    items = read_mme(lists, image_dir=mme_release)
    assert [(i.category, i.image, i.answer) for i in items] == [
        ("existence", "000000000285.jpg", "Yes"),
        ("existence", "000000000285.jpg", "No"),
        ("artwork", "10002.png", "Yes"),
        ("artwork", "10002.png", "No"),
    ]
    assert items[3].image_path == mme_release / "artwork" / "images" / "10002.png"
    with pytest.raises(FileNotFoundError, match="pass --image-dir"):
        read_mme(lists)


def test_mme_errors_name_the_file(tmp_path):
    _image(tmp_path / "count" / "1.jpg")
    _qa(tmp_path / "count" / "1.txt", "How many? Yes")
    with pytest.raises(ValueError, match=r"1\.txt:1: expected 2 tab-separated columns"):
        read_mme(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither category folders"):
        read_mme(tmp_path / "empty")
    (tmp_path / "count" / "1.txt").write_bytes("Is it caf\xe9?\tYes\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"1\.txt:1: not UTF-8 text \(byte 0xe9 .*save the file"):
        read_mme(tmp_path)


def test_pope_lines(tmp_path):
    _image(tmp_path / "val2014" / "COCO_val2014_000000310196.jpg")
    lines = [
        {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
         "text": "Is there a snowboard in the image?", "label": "yes"},
        {"question_id": 2, "image": "COCO_val2014_000000310196.jpg",
         "text": "Is there a dog in the image?", "label": "no"},
    ]  # fmt: skip
    data = tmp_path / "pope"
    data.mkdir()
    (data / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    items = read_pope(data, image_dir=tmp_path / "val2014")
    assert [(i.id, i.category, i.answer) for i in items] == [
        ("coco_pope_random/1", "coco_pope_random", "yes"),
        ("coco_pope_random/2", "coco_pope_random", "no"),
    ]
    assert items[0].question == "Is there a snowboard in the image?"
    assert len(read_pope(data / "coco_pope_random.json", tmp_path / "val2014", limit=1)) == 1
    (data / "broken.jsonl").write_text('{"image": "x.jpg", "text": "?"}\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:1: .*missing \['label'\]"):
        read_pope(data, image_dir=tmp_path / "val2014")
    for line, words in [
        ("[1, 2]", "this one is an array"),
        ("7", "this one is a number"),
        ('{"image": 1, "text": "?", "label": "no"}', "image must be text"),
    ]:
        (data / "broken.jsonl").write_text(line + "\n")
        with pytest.raises(ValueError, match=rf"broken\.jsonl:1: .*{words}"):
            read_pope(data, image_dir=tmp_path / "val2014")


def test_vqa_files(tmp_path):
    _image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    questions = {
        "data_subtype": "val2014",
        "questions": [{"image_id": 42, "question": "What color is it?", "question_id": 420}],
    }
    annotations = {
        "annotations": [
            {
                "question_id": 420,
                "image_id": 42,
                "question_type": "what color is",
                "answer_type": "other",
                "answers": [{"answer": "red", "answer_id": i + 1} for i in range(10)],
            }
        ]
    }
    (tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(questions))
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(annotations))
    (item,) = read_vqa(tmp_path)
    assert (item.id, item.category, item.image) == ("420", "other", "COCO_val2014_000000000042.jpg")
    assert item.answer == ["red"] * 10
    assert item.extra == {"answer_type": "other", "question_type": "what color is"}
    assert item.image_path == tmp_path / "val2014" / "COCO_val2014_000000000042.jpg"

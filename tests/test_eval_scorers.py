"""The benchmark scorers on hand-made predictions whose scores are worked out by hand from the
official scripts' rules (MME calculation.py, POPE evaluate.py, VQA vqaEval.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from minigpt4.evaluation import mme, pope, tables, vqa
from minigpt4.evaluation.items import Item


def _item(category: str, image: str, answer, k: int = 0, **extra) -> Item:
    return Item(f"{category}/{image}/{k}", category, image, Path(image), "q?", answer, extra)


@pytest.mark.parametrize(
    ("prediction", "parsed"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("No.", "no"),
        ("Yes, there is a red shape.", "yes"),
        ("YES", "yes"),
        ("Not sure", "no"),  # "no" in the first four characters
        ("None of them", "no"),
        ("  yes", "other"),  # nothing is stripped: the first four are "  ye"
        ("I think yes", "other"),
        ("There is a cat", "other"),
        ("", "other"),
    ],
)
def test_mme_parses_like_calculation_py(prediction, parsed):
    assert mme.parse_answer(prediction) == parsed


def _mme_case():
    items, preds = [], []
    # existence: image a both right, b one right, c both wrong (one "other")
    for image, answers in (("a", ["Yes", "No"]), ("b", ["Yes", "yes"]), ("c", ["no", "Maybe"])):
        for k, (truth, pred) in enumerate(zip(["Yes", "No"], answers)):
            items.append(_item("existence", image, truth, k))
            preds.append(pred)
    # count: one image, both right
    items += [_item("count", "d", "Yes", 0), _item("count", "d", "No", 1)]
    preds += ["yes.", "no, there are two"]
    # code_reasoning (cognition): one image, first right
    items += [_item("code_reasoning", "e", "No", 0), _item("code_reasoning", "e", "Yes", 1)]
    preds += ["No", "No"]
    return items, preds


def test_mme_scores_acc_plus_and_totals():
    scores = mme.score(*_mme_case())
    existence = scores["categories"]["existence"]
    assert existence["acc"] == pytest.approx(50.0)  # 3 of 6 questions
    assert existence["acc_plus"] == pytest.approx(100 / 3)  # 1 of 3 images
    assert existence["score"] == pytest.approx(50 + 100 / 3)
    assert existence["other"] == 1 and existence["other_rate"] == pytest.approx(1 / 6)
    assert scores["categories"]["count"]["score"] == pytest.approx(200.0)
    code = scores["categories"]["code_reasoning"]
    assert (code["acc"], code["acc_plus"]) == (50.0, 0.0)
    assert scores["perception"] == pytest.approx(250 + 100 / 3)
    assert scores["cognition"] == pytest.approx(50.0)
    assert scores["total"] == pytest.approx(300 + 100 / 3)
    assert scores["acc"] == pytest.approx(100 * 6 / 10)
    assert scores["acc_plus"] == pytest.approx(100 * 2 / 5)
    assert "scene" in scores["missing_categories"]
    assert "existence" not in scores["missing_categories"]


def test_mme_needs_pairs_and_yes_no_truth():
    items, preds = _mme_case()
    with pytest.raises(ValueError, match="two questions per image; image 'a'"):
        mme.score(items[1:], preds[1:])
    bad = [_item("count", "x", "Maybe", 0), _item("count", "x", "Yes", 1)]
    with pytest.raises(ValueError, match="ground truth must be Yes or No"):
        mme.score(bad, ["yes", "yes"])


@pytest.mark.parametrize(
    ("prediction", "parsed"),
    [
        ("Yes, there is a dog in the image.", "yes"),
        ("No, there is not.", "no"),
        ("There is no dog.", "no"),
        ("I do not see one", "no"),
        ("no.", "no"),
        ("Nope", "yes"),
        ("NO", "yes"),  # only "No", "no" and "not" count
        ("The image shows a cat. There is no dog.", "yes"),  # only the first sentence
        ("No,there", "yes"),  # commas are removed, not split on
        ("", "yes"),
    ],
)
def test_pope_parses_like_evaluate_py(prediction, parsed):
    assert pope.parse_answer(prediction) == parsed


def test_pope_metrics():
    labels = ["yes", "yes", "no", "no", "yes"]
    preds = ["Yes", "No", "no", "Yes it is", "yes"]
    items = [_item("random", str(i), label) for i, label in enumerate(labels)]
    scores = pope.score(items, preds)
    assert (scores["TP"], scores["FN"], scores["TN"], scores["FP"]) == (2, 1, 1, 1)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["yes_ratio"] == pytest.approx(3 / 5)
    assert scores["categories"]["random"]["accuracy"] == scores["accuracy"]
    none_yes = pope.score(items[:2], ["no", "no"])
    assert (none_yes["precision"], none_yes["f1"], none_yes["yes_ratio"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Yes!", "yes"),
        ("two dogs", "2 dogs"),
        ("The red one", "red 1"),
        ("an apple", "apple"),
        ("none", "0"),
        ("dont know", "don't know"),
        ("isnt", "isn't"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("a.m.", "am"),
        ("1,000", "1000"),  # digit-comma-digit: punctuation removed, not spaced
        ("hello, world", "hello world"),
        ("left-handed", "left handed"),
        ("yes ;", "yes"),
        ("(cat)", "cat"),
    ],
)
def test_vqa_normalization(text, normalized):
    assert vqa.normalize(text) == normalized


def test_vqa_accuracy_over_leave_one_out_subsets():
    answers = ["2", "2", "two"] + ["3"] * 7  # normalised: three "2", seven "3"
    acc, compared = vqa.question_accuracy("Two", answers)
    assert compared == "2"
    assert acc == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    acc, _ = vqa.question_accuracy("cat", ["cat"] + ["dog"] * 9)
    assert acc == pytest.approx(9 * (1 / 3) / 10)
    assert vqa.question_accuracy("dog", ["cat"] + ["dog"] * 9)[0] == 1.0


def test_vqa_unanimous_answers_are_not_normalised():
    # The official evaluator normalises only when the humans disagree.
    assert vqa.question_accuracy(" 2\n", ["2"] * 10)[0] == 1.0
    assert vqa.question_accuracy("TWO", ["two"] * 10)[0] == 1.0  # case is always ignored
    assert vqa.question_accuracy("two", ["2"] * 10)[0] == 0.0
    assert vqa.question_accuracy("2.", ["2"] * 10)[0] == 0.0


def test_vqa_score_per_type():
    items = [
        _item("yes/no", "1", ["yes"] * 10, answer_type="yes/no", question_type="is the"),
        _item("number", "2", ["2"] * 5 + ["3"] * 5, answer_type="number", question_type="how many"),
        _item("other", "3", ["red"] * 2 + ["blue"] * 8, answer_type="other", question_type="what"),
    ]
    scores = vqa.score(items, ["Yes", "three", "red"])
    # red: the two "red" humans left out in turn see one match (1/3), the others two (2/3)
    red = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert scores["perAnswerType"] == pytest.approx(
        {"yes/no": 100.0, "number": 100.0, "other": 100 * red}
    )
    assert scores["overall"] == pytest.approx(100 * (2 + red) / 3)
    assert scores["perQuestionType"]["how many"] == 100.0


def _mme_pairs(categories: list[str]) -> tuple[list[Item], list[str]]:
    """One image per category, both questions answered right."""
    items = [_item(c, c, truth, k) for c in categories for k, truth in enumerate(["Yes", "No"])]
    return items, ["Yes", "No"] * len(categories)


def test_mme_sums_say_which_categories_they_cover():
    # The tiny world's layout: one official perception category, no cognition one.
    scores = mme.score(*_mme_pairs(["position", "colour", "shape"]))
    assert tables.mme_sums_line(scores) == (
        "perception 200.00 (1 of its 10 categories: position); "
        "cognition: none of its categories in the data; "
        "not MME categories, in 'all' only: colour, shape"
    )
    assert "cognition 0.00" not in tables.mme_table(scores)
    # The full benchmark: the two sums as the official tool prints them.
    full = mme.score(*_mme_pairs(list(mme.PERCEPTION + mme.COGNITION)))
    assert tables.mme_sums_line(full) == "perception 2000.00; cognition 800.00"
    assert tables.mme_table(full).endswith("\nperception 2000.00; cognition 800.00")

"""The MiniGPT-v2 benchmarks' rules on hand-made answers: RefCOCO's box scoring and resampling,
the VQA-style scorers, the loss ranking, the prompts and the readers (layouts and errors)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minigpt4.conversation.templates import CONV_VISION, CONV_VISION_minigptv2, SeparatorStyle
from minigpt4.evaluation import batch_ask, refcoco, refcoco_data, v2_vqa, v2_vqa_data
from minigpt4.evaluation.items import Item
from tests import v2_bench_data

FIXTURE = Path(__file__).parent / "fixtures" / "minigptv2" / "box_parsing.json"
REF = json.loads(FIXTURE.read_text())

# The reference's RefCOCO object: xywh [468.3, 0.91, 171.7, 116.12] in a 640 x 428 image.
REF_ITEM = Item(
    "val/0", "refcoco_val", "x.jpg", Path("x.jpg"), "q", [468.3, 0.91, 640.0, 117.03],
    {"img_id": "COCO_train2014_000000580957_4", "width": 640, "height": 428},
)  # fmt: skip
# (answer, hit without resampling, hit with it)
REF_ANSWERS = [
    ("{<73><0><100><27>}", True, True),
    ("{ <73> <0> <100> <27> }", True, True),
    ("<unk>{<73><0><100><27>}", True, True),
    ("{<50><50><60><60>}", False, False),  # kept, IoU 0
    ("<p>x</p>{<73><0><100><27>}", False, True),  # not a box first: kept only at the last round
    ("{<73><0><100><27>}<delim>{<1><2><3><4>}", False, False),  # eight integers: no box
    ("no box", False, False),
]


@pytest.mark.parametrize(("answer", "hit", "hit_resampled"), REF_ANSWERS)
def test_refcoco_judge(answer, hit, hit_resampled):
    assert refcoco.judge(REF_ITEM, answer)[0] is hit
    assert refcoco.judge(REF_ITEM, answer, resample=True)[0] is hit_resampled


def test_refcoco_iou_and_fields():
    hit, iou = refcoco.judge(REF_ITEM, "{<73><0><100><27>}")
    assert hit and iou == pytest.approx(0.9737108970911024, abs=1e-12)  # the original's value
    assert refcoco.predicted_box(REF_ITEM, "{<73><0><100><27>}") == [467.2, 0.0, 640.0, 115.56]
    fields = refcoco.item_fields(REF_ITEM, "{<50><50><60><60>}")
    assert fields == {"width": 640, "height": 428, "iou": 0.0}
    assert refcoco.item_fields(REF_ITEM, "no box")["iou"] is None


def test_refcoco_score_is_hits_over_all_expressions():
    answers = [a for a, _, _ in REF_ANSWERS]
    items = [REF_ITEM] * len(answers)
    plain = refcoco.score(items, answers)
    assert plain["accuracy"] == 3 / 7 and plain["items"] == 7 and plain["not_a_box"] == 2
    assert plain["splits"] == {"refcoco_val": {"accuracy": 3 / 7, "items": 7}}
    assert refcoco.score(items, answers, resample=True)["accuracy"] == 4 / 7
    with pytest.raises(ValueError, match="7 RefCOCO items but 6"):
        refcoco.score(items, answers[:6])


def test_resampling_asks_again_with_the_originals_nested_question():
    asked: list[list[str]] = []
    replies = {  # by question: item a answers a box at its second resample, b never does
        "[refer] give me the location of ['a']": "still not",
        "[refer] give me the location of [\"['a']\"]": "{<1><2><3><4>}",
    }

    def ask(items):
        asked.append([it.question for it in items])
        return [replies.get(it.question, "no") for it in items]

    def item(name):
        return Item(name, "c", "i.jpg", Path("i.jpg"), refcoco_data.ref_question(name), [0] * 4)

    answers = refcoco.resampling(ask)([item("a"), item("b"), item("c")])
    assert answers == ["{<1><2><3><4>}", "no", "no"]
    assert len(asked) == 1 + refcoco.RESAMPLE_ROUNDS
    assert [len(batch) for batch in asked] == [3, 3, 3, 2, 2, 2]
    assert asked[1] == [f"[refer] give me the location of ['{n}']" for n in "abc"]
    nested = "b"
    for _ in range(refcoco.RESAMPLE_ROUNDS):  # each round lists the previous expression again
        nested = str([nested])
    assert asked[-1][0] == f"[refer] give me the location of {nested}"


def test_the_refer_question_and_prompts_are_the_originals():
    bg = REF["batch_generate"]
    expressions = ["the red shape", "the blue circle on the right"]
    questions = [refcoco_data.ref_question(e) for e in expressions]
    assert questions == bg["refcoco"]["questions"]
    chat = SimpleNamespace(new_conversation=CONV_VISION_minigptv2.copy)
    items = [Item(str(i), "c", "", Path(""), q, None) for i, q in enumerate(questions)]
    assert batch_ask.batch_prompts(chat, "{question}", items) == bg["refcoco"]["texts"]
    assert bg["conv_temp_system"] == CONV_VISION_minigptv2.system == ""
    resampled = [refcoco_data.ref_question(str([e])) for e in expressions]
    assert resampled == bg["refcoco"]["eval_ref_resample_questions"]


def test_vqa_postprocess_as_eval_vqa():
    vqa_ref = REF["batch_generate"]["vqa"]
    processed = [v2_vqa.vqa_postprocess(a) for a in vqa_ref["answers"]]
    assert processed == vqa_ref["eval_vqa_postprocess"]
    assert v2_vqa.vqa_postprocess(" <unk>Red Car ") == "red car"


def _item(answer, **extra):
    return Item("0", "c", "i.jpg", Path("i.jpg"), "q", answer, extra)


def test_okvqa_is_vqa_accuracy_of_the_postprocessed_answer():
    humans = ["red", "red", "green", "Red.", "two", "red", "red", "2", "red", "red"]
    items = [_item(humans), _item(humans)]
    # "Red." normalises to "red" (7 of 10 humans: always 3+ others); "<unk>Two" to "2" (2 of 10)
    scores = v2_vqa.okvqa_score(items, ["Red.", "<unk>Two"])
    assert scores["accuracy"] == pytest.approx((1 + 0.6) / 2)
    assert scores["overall"] == pytest.approx(80.0) and scores["items"] == 2
    assert v2_vqa.okvqa_parse(items[0], "<unk>Two") == "2"


def test_vizwiz_accuracy():
    humans = ["unanswerable"] * 6 + ["red"] * 4
    assert v2_vqa.vizwiz_accuracy(_item(humans), "Red") == 1.0
    assert v2_vqa.vizwiz_accuracy(_item(["red", "red", "blue"]), "red") == pytest.approx(2 / 3)
    assert v2_vqa.vizwiz_accuracy(_item(humans), "blue") == 0.0
    # the original joined the answers with "_" and split them again
    assert v2_vqa.vizwiz_accuracy(_item(["a_b", "a_b", "c"]), "a") == pytest.approx(2 / 3)
    score = v2_vqa.mean_score(v2_vqa.vizwiz_accuracy)
    assert score([_item(humans)] * 2, ["red", "blue"]) == {"accuracy": 0.5, "items": 2}


def test_exact_match_benchmarks():
    assert v2_vqa.gqa_hit(_item("yes"), "Yes") and not v2_vqa.gqa_hit(_item("yes"), "yes.")
    assert v2_vqa.vsr_hit(_item("true"), "True") and not v2_vqa.vsr_hit(_item("true"), "false")
    assert v2_vqa.hm_parse("Yes") == 1 and v2_vqa.hm_parse(" no ") == 0
    assert v2_vqa.hm_parse("maybe") == "maybe"
    assert v2_vqa.hm_hit(_item(1), "yes") and not v2_vqa.hm_hit(_item(0), "maybe")
    icon = _item(1, choices=["red", "green"])
    assert v2_vqa.iconqa_hit(icon, "green") and not v2_vqa.iconqa_hit(icon, "red")
    with pytest.raises(ValueError, match="no items"):
        v2_vqa.mean_score(v2_vqa.gqa_hit)([], [])


class _LossModel:
    """forward(reduction="none") -> a loss per row: the candidate's length, "none" the least."""

    def __init__(self):
        self.calls = []

    def forward(self, samples, reduction="mean"):
        assert reduction == "none"
        self.calls.append(samples)
        losses = [0.0 if a == "none" else float(len(a)) for a in samples["answer"]]
        return {"loss": torch.tensor(losses)}


def test_multi_select_ranks_by_loss_with_fillers_last():
    model = _LossModel()
    images = torch.zeros(2, 3, 4, 4)
    candidates = [["ccc", "a"], ["bb", "none"], ["a", "none"]]  # choice k of each row
    ranks = batch_ask.multi_select(model, images, ["p0", "p1"], candidates, num_cand=[3, 1])
    assert ranks == [[2, 1, 0], [0, 1, 2]]  # row 1's fillers ("none", loss 0) rank last
    assert [c["answer"] for c in model.calls] == candidates
    assert all(c["instruction_input"] == ["p0", "p1"] for c in model.calls)


def test_ranking_asker_pads_choices_and_answers_with_the_best():
    model = _LossModel()
    chat = SimpleNamespace(
        model=model,
        new_conversation=CONV_VISION_minigptv2.copy,
        process_image=lambda image: torch.zeros(1, 3, 4, 4),
    )
    items = [
        Item("0", "c", "i", Path(__file__), "q0", 0, {"choices": ["long one", "mid", "xy"]}),
        Item("1", "c", "i", Path(__file__), "q1", 0, {"choices": ["abcd", "abc"]}),
    ]
    ask = batch_ask.ranking_asker(chat, "{question}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_ask, "item_image", lambda item: None)
        assert ask(items) == ["xy", "abc"]
    columns = [["long one", "abcd"], ["mid", "abc"], ["xy", "none"]]
    assert [c["answer"] for c in model.calls] == columns
    assert model.calls[0]["instruction_input"][0] == (
        "<s>[INST] <Img><ImageHere></Img> q0 [/INST]"  # the original's IconQA instruction
    )


def test_answers_end_where_the_templates_next_turn_begins():
    assert batch_ask.turn_end(CONV_VISION) == "###"
    assert batch_ask.turn_end(CONV_VISION_minigptv2) == ""  # v2's answers are kept whole
    two = dataclasses.replace(CONV_VISION, sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>")
    assert batch_ask.turn_end(two) == "</s>"
    assert batch_ask.cut_at_turn_end("a box ###Human: more", "###") == "a box"
    assert batch_ask.cut_at_turn_end(" {<1><2><3><4>}### ", "") == "{<1><2><3><4>}###"


# --- readers -------------------------------------------------------------------------------------


def test_refcoco_reader_reads_the_originals_layout(tmp_path):
    records = v2_bench_data.write_refcoco(tmp_path, splits=("val", "testB"), n=2)
    (tmp_path / "refcoco+_val.json").write_text("[]")  # another benchmark's file is not read
    items = refcoco_data.reader("refcoco")(tmp_path, None, None)
    assert [i.category for i in items] == ["refcoco_val"] * 2 + ["refcoco_testB"] * 2
    first = items[0]
    assert first.question == "[refer] give me the location of the shape number 0"
    assert first.image == "COCO_train2014_000000000001.jpg"
    assert first.image_path == tmp_path / "images" / first.image
    x, y, w, h = records[0]["bbox"]
    assert first.answer == [x, y, x + w, y + h]
    assert first.extra == {"img_id": records[0]["img_id"], "width": 80, "height": 60}
    one = refcoco_data.reader("refcoco")(tmp_path / "refcoco_testB.json", None, 1)
    assert [i.id for i in one] == ["refcoco_testB/0"]


def test_refcoco_reader_errors_name_the_place(tmp_path):
    with pytest.raises(FileNotFoundError, match="refcocog_val.json, refcocog_test.json"):
        refcoco_data.reader("refcocog")(tmp_path, None, None)
    v2_bench_data.write_refcoco(tmp_path, n=2)
    path = tmp_path / "refcoco_val.json"
    rows = json.loads(path.read_text())
    del rows[1]["bbox"]
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"refcoco_val.json record 1: missing \['bbox'\]"):
        refcoco_data.reader("refcoco")(tmp_path, None, None)
    rows[1]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"record 1: bbox must be \[x, y, width, height\]"):
        refcoco_data.reader("refcoco")(tmp_path, None, None)
    (tmp_path / "images" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="record 0: image 'COCO_train2014_0+1.jpg'"):
        refcoco_data.reader("refcoco")(tmp_path, None, None)


def test_iconqa_both_layouts(tmp_path):
    rows = v2_bench_data.write_iconqa(tmp_path / "orig")
    items = v2_vqa_data.read_iconqa(tmp_path / "orig" / "iconqa_val.json")
    assert [i.extra["choices"] for i in items] == [r["choices"] for r in rows]
    assert items[1].image == "101/image.png" and items[1].answer == 1
    assert items[0].question.startswith("[vqa] Based on the image, respond to this question")
    v2_bench_data.write_iconqa(tmp_path / "pub", published=True)
    published = v2_vqa_data.read_iconqa(tmp_path / "pub")  # the folder holding problems.json
    assert [i.id for i in published] == ["200", "201", "202"]  # test split, choose_txt only
    assert published[0].image_path.is_file()


def test_iconqa_bad_answer_is_named(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"image_id": "1", "question": "q", "choices": ["a"], "answer": 3}]))
    with pytest.raises(ValueError, match=r"q.json question 0: answer 3 is not an index"):
        v2_vqa_data.read_iconqa(path)


def test_gqa_both_layouts(tmp_path):
    v2_bench_data.write_gqa(tmp_path / "orig")
    v2_bench_data.write_gqa(tmp_path / "pub", published=True)
    orig = v2_vqa_data.read_gqa(tmp_path / "orig" / "gqa_testdev.json")
    pub = v2_vqa_data.read_gqa(tmp_path / "pub")
    assert [i.question for i in orig] == [i.question for i in pub]
    assert [i.id for i in pub] == ["q0", "q1", "q2"] and pub[0].image == "n0.jpg"


def test_other_readers(tmp_path):
    v2_bench_data.write_vsr(tmp_path / "vsr")
    vsr = v2_vqa_data.read_vsr(tmp_path / "vsr")
    assert [i.answer for i in vsr] == ["false", "true", "false"]
    assert vsr[0].question == (
        "[vqa] Based on the image, is this statement true or false? "
        "The shape 0 is left of the edge."
    )
    v2_bench_data.write_hm(tmp_path / "hm")
    hm = v2_vqa_data.read_hm(tmp_path / "hm" / "dev.jsonl", None, 2)
    assert [i.id for i in hm] == ["42950", "42951"] and [i.answer for i in hm] == [0, 1]
    assert hm[0].question == (
        "This is an image writting 'meme 0'. Is this image hateful? Answer yes or no. Answer:"
    )
    v2_bench_data.write_vizwiz(tmp_path / "vizwiz")
    vizwiz = v2_vqa_data.read_vizwiz(tmp_path / "vizwiz")
    assert len(vizwiz[0].answer) == 10 and vizwiz[0].image_path.parent.name == "val"
    v2_bench_data.write_okvqa(tmp_path / "okvqa")
    okvqa = v2_vqa_data.read_okvqa(tmp_path / "okvqa")
    assert okvqa[0].image == "000000001000.jpg"
    assert okvqa[0].question.endswith("short answer: what colour is shape 0?")


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no VSR file \(test.jsonl, test.json\)"):
        v2_vqa_data.read_vsr(tmp_path)
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"img": "a.png", "text": "t", "label": 2}) + "\n")
    with pytest.raises(ValueError, match="dev.jsonl record 0: label must be 0 or 1, got 2"):
        v2_vqa_data.read_hm(path)
    path.write_text('{"img": "a.png"\n')
    with pytest.raises(ValueError, match="dev.jsonl:1: not a JSON line"):
        v2_vqa_data.read_hm(path)
    val = tmp_path / "val.json"
    val.write_text(json.dumps({"image": "x"}))
    with pytest.raises(ValueError, match="val.json: expected a JSON array"):
        v2_vqa_data.read_vizwiz(val)

"""The box module against what the original's demo_v2.py and eval_ref.py computed (reference set
V, ``box_parsing``, copied into ``tests/fixtures/minigptv2/box_parsing.json``), and its own
rules (formatting, scaling) on hand-made boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from minigpt4.common import boxes
from minigpt4.common.eval_utils import computeIoU

FIXTURE = Path(__file__).parent / "fixtures" / "minigptv2" / "box_parsing.json"
REF = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("text", sorted(REF["demo_v2"]["extract_substrings"]))
def test_demo_phrase_strings_as_extract_substrings(text):
    assert boxes.demo_phrase_strings(text) == REF["demo_v2"]["extract_substrings"][text]


@pytest.mark.parametrize("case", REF["demo_v2"]["visualize_all_bbox_together"])
def test_demo_boxes_as_visualize_all_bbox_together(case):
    width, height = case["resized_image_size"]
    mode, entities = boxes.demo_boxes(case["generation"], width, height)
    assert mode == case["mode"]
    if mode == "all":
        assert entities == case["entities"]  # same arithmetic: exactly equal
        assert list(entities) == list(case["entities"])
        drawn = [b for bs in entities.values() for b in bs]
    elif mode == "single":
        assert entities == case["entities"]
        drawn = entities
    else:
        assert entities is None and case["entities"] is None
        drawn = []
    # the demo draws int() of each pixel coordinate
    rects = [[[int(b[0]), int(b[1])], [int(b[2]), int(b[3])]] for b in drawn]
    assert rects == case["cv2_rectangles"]


def test_demo_boxes_reads_the_chats_escaped_text():
    escaped = "&lt;p&gt;a cat&lt;/p&gt; {&lt;10&gt;&lt;20&gt;&lt;30&gt;&lt;40&gt;}"
    assert boxes.demo_boxes(escaped, 100, 100) == ("all", {"a cat": [[10, 20, 30, 40]]})


def _mask(size, rect=None):
    mask = Image.new("RGB", size)
    if rect is not None:
        ImageDraw.Draw(mask).rectangle(rect, fill=(255, 255, 255))
    return mask


def test_mask2bbox_as_the_demo():
    ref = REF["demo_v2"]["mask2bbox"]
    size = tuple(REF["demo_v2"]["image_size"])
    assert boxes.mask2bbox(_mask(size, ref["mask_rect_pixels"])) == ref["result"]
    assert boxes.mask2bbox(_mask(size)) == ref["empty_mask"] == ""
    assert boxes.mask2bbox(None) == ""


@pytest.mark.parametrize("case", REF["computeIoU_examples"])
def test_compute_iou_plus_one_pixel(case):
    assert boxes.compute_iou(case["a"], case["b"]) == pytest.approx(case["iou"], abs=1e-12)
    assert computeIoU(case["a"], case["b"]) == boxes.compute_iou(case["a"], case["b"])


@pytest.mark.parametrize("case", REF["eval_ref"]["answers"])
def test_eval_ref_rules(case):
    item, res = REF["eval_ref"]["item"], REF["eval_ref"]["res"]
    cleaned = boxes.clean_ref_answer(case["answer"])
    assert cleaned == case["cleaned"]
    assert boxes.is_ref_box(cleaned) == case["matches_pattern"]
    assert boxes.is_ref_box(cleaned) != case["resampled"]
    box = boxes.ref_answer_box(cleaned, item["width"], item["height"], res)
    if case["iou"] is None:  # the original's IoU raised: no box, never counted
        assert box is None and case["counted"] == 0
        return
    assert box == case["pred_bbox_pixels"]
    gt = boxes.xywh_to_xyxy(item["bbox"])
    assert gt == case["gt_bbox_xyxy"]
    iou = boxes.compute_iou(box, gt)
    assert iou == pytest.approx(case["iou"], abs=1e-12)
    assert int(iou > 0.5) == case["counted"]


def test_ref_answer_box_needs_exactly_four_integers():
    assert boxes.ref_answer_box("{<1><2><3><4>}<delim>{<5><6><7><8>}", 100, 100) is None
    assert boxes.ref_answer_box("{<10><20><30><40>}", 200, 50) == [20.0, 10.0, 60.0, 20.0]


def test_resample_questions_as_eval_ref():
    bg = REF["batch_generate"]
    asked = [boxes.ref_resample_question(q) for q in bg["refcoco"]["questions"]]
    assert asked == bg["refcoco"]["eval_ref_resample_questions"]
    sents = [[q.replace(boxes.REF_PREFIX, "").strip()] for q in bg["refcoco"]["questions"]]
    assert sents == [r["sents"] for r in bg["refcoco_resamples"]]
    # a second round nests the list once more, as the original's loop does
    again = boxes.ref_resample_question(asked[0])
    assert again == f"{boxes.REF_PREFIX} " + str(["['the red shape']"])


def test_formatting_round_trips_through_both_parsers():
    text = boxes.format_phrase("two dogs", [[5, 30, 40, 88], [52, 28, 96, 91]])
    assert text == "<p>two dogs</p> {<5><30><40><88>}<delim>{<52><28><96><91>}"
    mode, entities = boxes.demo_boxes(text, 200, 100)
    assert mode == "all" and list(entities) == ["two dogs"]
    assert entities["two dogs"][0] == [10.0, 30.0, 80.0, 88.0]
    assert entities["two dogs"][1] == pytest.approx([104.0, 28.0, 192.0, 91.0])
    one = boxes.format_box([73, 0, 100, 27])
    assert boxes.is_ref_box(one) and boxes.ref_answer_box(one, 100, 100) == [73, 0, 100, 27]
    with pytest.raises(ValueError, match="4 coordinates"):
        boxes.format_box([1, 2, 3])


def test_pixels_to_grid_truncates_as_the_training_datasets():
    # RefCOCO's item of the reference: xywh in a 640 x 428 image
    xyxy = boxes.xywh_to_xyxy([468.3, 0.91, 171.7, 116.12])
    assert boxes.pixels_to_grid(xyxy, 640, 428) == [73, 0, 100, 27]
    assert boxes.grid_to_pixels([73, 0, 100, 27], 640, 428) == pytest.approx(
        [467.2, 0.0, 640.0, 115.56]
    )

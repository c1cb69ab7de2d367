"""MiniGPT-v2 through the clients a user of MiniGPT-4 already has: the batch command
(``python -m minigpt4.inference``) and the OpenAI-compatible server (``python -m
minigpt4.serve``), each from the shipped ``eval_configs/minigptv2_eval.yaml`` with ``--options``
pointing at the tiny v2 trained to answer with a box (tests/v2_grounded.py). Its answer is the
box as text, in the v2 prompt (``<s>[INST] <Img>...</Img> question [/INST]``): the clients pass
it on untouched. The lmms-eval plugin's run is in tests/test_lmms_eval_v2.py.
"""

from __future__ import annotations

import json
import sys

import openai
import pytest

from minigpt4.inference import main as inference_main
from tests.process_helpers import free_port, serving
from tests.serve_helpers import data_url, user_with_image
from tests.v2_grounded import ANSWER, QUESTION, grounded_options, scene

V2_EVAL = "eval_configs/minigptv2_eval.yaml"
MODEL = "minigpt_v2-grounded_checkpoint"  # <arch>-<checkpoint file name>: the variant named


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("v2_scene") / "scene.png"
    scene().save(path)
    return path


def test_batch_command_answers_with_the_box(scene_file, tmp_path):
    out = tmp_path / "answers.jsonl"
    args = ["--cfg-path", V2_EVAL, "--images", str(scene_file), str(scene_file)]
    args += ["--prompt", QUESTION, "--out", str(out), "--device", "cpu", "--greedy"]
    args += ["--batch-size", "2", "--options", *grounded_options()]
    inference_main(args)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [{"image": str(scene_file), "prompt": QUESTION, "answer": ANSWER}] * 2


def test_server_names_the_variant_and_keeps_boxes_as_text(scene_file, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", V2_EVAL, "--device", "cpu"]
    cmd += ["--port", str(port), "--options", *grounded_options()]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/health", tmp_path / "serve.log", env={"OMP_NUM_THREADS": "1"}):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        assert [m.id for m in client.models.list()] == [MODEL]
        messages = [user_with_image(data_url(scene()), QUESTION)]
        response = client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0, max_tokens=40
        )
        assert response.choices[0].message.content == ANSWER
        assert response.choices[0].finish_reason == "stop"
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, max_tokens=40, stream=True
            )
        )
        streamed = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(streamed) == ANSWER and sum(1 for s in streamed if s) > 1

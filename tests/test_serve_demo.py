"""``demo.py --api``: the web demo and the OpenAI-compatible API from one process and model.

The demo (tiny-world model, ``--seed 7``) is asked about a held-out image through its gradio API,
and the same image and question are sent through the ``openai`` client with ``seed=7`` and the
demo's sampling settings: one Chat answers both, so the answers are the same.
"""

from __future__ import annotations

import sys

import httpx
import openai
import pytest

from tests.process_helpers import free_port, serving
from tests.serve_helpers import data_url, png_bytes, user_with_image
from tiny_world import text, world

MODEL = "mini_gpt4-pretrained_minigpt4_tiny"
SEED = 7


@pytest.fixture(scope="module")
def demo_with_api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo_api")
    port = free_port()
    cmd = [sys.executable, "demo.py", "--cfg-path", "eval_configs/minigpt4_tiny_eval.yaml"]
    cmd += ["--device", "cpu", "--server-port", str(port), "--seed", str(SEED), "--api"]
    url = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{url}/health", tmp / "demo.log", env={"OMP_NUM_THREADS": "1"}):
        yield url, tmp


def test_demo_and_api_answer_from_one_model(demo_with_api):
    from gradio_client import Client, handle_file

    url, tmp = demo_with_api
    assert httpx.get(f"{url}/").status_code == 200  # the page
    assert httpx.get(f"{url}/config").json()["title"] == "MiniGPT-4"
    sample = world.make_sample(7777, 2)
    image_path = tmp / "held_out.png"
    image_path.write_bytes(png_bytes(sample.image))

    demo = Client(f"{url}/", verbose=False)
    demo.predict(handle_file(str(image_path)), "", api_name="/upload")
    _, history = demo.predict(text.DEMO_QUESTION, [], api_name="/ask")
    final = demo.predict(history, 1, 1.0, api_name="/answer")  # beams 1, temperature 1.0
    demo.close()
    demo_answer = "".join(part["text"] for part in final[-1]["content"])

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    response = client.chat.completions.create(
        model=MODEL,
        messages=[user_with_image(data_url(sample.image), text.DEMO_QUESTION)],
        seed=SEED,
    )
    assert response.choices[0].message.content == demo_answer

    greedy = client.chat.completions.create(
        model=MODEL,
        messages=[user_with_image(data_url(sample.image), text.DEMO_QUESTION)],
        temperature=0,
    )
    assert world.scene_matches(sample.scene, greedy.choices[0].message.content)
    client.close()


def test_api_and_share_are_refused_together():
    from demo import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--cfg-path", "x.yaml", "--api", "--share"])
    args = parse_args(["--cfg-path", "x.yaml", "--api", "--api-key", "k", "--max-batch-size", "4"])
    assert (args.api, args.api_key, args.max_batch_size) == (True, "k", 4)

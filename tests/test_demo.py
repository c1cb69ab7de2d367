"""The web demo, started as users start it (``python demo.py ...``) on the tiny reference model.

One server (a subprocess on 127.0.0.1, CPU, the tiny reference weights) serves every test here:
the HTTP API driven through ``gradio_client`` (upload, ask, streamed answer, second turn,
restart, refused questions), and a real headless Chromium that uploads an image, asks and sees
the answer. The model's weights are random, so the answers are gibberish; the plumbing is what
is tested.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.model_fixtures import tiny_model_config
from tests.process_helpers import free_port, serving

CHROMIUM = "/usr/bin/chromium"
SEED = 7


def write_tiny_eval_config(path: Path) -> Path:
    """An eval config in the shape of eval_configs/minigpt4_eval.yaml over the tiny weights."""
    cfg = OmegaConf.create(
        {
            # low_resource as in the shipped eval config: on CPU too, an 8-bit LLM
            "model": tiny_model_config(stage=2, low_resource=True),
            "datasets": {
                "cc_sbu_align": {
                    "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 224}},
                    "text_processor": {"train": {"name": "blip_caption"}},
                }
            },
            "run": {"task": "image_text_pretrain"},
        }
    )
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    pixels = np.zeros((180, 240, 3), dtype=np.uint8)
    pixels[...] = (30, 90, 200)
    pixels[40:140, 60:180] = (230, 40, 40)  # a red rectangle on blue
    pixels = np.clip(pixels + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """``python demo.py`` on a free port; yields (url, log path)."""
    tmp = tmp_path_factory.mktemp("demo")
    cfg_path = write_tiny_eval_config(tmp / "tiny_eval.yaml")
    port = free_port()
    log_path = tmp / "demo.log"
    cmd = [
        sys.executable,
        "demo.py",
        "--cfg-path",
        str(cfg_path),
        "--device",
        "cpu",
        "--server-port",
        str(port),
        "--seed",
        str(SEED),
        "--options",
        "model.max_txt_len=160",
    ]
    url = f"http://127.0.0.1:{port}/"
    with serving(cmd, url, log_path):
        yield url, log_path


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def test_page_layout_is_the_originals():
    """build_demo(chat) builds the page without touching the chat (no model needed)."""
    import gradio as gr

    from demo import build_demo
    from minigpt4.conversation import Chat

    demo = build_demo(Chat.__new__(Chat))
    blocks = list(demo.blocks.values())

    def of(kind):
        return [b for b in blocks if type(b) is kind]

    markdown = [b.value for b in of(gr.Markdown)]
    assert markdown[0] == '<h1 align="center">Demo of MiniGPT-4</h1>'
    assert markdown[1] == (
        "<h3>This is the demo of MiniGPT-4. Upload your images and start chatting!</h3>"
    )
    assert [b.type for b in of(gr.Image)] == ["pil"]
    buttons = of(gr.Button)
    assert [b.value for b in buttons] == ["Upload & Start Chat", "Restart"]
    assert buttons[0].variant == "primary" and buttons[0].interactive
    beams, temperature = of(gr.Slider)
    assert (beams.label, beams.minimum, beams.maximum, beams.value, beams.step) == (
        "beam search numbers)",
        1,
        10,
        1,
        1,
    )
    assert (temperature.label, temperature.minimum, temperature.maximum) == (
        "Temperature",
        0.1,
        2.0,
    )
    assert (temperature.value, temperature.step) == (1.0, 0.1)
    assert [b.label for b in of(gr.Chatbot)] == ["MiniGPT-4"]
    (box,) = of(gr.Textbox)
    assert (box.label, box.placeholder, box.interactive) == (
        "User",
        "Please upload your image first",
        False,
    )
    assert len(of(gr.State)) == 2


def test_startup_logs_and_local_binding(demo_server):
    url, log_path = demo_server
    log = log_path.read_text()
    assert "Initializing Chat" in log
    assert "Initialization Finished" in log
    assert log.index("Initializing Chat") < log.index("Initialization Finished")
    assert "low_resource: True on CPU: the LLM is loaded in 8-bit" in log
    assert f"Running on local URL:  {url.rstrip('/')}" in log  # bound to 127.0.0.1 by default
    assert "gradio.live" not in log  # no share link unless --share


def test_chat_through_the_api(demo_server, image_path):
    from gradio_client import Client, handle_file

    url, _ = demo_server
    client = Client(url, verbose=False)

    # A question before any image is refused with a clear placeholder.
    box, history = client.predict("What is it?", [], api_name="/ask")
    assert box["placeholder"] == "Please upload your image first"
    assert history == []

    image_update, box = client.predict(handle_file(str(image_path)), "", api_name="/upload")
    assert image_update["interactive"] is False
    assert box["interactive"] is True and box["placeholder"] == "Type and press Enter"

    # An empty question is refused, and the answer step that follows does nothing.
    box, history = client.predict("   ", [], api_name="/ask")
    assert box["placeholder"] == "Input should not be empty!"
    assert client.predict(history, 1, 1.0, api_name="/answer") == []

    box, history = client.predict("What is in the picture?", [], api_name="/ask")
    assert box == ""
    assert [(m["role"], _text(m)) for m in history] == [("user", "What is in the picture?")]

    job = client.submit(history, 1, 1.0, api_name="/answer")
    final = job.result(timeout=300)
    streamed = [_text(out[-1]) for out in job.outputs() if out and out[-1]["role"] == "assistant"]
    assert len(streamed) > 1, "the answer should arrive in several pieces"
    assert [m["role"] for m in final] == ["user", "assistant"]
    answer = _text(final[-1])
    assert answer and streamed[-1] == answer
    assert "###" not in answer

    # Second turn in the same conversation (with beam search: one piece).
    _, history = client.predict("And the colours?", final, api_name="/ask")
    final2 = client.predict(history, 2, 1.0, api_name="/answer")
    assert [m["role"] for m in final2] == ["user", "assistant", "user", "assistant"]
    assert _text(final2[0]) == "What is in the picture?" and _text(final2[1]) == answer

    chatbot, image_update, box = client.predict(api_name="/restart")
    assert chatbot == []
    assert image_update["value"] is None and image_update["interactive"] is True
    assert box["placeholder"] == "Please upload your image first" and box["interactive"] is False

    # --seed: a fresh session asking the same question gets the same (sampled) answer.
    other = Client(url, verbose=False)
    other.predict(handle_file(str(image_path)), "", api_name="/upload")
    _, history = other.predict("What is in the picture?", [], api_name="/ask")
    again = other.predict(history, 1, 1.0, api_name="/answer")
    assert _text(again[-1]) == answer


@pytest.mark.browser
def test_real_browser(demo_server, image_path, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, _ = demo_server
    shot = tmp_path / "demo.png"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ],
            viewport={"width": 1200, "height": 820},
        )
        try:
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            expect(page.get_by_role("heading", name="Demo of MiniGPT-4", exact=True)).to_be_visible(
                timeout=60_000
            )
            textbox = page.get_by_role("textbox", name="User")
            expect(textbox).to_be_disabled()

            page.locator("input[type=file]").first.set_input_files(str(image_path))
            page.get_by_role("button", name="Upload & Start Chat").click()
            expect(page.get_by_role("button", name="Start Chatting")).to_be_visible(timeout=60_000)
            expect(textbox).to_be_enabled(timeout=60_000)

            textbox.fill("What is in the picture?")
            textbox.press("Enter")
            user_msg = page.locator("[data-testid='user']")
            bot_msg = page.locator("[data-testid='bot']")
            expect(user_msg.first).to_contain_text("What is in the picture?", timeout=60_000)
            expect(bot_msg.first).not_to_be_empty(timeout=120_000)
            # wait until streaming has finished: the textbox is usable and the text stops moving
            page.wait_for_timeout(1000)
            assert bot_msg.first.inner_text().strip()
            page.screenshot(path=str(shot))

            # A question that can never fit with the image is refused, the reason in the page.
            textbox.fill("What is it? " * 2000)
            textbox.press("Enter")
            expect(page.get_by_text("This question is too long")).to_be_visible(timeout=60_000)
            expect(user_msg).to_have_count(1)
        finally:
            context.close()
    assert shot.stat().st_size > 10_000
    target = os.environ.get("MINIGPT4_DEMO_SCREENSHOT")
    if target:  # how docs/demo.png is made
        shutil.copyfile(shot, target)

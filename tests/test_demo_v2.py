"""The MiniGPT-v2 demo, started as users start it (``python demo_v2.py --cfg-path
eval_configs/minigptv2_eval.yaml --options ...``), on the tiny v2 trained to answer with a box
(tests/v2_grounded.py): the API (grounding answer streamed, coloured, its boxes drawn; an
[identify] question with a drawn region; restart), a real headless Chromium (upload, the
Grounding shortcut, send, the answer image's pixels), and the original's conversation history
(its second prompt) on set V.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from minigpt4.common.boxes import demo_boxes
from tests.model_fixtures import load_v2_reference, v2_options
from tests.process_helpers import free_port, serving
from tests.v2_grounded import ANSWER, QUESTION, SCENE_SIZE, grounded_options, scene

CHROMIUM = "/usr/bin/chromium"
RED = (255, 0, 0)  # the first phrase's colour in the original
# the original's coloured text of ANSWER: boxes removed, the phrase in the first colour
COLOURED = '<span style="color:rgb(255, 0, 0)">green</span> '
DRAWN = (64, 60, 223, 179)  # a region drawn on the scene, in its pixels
DRAWN_BOX = "{<20><25><69><74>}"  # ... on the 0-100 grid (mask2bbox: nearest to 100 x 100)
IDENTIFIED = r"\[identify\] what is this \{<(\d+)><(\d+)><(\d+)><(\d+)>\}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("demo_v2_files")
    scene().save(tmp / "scene.png")
    layer = Image.new("RGBA", SCENE_SIZE, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle(DRAWN, fill=(255, 255, 255, 255))
    layer.save(tmp / "layer.png")
    return {"scene": tmp / "scene.png", "layer": tmp / "layer.png"}


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo_v2")
    port = free_port()
    cmd = [sys.executable, "demo_v2.py", "--cfg-path", "eval_configs/minigptv2_eval.yaml"]
    cmd += ["--device", "cpu", "--server-port", str(port), "--seed", "7"]
    cmd += ["--options", *grounded_options()]
    url = f"http://127.0.0.1:{port}/"
    with serving(cmd, url, tmp / "demo_v2.log"):
        yield url


def _text(message: dict) -> str:
    return "".join(part.get("text", "") for part in message["content"] if part["type"] == "text")


def _image(message: dict) -> Image.Image | None:
    files = [part for part in message["content"] if part["type"] == "file"]
    return Image.open(files[0]["file"]).convert("RGB") if files else None  # the client's copy


def assert_box_drawn(view: Image.Image, text: str, colour=RED) -> None:
    """Every box the demo's parser finds in ``text`` is outlined in ``colour`` on ``view``."""
    mode, entities = demo_boxes(text, view.width, view.height)
    boxes = entities if mode == "single" else [b for bs in entities.values() for b in bs]
    assert boxes, text
    pixels = np.asarray(view)
    for x1, y1, x2, y2 in ([int(v) for v in box] for box in boxes):
        ym, xm = (y1 + y2) // 2, (x1 + x2) // 2
        for x, y in ((x1, ym), (x2, ym), (xm, y2)):
            assert tuple(pixels[y, x]) == colour, (x, y, tuple(pixels[y, x]))
        assert tuple(pixels[ym, xm]) != colour  # an outline, not a filled box


def test_page_layout_is_the_originals():
    import gradio as gr

    from demo_v2 import TASKS, build_demo
    from minigpt4.conversation import Chat

    demo = build_demo(Chat.__new__(Chat))
    blocks = list(demo.blocks.values())

    def of(kind):
        return [b for b in blocks if type(b) is kind]

    assert of(gr.Markdown)[0].value == '<h1 align="center">MiniGPT-v2 Demo</h1>'
    (temperature,) = of(gr.Slider)
    assert (temperature.label, temperature.minimum, temperature.maximum) == (
        "Temperature",
        0.1,
        1.5,
    )
    assert (temperature.value, temperature.step) == (0.6, 0.1)
    assert [b.value for b in of(gr.Button)] == ["Restart", "Send"]
    (shortcuts,) = of(gr.Dataset)
    assert shortcuts.label == "Task Shortcuts"
    assert [name for name, _, _ in TASKS] == [
        "No Tag",
        "Grounding",
        "Refer",
        "Detection",
        "Identify",
        "VQA",
    ]
    assert [b.label for b in of(gr.Chatbot)] == ["MiniGPT-v2"]
    assert len(of(gr.ImageEditor)) == 1


def test_a_taken_port_fails_before_the_model_loads(tmp_path):
    """The port is taken first (minigpt4.serve.ports.listen): a busy one is a message naming
    --server-port, and the model (a config that does not exist here) is never read."""
    from minigpt4.serve.ports import listen

    held = listen("127.0.0.1", 0)
    port = held.getsockname()[1]
    try:
        cmd = [sys.executable, "demo_v2.py", "--cfg-path", str(tmp_path / "absent.yaml")]
        done = subprocess.run(
            [*cmd, "--server-port", str(port)],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        held.close()
    assert done.returncode == 1, done.stderr
    assert f"--server-port {port}: 127.0.0.1:{port} cannot be used" in done.stderr
    assert "absent.yaml" not in done.stderr and "Traceback" not in done.stderr


def test_grounding_identify_and_restart_through_the_api(demo_server, files):
    from gradio_client import Client, handle_file

    client = Client(demo_server, verbose=False)
    editor = {"background": handle_file(str(files["scene"])), "layers": [], "composite": None}
    assert client.predict(1, api_name="/task") == (
        QUESTION,
        "**Hint:** Send the command to generate a grounded image description",
    )
    box, history = client.predict(QUESTION, editor, api_name="/ask")
    assert box["value"] == "" and [_text(m) for m in history] == [QUESTION]

    job = client.submit(0.6, api_name="/ask_answer")
    final = job.result(timeout=300)
    streamed = [_text(out[-1]) for out in job.outputs() if out and out[-1]["role"] == "assistant"]
    assert len(set(streamed)) > 1, "the answer should arrive in several pieces"
    assert _text(final[-1]) == "&lt;p&gt;green&lt;/p&gt; {&lt;20&gt;&lt;25&gt;&lt;70&gt;&lt;75&gt;}"

    shown = client.predict(api_name="/ask_visualize")
    assert [m["role"] for m in shown] == ["user", "assistant", "assistant"]
    assert _text(shown[1]) == COLOURED
    view = _image(shown[2])
    assert view.size == (500, 375)  # the original's 500-px-wide view
    assert_box_drawn(view, ANSWER)

    # [identify] without a box: the drawn region becomes the box, shown drawn in the chat
    editor["layers"] = [handle_file(str(files["layer"]))]
    _, history = client.predict("[identify] what is this", editor, api_name="/send")
    question = "[identify] what is this" + DRAWN_BOX
    assert [_text(m) for m in history[-2:]] == [question, ""]
    assert_box_drawn(_image(history[-1]), question)
    client.predict(0.6, api_name="/send_answer")

    chatbot, image, box = client.predict(api_name="/restart")
    assert chatbot == [] and image is None and box["placeholder"] == "Upload your image and chat"


def test_second_prompt_is_the_originals(tmp_path):
    """demo_v2.py keeps "</s>" for each answer: its second prompt on set V is the original's
    (``chat.demo_v2_history_variant``), and a new image starts a new conversation."""
    from demo_v2 import build_demo
    from minigpt4.conversation.loading import load_chat

    ref = load_v2_reference()
    turns = ref["chat"]["demo_v2_history_variant"]["turns"]
    chat = load_chat("eval_configs/minigptv2_eval.yaml", "cpu", v2_options(ref["tiny_hparams"]))
    handlers = {f.api_name: f.fn for f in build_demo(chat).fns.values()}
    image = Image.fromarray(np.asarray(ref["raw_images_uint8"][0]))
    editor = {"background": image, "layers": []}
    session = None
    for turn in turns:
        _, _, session = handlers["ask"](turn["question"], session, editor)
        probe = session.conv.copy()
        probe.append_message(probe.roles[1], None)
        assert probe.get_prompt() == turn["prompt"]
        for _ in handlers["ask_answer"](session, 1.0):
            pass
    other = {"background": Image.fromarray(np.asarray(ref["raw_images_uint8"][1])), "layers": []}
    _, history, fresh = handlers["ask"](turns[0]["question"], session, other)
    assert fresh is not session and [m["content"] for m in history] == [turns[0]["question"]]


def fetch_image(page, img) -> Image.Image:
    """The image an <img> of the page shows, as the browser loads it."""
    response = page.request.get(img.get_attribute("src"))
    return Image.open(io.BytesIO(response.body())).convert("RGB")


EMPTY_EDITOR = "Upload an image or select the draw tool to start"


def open_with_image(page, url: str, path, tries: int = 3) -> None:
    """Open the demo and upload ``path`` into its image editor until the editor shows it.

    The editor's empty text is drawn before its WebGL canvas exists, and twice (a loaded full
    suite, a cold first run) one page showed none of five uploads. Each try therefore loads the
    page afresh, as a user reloads a stuck page, and waits for the canvas; the page's errors
    explain a last failure.
    """
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    for attempt in range(1, tries + 1):
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        try:
            heading = page.get_by_role("heading", name="MiniGPT-v2 Demo", exact=True)
            expect(heading).to_be_visible(timeout=60_000)
            empty_editor = page.get_by_text(EMPTY_EDITOR)
            expect(empty_editor).to_be_visible(timeout=60_000)
            expect(page.locator("canvas").first).to_be_attached(timeout=30_000)
            page.locator("input[type=file]").first.set_input_files(str(path))
            expect(empty_editor).to_be_hidden(timeout=30_000)
            return
        except AssertionError as failure:
            if attempt == tries:
                message = f"try {attempt}: {failure}; the page said: {errors[-10:]}"
                raise AssertionError(message) from None


@pytest.mark.browser
def test_real_browser(demo_server, files, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
            viewport={"width": 1300, "height": 900},
        )
        try:
            page = context.new_page()
            open_with_image(page, demo_server, files["scene"])
            page.get_by_role("button", name="Grounding", exact=True).click()
            textbox = page.get_by_placeholder("Upload your image and chat")
            expect(textbox).to_have_value(QUESTION, timeout=30_000)
            page.get_by_role("button", name="Send", exact=True).click()

            bot = page.locator("[data-testid='bot']")
            answer_image = bot.locator("img").first
            expect(answer_image).to_be_visible(timeout=120_000)
            span = bot.first.locator("span[style]", has_text="green")
            expect(span).to_have_css("color", "rgb(255, 0, 0)")
            view = fetch_image(page, answer_image)

            # [identify]: a stroke drawn with the brush becomes the question's box
            page.get_by_role("button", name="Brush", exact=True).click()
            canvas = page.locator("canvas").first.bounding_box()
            x0, y0 = canvas["x"] + 0.35 * canvas["width"], canvas["y"] + 0.4 * canvas["height"]
            page.mouse.move(x0, y0)
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(x0 + 8 * step, y0 + 5 * step)
            page.mouse.up()
            page.get_by_role("button", name="Identify", exact=True).click()
            expect(textbox).to_have_value("[identify] what is this ", timeout=30_000)
            page.get_by_role("button", name="Send", exact=True).click()
            user = page.locator("[data-testid='user']")
            expect(user.locator("img").first).to_be_visible(timeout=60_000)
            question = user.filter(has_text="[identify]").first.inner_text().strip()
            drawn = fetch_image(page, user.locator("img").first)
            page.screenshot(path=str(tmp_path / "demo_v2.png"))
        finally:
            context.close()
    assert view.size == (500, 375)
    assert_box_drawn(view, ANSWER)
    x1, y1, x2, y2 = (int(v) for v in re.fullmatch(IDENTIFIED, question).groups())
    assert 0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 100 and x2 - x1 > 10 and y2 - y1 > 10
    assert_box_drawn(drawn, question)

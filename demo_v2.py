"""MiniGPT-v2 web demo: ``python demo_v2.py --cfg-path eval_configs/minigptv2_eval.yaml``.

The original's page (docs/demo_v2.md): an image to draw on, task shortcuts that write the task
tag into the text box ([grounding], [refer], [detection], [identify], [vqa], no tag), a
temperature slider, Restart, and a chat whose answers stream in; an answer holding boxes is
followed by the image with the boxes drawn in colours, its phrases coloured in the text. For
``[identify]`` without a box in the text, the region drawn on the image becomes the box
(``mask2bbox``) and the question's box is shown drawn. A new image starts a new conversation.
Server flags as demo.py's: 127.0.0.1 unless ``--server-name``, ``--share`` opt-in, the port
taken before the model loads.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from gradio.processing_utils import save_pil_to_cache
from PIL import Image, ImageChops

from demo import (
    DEFAULT_PORT,
    PORT_ENV,
    build_chat,
    launch,
    port_number,
    requested_port,
    reserve_port,
)
from minigpt4.common.box_drawing import draw_answer
from minigpt4.common.boxes import mask2bbox
from minigpt4.common.cli import run_command
from minigpt4.common.logger import setup_logger
from minigpt4.conversation.chat import Chat
from minigpt4.conversation.templates import Conversation

logger = logging.getLogger("minigpt4.demo_v2")

DEFAULT_CFG = "eval_configs/minigptv2_eval.yaml"
TITLE = """<h1 align="center">MiniGPT-v2 Demo</h1>"""
# The original showed a badge image from img.shields.io: a plain link works offline.
ARTICLE = "<p><a href='https://minigpt-v2.github.io'>Project Page</a></p>"
INTRODUCTION = """
For Abilities Involving Visual Grounding:
1. Grounding: CLICK **Send** to generate a grounded image description.
2. Refer: Input a referring object and CLICK **Send**.
3. Detection: Write a caption or phrase, and CLICK **Send**.
4. Identify: Draw the bounding box on the uploaded image window and CLICK **Send** to generate the bounding box. (CLICK "clear" button before re-drawing next time).
5. VQA: Input a visual question and CLICK **Send**.
6. No Tag: Input whatever you want and CLICK **Send** without any tagging

You can also simply chat in free form!
"""  # noqa: E501 - the original's text
# The task shortcuts: name, what it writes into the text box, the hint shown below.
TASKS = (
    ("No Tag", "", "**Hint:** Type in whatever you want"),
    (
        "Grounding",
        "[grounding] describe this image in detail",
        "**Hint:** Send the command to generate a grounded image description",
    ),
    (
        "Refer",
        "[refer] ",
        "**Hint:** Type in a phrase about an object in the image and send the command",
    ),
    (
        "Detection",
        "[detection] ",
        "**Hint:** Type in a caption or phrase, and see object locations in the image",
    ),
    (
        "Identify",
        "[identify] what is this ",
        "**Hint:** Draw a bounding box on the uploaded image then send the command. Click the "
        '"clear" botton on the top right of the image before redraw',
    ),
    ("VQA", "[vqa] ", "**Hint:** Send a question to get a short answer"),
)
FIRST_HINT = "**Hint:** Upload your image and chat"
PLACEHOLDER = "Upload your image and chat"
PLACEHOLDER_EMPTY = "Input should not be empty!"
IDENTIFY = "[identify]"
BRUSH_SIZE = 20  # the original's brush_radius
# The original's generation for the demo (its Chat defaults otherwise: sampling, top_p 0.9).
MAX_NEW_TOKENS, MAX_LENGTH = 500, 2000
# demo_v2.py keeps "</s>" in place of each finished answer, so the next turn's prompt reads
# "...[/INST]</s><s>[INST] ..." (not the answer text as Chat does): kept, prompts depend on it.
ANSWER_IN_HISTORY = "</s>"
_INTEGER = re.compile(r"-?\d+")


@dataclass
class Session:
    """One user's conversation about one image."""

    image: Image.Image
    key: str
    conv: Conversation
    img_list: list = field(default_factory=list)
    answer: str = ""  # the last answer's text, for drawing its boxes
    history: list[dict[str, Any]] = field(default_factory=list)  # the chat as shown


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Demo")
    parser.add_argument("--cfg-path", default=DEFAULT_CFG, help="path to configuration file.")
    parser.add_argument("--gpu-id", type=int, default=0, help="specify the gpu to load the model.")
    parser.add_argument(
        "--options",
        nargs="+",
        help="override settings of the config file: key=value pairs such as "
        "model.ckpt=/path/to/minigptv2_checkpoint.pth",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="where to run the model (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--server-name", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)"
    )
    parser.add_argument(
        "--server-port",
        type=port_number,
        default=None,
        help=f"port (default: {DEFAULT_PORT}, or ${PORT_ENV}); an error if it is taken",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--seed", type=int, default=None, help="seed every answer's sampling")
    return parser.parse_args(argv)


def editor_image(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """The uploaded image (RGB) and the drawn region (an L mask, None if nothing is drawn)
    of the image editor's value."""
    if not value or value.get("background") is None:
        return None, None
    image = value["background"].convert("RGB")
    mask = None
    for layer in value.get("layers") or []:
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a else 0)
        mask = alpha if mask is None else ImageChops.lighter(mask, alpha)
    if mask is not None and mask.getbbox() is None:
        mask = None
    return image, mask


def image_key(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()


def with_drawn_box(message: str, mask: Image.Image | None) -> str:
    """An ``[identify]`` question without a box gets the drawn region's box (the original)."""
    if IDENTIFY in message and len(_INTEGER.findall(message)) != 4:
        return message + mask2bbox(mask)
    return message


def image_message(role: str, image: Image.Image, cache_dir: str) -> dict[str, Any]:
    """A chat message showing ``image``, saved as PNG (lossless: the boxes keep their colours)
    in gradio's cache folder, from where the page loads it."""
    path = save_pil_to_cache(image, cache_dir, name="boxes", format="png")
    return {"role": role, "content": {"path": path, "mime_type": "image/png"}}


def shown(session: Session) -> list[dict[str, Any]]:
    """The chat as the page shows it (a copy: gradio compares it with what it sent before)."""
    return [dict(message) for message in session.history]


def _last_question_open(session: Session | None) -> bool:
    """Whether the conversation ends with a question waiting for its answer."""
    if session is None or not session.conv.messages:
        return False
    role, text = session.conv.messages[-1]
    return role == session.conv.roles[0] and not text.endswith("</Img>")


def build_demo(chat: Chat, seed: int | None = None) -> gr.Blocks:
    """The demo page around ``chat``; ``seed`` seeds each answer (``None``: unseeded)."""

    def start(image: Image.Image) -> Session:
        session = Session(image=image, key=image_key(image), conv=chat.new_conversation())
        chat.upload_img(image, session.conv, session.img_list)
        return session

    def gradio_ask(message: str, session: Session | None, editor: dict | None):
        image, mask = editor_image(editor)
        if image is None:
            gr.Warning("Upload an image first, then ask about it.")
            return gr.Textbox(value=message), gr.skip(), session
        if not message or not message.strip():
            return gr.Textbox(value="", placeholder=PLACEHOLDER_EMPTY), gr.skip(), session
        message = with_drawn_box(message, mask)
        if session is None or session.key != image_key(image):
            session = start(image)  # a new image: a new conversation
        over = chat.question_overflow(message, session.img_list)
        if over:
            gr.Warning(
                f"This question is too long: with the image it is {over} tokens over what the "
                "model can see before its answer. Shorten the question."
            )
            return gr.Textbox(value=message), shown(session), session
        chat.ask(message, session.conv)
        session.history.append({"role": "user", "content": message})
        if IDENTIFY in message:
            view, _ = draw_answer(image, message)
            if view is not None:
                session.history.append(image_message("user", view, demo.GRADIO_CACHE))
        return gr.Textbox(value="", placeholder=PLACEHOLDER), shown(session), session

    def gradio_answer(session: Session | None, temperature: float) -> Iterator[tuple]:
        if not _last_question_open(session):
            yield gr.skip(), session
            return
        session.history.append({"role": "assistant", "content": ""})
        text = ""
        for text in chat.stream_text(
            session.conv,
            session.img_list,
            temperature=float(temperature),
            max_new_tokens=MAX_NEW_TOKENS,
            max_length=MAX_LENGTH,
            seed=seed,
        ):
            session.history[-1]["content"] = html.escape(text, quote=False)  # boxes as text
            yield shown(session), session
        session.answer = text
        session.conv.messages[-1][1] = ANSWER_IN_HISTORY

    def gradio_visualize(session: Session | None):
        if session is None or not session.answer:
            return gr.skip()
        view, coloured = draw_answer(session.image, session.answer)
        session.answer = ""
        if view is None:
            return gr.skip()
        if coloured:
            session.history[-1] = {"role": "assistant", "content": coloured}
        session.history.append(image_message("assistant", view, demo.GRADIO_CACHE))
        return shown(session)

    def gradio_reset():
        return [], None, gr.Textbox(value="", placeholder=PLACEHOLDER), None

    def gradio_taskselect(index: int):
        _, prompt, hint = TASKS[index]
        return prompt, hint

    with gr.Blocks(title="MiniGPT-v2") as demo:
        gr.Markdown(TITLE)
        gr.Markdown(ARTICLE)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.ImageEditor(
                    type="pil",
                    sources=["upload", "clipboard"],
                    brush=gr.Brush(default_size=BRUSH_SIZE, colors=["#ffffff"]),
                    label="Image",
                    layers=False,
                )
                temperature = gr.Slider(
                    minimum=0.1, maximum=1.5, value=0.6, step=0.1, label="Temperature"
                )
                clear = gr.Button("Restart")
                gr.Markdown(INTRODUCTION)
            with gr.Column(scale=2):
                session = gr.State(None)
                chatbot = gr.Chatbot(label="MiniGPT-v2", sanitize_html=True)
                shortcuts = gr.Dataset(
                    components=[gr.Textbox(visible=False)],
                    samples=[[name] for name, _, _ in TASKS],
                    type="index",
                    label="Task Shortcuts",
                )
                task_inst = gr.Markdown(FIRST_HINT)
                with gr.Row():
                    text_input = gr.Textbox(
                        placeholder=PLACEHOLDER, show_label=False, container=False, scale=8
                    )
                    send = gr.Button("Send", variant="primary", size="sm", scale=1)

        shortcuts.click(
            gradio_taskselect, [shortcuts], [text_input, task_inst], queue=False, api_name="task"
        )
        for trigger, name in ((text_input.submit, "ask"), (send.click, "send")):
            trigger(
                gradio_ask,
                [text_input, session, image],
                [text_input, chatbot, session],
                api_name=name,
            ).then(
                gradio_answer,
                [session, temperature],
                [chatbot, session],
                api_name=f"{name}_answer",
            ).then(gradio_visualize, [session], [chatbot], api_name=f"{name}_visualize")
        reset_outputs = [chatbot, image, text_input, session]
        clear.click(gradio_reset, None, reset_outputs, queue=False, api_name="restart")
        # the chatbot's own trash button restarts too (the model would answer in the old chat)
        chatbot.clear(gradio_reset, None, reset_outputs, queue=False, api_name="clear")
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logger()
    port = requested_port(args)
    reserved = reserve_port(args.server_name, port)  # a taken port fails before the model loads
    import minigpt4  # noqa: F401  (registers models and processors)

    logger.info("Initializing Chat")
    chat = build_chat(args)
    logger.info("Initialization Finished")
    demo = build_demo(chat, seed=args.seed)
    reserved.close()
    launch(demo, args.server_name, port, args.share)
    demo.block_thread()


if __name__ == "__main__":
    run_command(main, "demo_v2.py")

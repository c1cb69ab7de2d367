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
from typing import TYPE_CHECKING, Any

from PIL import ImageChops

from demo import add_page_arguments, chat_on_port, serve_page
from minigpt4.common.boxes import mask2bbox
from minigpt4.common.cli import run_command
from minigpt4.common.model_args import add_model_arguments, chat_from_args

if TYPE_CHECKING:  # gradio, torch and the model are imported once the arguments are read
    import gradio as gr
    from PIL import Image

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
    add_model_arguments(parser, cfg_default=DEFAULT_CFG)
    add_page_arguments(parser)
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


def shown(session: Session) -> list[dict[str, Any]]:
    """The chat as the page shows it (a copy: gradio compares it with what it sent before)."""
    return [dict(message) for message in session.history]


def _last_question_open(session: Session | None) -> bool:
    """Whether the conversation ends with a question waiting for its answer."""
    if session is None or not session.conv.messages:
        return False
    role, text = session.conv.messages[-1]
    return role == session.conv.roles[0] and not text.endswith("</Img>")


def draw_answer(image: Image.Image, text: str) -> tuple[Image.Image | None, str]:
    """:func:`minigpt4.common.box_drawing.draw_answer`, imported when the page first draws."""
    from minigpt4.common.box_drawing import draw_answer as draw

    return draw(image, text)


def image_message(role: str, image: Image.Image) -> dict[str, Any]:
    """A chat message showing ``image``, saved as PNG (lossless: the boxes keep their colours)
    in gradio's cache folder, from where the page loads it."""
    from gradio.processing_utils import save_pil_to_cache
    from gradio.utils import get_upload_folder

    path = save_pil_to_cache(image, get_upload_folder(), name="boxes", format="png")
    return {"role": role, "content": {"path": path, "mime_type": "image/png"}}


class Handlers:
    """The page's event handlers around one ``chat``; ``seed`` seeds each answer."""

    def __init__(self, chat: Chat, seed: int | None = None) -> None:
        self.chat = chat
        self.seed = seed

    def start(self, image: Image.Image) -> Session:
        session = Session(image=image, key=image_key(image), conv=self.chat.new_conversation())
        self.chat.upload_img(image, session.conv, session.img_list)
        return session

    def ask(self, message: str, session: Session | None, editor: dict | None):
        import gradio as gr

        image, mask = editor_image(editor)
        if image is None:
            gr.Warning("Upload an image first, then ask about it.")
            return gr.Textbox(value=message), gr.skip(), session
        if not message or not message.strip():
            return gr.Textbox(value="", placeholder=PLACEHOLDER_EMPTY), gr.skip(), session
        message = with_drawn_box(message, mask)
        if session is None or session.key != image_key(image):
            session = self.start(image)  # a new image: a new conversation
        over = self.chat.question_overflow(message, session.img_list)
        if over:
            gr.Warning(
                f"This question is too long: with the image it is {over} tokens over what the "
                "model can see before its answer. Shorten the question."
            )
            return gr.Textbox(value=message), shown(session), session
        self.chat.ask(message, session.conv)
        session.history.append({"role": "user", "content": message})
        if IDENTIFY in message:
            view, _ = draw_answer(image, message)
            if view is not None:
                session.history.append(image_message("user", view))
        return gr.Textbox(value="", placeholder=PLACEHOLDER), shown(session), session

    def answer(self, session: Session | None, temperature: float) -> Iterator[tuple]:
        import gradio as gr

        if not _last_question_open(session):
            yield gr.skip(), session
            return
        session.history.append({"role": "assistant", "content": ""})
        text = ""
        for text in self.chat.stream_text(
            session.conv,
            session.img_list,
            temperature=float(temperature),
            max_new_tokens=MAX_NEW_TOKENS,
            max_length=MAX_LENGTH,
            seed=self.seed,
        ):
            session.history[-1]["content"] = html.escape(text, quote=False)  # boxes as text
            yield shown(session), session
        session.answer = text
        session.conv.messages[-1][1] = ANSWER_IN_HISTORY

    @staticmethod
    def visualize(session: Session | None):
        import gradio as gr

        if session is None or not session.answer:
            return gr.skip()
        view, coloured = draw_answer(session.image, session.answer)
        session.answer = ""
        if view is None:
            return gr.skip()
        if coloured:
            session.history[-1] = {"role": "assistant", "content": coloured}
        session.history.append(image_message("assistant", view))
        return shown(session)

    @staticmethod
    def reset():
        import gradio as gr

        return [], None, gr.Textbox(value="", placeholder=PLACEHOLDER), None

    @staticmethod
    def select_task(index: int) -> tuple[str, str]:
        _, prompt, hint = TASKS[index]
        return prompt, hint


def build_demo(chat: Chat, seed: int | None = None) -> gr.Blocks:
    """The demo page around ``chat``; ``seed`` seeds each answer (``None``: unseeded)."""
    import gradio as gr

    handlers = Handlers(chat, seed)
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
            handlers.select_task, [shortcuts], [text_input, task_inst], queue=False, api_name="task"
        )
        for trigger, name in ((text_input.submit, "ask"), (send.click, "send")):
            trigger(
                handlers.ask,
                [text_input, session, image],
                [text_input, chatbot, session],
                api_name=name,
            ).then(
                handlers.answer,
                [session, temperature],
                [chatbot, session],
                api_name=f"{name}_answer",
            ).then(handlers.visualize, [session], [chatbot], api_name=f"{name}_visualize")
        reset_outputs = [chatbot, image, text_input, session]
        clear.click(handlers.reset, None, reset_outputs, queue=False, api_name="restart")
        # the chatbot's own trash button restarts too (the model would answer in the old chat)
        chatbot.clear(handlers.reset, None, reset_outputs, queue=False, api_name="clear")
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    chat, port, sock = chat_on_port(args, chat_from_args)
    serve_page(build_demo(chat, seed=args.seed), args, port, sock)


if __name__ == "__main__":
    run_command(main, "demo_v2.py")

"""MiniGPT-4 web demo: ``python demo.py --cfg-path eval_configs/minigpt4_eval.yaml --gpu-id 0``.

The page is the original's (image, "Upload & Start Chat", "Restart", beam-search and temperature
sliders, chatbot, text box); answers stream into the chatbot as they are generated. The server
binds 127.0.0.1 unless ``--server-name`` says otherwise; a public share link only with ``--share``.
The port (``--server-port``, default 7860 or ``$GRADIO_SERVER_PORT``) is taken before the model
loads: one that is in use or invalid is an error at once, never a silent move to another port.
An image that cannot be used (not an image, too large...) is refused with its reason in the page.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from minigpt4.common.cli import run_command
from minigpt4.common.model_args import add_model_arguments, chat_from_args
from minigpt4.serve.ports import listen
from minigpt4.serve.server import add_api_arguments, check_api_arguments

if TYPE_CHECKING:  # gradio, torch and the model are imported once the arguments are read
    import gradio as gr
    from PIL import Image

    from minigpt4.conversation.chat import Chat
    from minigpt4.conversation.templates import Conversation

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

logger = logging.getLogger("minigpt4.demo")

TITLE = """<h1 align="center">Demo of MiniGPT-4</h1>"""
DESCRIPTION = """<h3>This is the demo of MiniGPT-4. Upload your images and start chatting!</h3>"""
# The original showed these links as img.shields.io badges; plain links keep the page from
# fetching images over the network (broken images offline).
ARTICLE = (
    "<p><a href='https://minigpt-4.github.io'>Project Page</a> · "
    "<a href='https://github.com/Vision-CAIR/MiniGPT-4'>Github Code</a> · "
    "<a href='https://raw.githubusercontent.com/Vision-CAIR/MiniGPT-4/main/MiniGPT_4.pdf'>"
    "Paper PDF</a></p>"
)

PLACEHOLDER_UPLOAD_FIRST = "Please upload your image first"
PLACEHOLDER_TYPE = "Type and press Enter"
PLACEHOLDER_EMPTY = "Input should not be empty!"
UPLOAD_LABEL = "Upload & Start Chat"
STARTED_LABEL = "Start Chatting"
DEFAULT_PORT = 7860  # gradio's default, which $GRADIO_SERVER_PORT overrides
PORT_ENV = "GRADIO_SERVER_PORT"
MAX_PORT = 65535
# gradio prints this at launch; the demo's switch is --share, not launch(share=True).
GRADIO_SHARE_HINT = "To create a public link, set `share=True` in `launch()`."
SHARE_HINT = "To create a public link, restart with --share."


def port_number(text: str) -> int:
    """argparse type of ``--server-port``: an integer from 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-{MAX_PORT})")
    return port


def add_page_arguments(parser: argparse.ArgumentParser) -> None:
    """The web page's flags, the same in demo.py and demo_v2.py: where it is served, and the
    seed of its answers."""
    parser.add_argument(
        "--server-name", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)"
    )
    parser.add_argument(
        "--server-port",
        type=port_number,
        default=None,
        help=f"port (default: {DEFAULT_PORT}, or ${PORT_ENV}); an error if it is taken",
    )
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed every answer's sampling, for reproducible answers (default: unseeded)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Demo")
    add_model_arguments(parser)
    add_page_arguments(parser)
    parser.add_argument(
        "--api",
        action="store_true",
        help="also serve the OpenAI-compatible API (/v1) from this process and model",
    )
    add_api_arguments(parser)
    args = parser.parse_args(argv)
    if args.api and args.share:
        parser.error("--api serves through its own server: it cannot be used with --share")
    if args.api:
        check_api_arguments(parser, args)
    return args


def _message_text(content: Any) -> str:
    """Chatbot message content (a string, or Gradio 6's list of parts) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return "".join(_message_text(part) for part in content)


def _history(chatbot: list[dict] | None) -> list[dict[str, str]]:
    return [
        {"role": m["role"], "content": _message_text(m.get("content"))} for m in (chatbot or [])
    ]


def warn_of_overflow(over: int) -> None:
    """Tell the user when the conversation is ``over`` tokens longer than the model can see."""
    import gradio as gr

    if over:
        gr.Warning(
            f"The conversation is {over} tokens longer than the model can see: it answers "
            "without its beginning (the image may be out of view). Press Restart to start over."
        )


def after_refused_upload() -> tuple:
    """A refused upload changes nothing; touching the image and text box again clears the
    "Error" badges gradio leaves on a failed event's outputs (the toast says why)."""
    import gradio as gr

    return gr.Image(interactive=True), gr.Textbox(interactive=False)


def build_demo(chat: Chat, seed: int | None = None) -> gr.Blocks:
    """The demo page around ``chat``; ``seed`` seeds each answer (``None``: unseeded)."""
    import gradio as gr

    def gradio_reset(chat_state: Conversation | None, img_list: list | None):
        if chat_state is not None:
            chat_state.messages = []
        return (
            None,
            gr.Image(value=None, interactive=True),
            gr.Textbox(value="", placeholder=PLACEHOLDER_UPLOAD_FIRST, interactive=False),
            gr.Button(value=UPLOAD_LABEL, interactive=True),
            chat_state,
            [],
        )

    def upload_img(upload: dict | None, text_input: str, chat_state: Conversation | None):
        if upload is None:
            gr.Warning("Choose an image first, then press 'Upload & Start Chat'.")
            return None, None, gr.Button(interactive=True), chat_state, None
        image = open_upload(upload)
        chat_state = chat.new_conversation()
        img_list: list = []
        chat.upload_img(image, chat_state, img_list)
        return (
            gr.Image(interactive=False),
            gr.Textbox(interactive=True, placeholder=PLACEHOLDER_TYPE),
            gr.Button(value=STARTED_LABEL, interactive=False),
            chat_state,
            img_list,
        )

    def gradio_ask(
        user_message: str,
        chatbot: list | None,
        chat_state: Conversation | None,
        img_list: list | None,
    ):
        history = _history(chatbot)
        if chat_state is None:
            gr.Warning("Upload an image first ('Upload & Start Chat'), then ask about it.")
            return (
                gr.Textbox(placeholder=PLACEHOLDER_UPLOAD_FIRST, interactive=False),
                history,
                chat_state,
            )
        if not user_message or not user_message.strip():
            return gr.Textbox(interactive=True, placeholder=PLACEHOLDER_EMPTY), history, chat_state
        over = chat.question_overflow(user_message, img_list) if img_list else 0
        if over:
            gr.Warning(
                f"This question is too long: with the image it is {over} tokens over what the "
                "model can see before its answer. Shorten the question."
            )
            return gr.Textbox(value=user_message, interactive=True), history, chat_state
        chat.ask(user_message, chat_state)
        history.append({"role": "user", "content": user_message})
        return "", history, chat_state

    def gradio_answer(
        chatbot: list | None,
        chat_state: Conversation | None,
        img_list: list | None,
        num_beams: float,
        temperature: float,
    ) -> Iterator[tuple]:
        history = _history(chatbot)
        # Only a question waiting for its answer is answered: an empty or refused question
        # also triggers this step, and an image without a question is not a question.
        if (
            chat_state is None
            or not img_list
            or not chat_state.messages
            or chat_state.messages[-1][0] != chat_state.roles[0]
            or chat_state.messages[-1][1].endswith("</Img>")
        ):
            yield history, chat_state, img_list
            return
        warn_of_overflow(chat.overflow(chat_state, img_list))
        history.append({"role": "assistant", "content": ""})
        for text in chat.stream_text(
            conv=chat_state,
            img_list=img_list,
            num_beams=int(num_beams),
            temperature=float(temperature),
            seed=seed,
        ):
            history[-1]["content"] = text
            yield history, chat_state, img_list

    with gr.Blocks(title="MiniGPT-4") as demo:
        gr.Markdown(TITLE)
        gr.Markdown(DESCRIPTION)
        gr.Markdown(ARTICLE)

        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="pil")
                upload_button = gr.Button(value=UPLOAD_LABEL, interactive=True, variant="primary")
                clear = gr.Button("Restart")
                num_beams = gr.Slider(
                    minimum=1,
                    maximum=10,
                    value=1,
                    step=1,
                    interactive=True,
                    label="beam search numbers)",
                )
                temperature = gr.Slider(
                    minimum=0.1,
                    maximum=2.0,
                    value=1.0,
                    step=0.1,
                    interactive=True,
                    label="Temperature",
                )

            with gr.Column(scale=2):
                chat_state = gr.State()
                img_list = gr.State()
                chatbot = gr.Chatbot(label="MiniGPT-4")
                text_input = gr.Textbox(
                    label="User", placeholder=PLACEHOLDER_UPLOAD_FIRST, interactive=False
                )

        # preprocess=False: the upload arrives as a file, which the shared loader opens (gradio's
        # own PIL opening would fail with a bare "Error" badge and clip 16-bit images).
        upload_button.click(
            upload_img,
            [image, text_input, chat_state],
            [image, text_input, upload_button, chat_state, img_list],
            api_name="upload",
            preprocess=False,
        ).failure(after_refused_upload, None, [image, text_input], queue=False, api_name=False)
        text_input.submit(
            gradio_ask,
            [text_input, chatbot, chat_state, img_list],
            [text_input, chatbot, chat_state],
            api_name="ask",
        ).then(
            gradio_answer,
            [chatbot, chat_state, img_list, num_beams, temperature],
            [chatbot, chat_state, img_list],
            api_name="answer",
        )
        reset_outputs = [chatbot, image, text_input, upload_button, chat_state, img_list]
        clear.click(
            gradio_reset, [chat_state, img_list], reset_outputs, queue=False, api_name="restart"
        )
        # The chatbot's own trash button restarts too: clearing only the display would leave
        # the model answering within the old conversation.
        chatbot.clear(
            gradio_reset, [chat_state, img_list], reset_outputs, queue=False, api_name="clear"
        )
    return demo


def open_upload(upload: dict[str, Any]) -> Image.Image:
    """The uploaded file (gradio's FileData as a dict) as RGB, or a gr.Error saying why not."""
    import gradio as gr

    from minigpt4.processors.image_io import ImageLoadError, load_image

    path = upload.get("path")
    name = upload.get("orig_name") or os.path.basename(path or "") or "image"
    if not path:
        raise gr.Error("The upload did not arrive: choose the image again.")
    try:
        return load_image(path, name=name)
    except ImageLoadError as err:
        message = f"This image cannot be used: {err}"
        logger.warning("Upload refused. %s", message)  # one console line, no traceback
        raise gr.Error(message, print_exception=False) from err


def requested_port(args: argparse.Namespace) -> int:
    if args.server_port is not None:
        return args.server_port
    value = os.environ.get(PORT_ENV)
    if not value:
        return DEFAULT_PORT
    try:
        return port_number(value)
    except argparse.ArgumentTypeError as err:
        raise SystemExit(f"${PORT_ENV}: {err} (or pass --server-port)") from err


class _ShareHintFilter(io.TextIOBase):
    """stdout as gradio sees it at launch, with its share hint naming ``--share``."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text.replace(GRADIO_SHARE_HINT, SHARE_HINT))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def launch(demo: gr.Blocks, host: str, port: int, share: bool) -> None:
    """Start the server on exactly ``host:port`` and return (the caller may block on it)."""
    with contextlib.redirect_stdout(_ShareHintFilter(sys.stdout)):
        demo.queue().launch(
            server_name=host, server_port=port, share=share, prevent_thread_lock=True
        )


def chat_on_port(
    args: argparse.Namespace, make_chat: Callable[[argparse.Namespace], Chat]
) -> tuple[Chat, int, socket.socket]:
    """The logger, then the port (a taken port fails before the model loads), then the chat."""
    from minigpt4.common.logger import setup_logger

    setup_logger()
    port = requested_port(args)
    sock = listen(args.server_name, port, "--server-name", "--server-port")
    logger.info("Initializing Chat")
    chat = make_chat(args)
    logger.info("Initialization Finished")
    return chat, port, sock


def serve_page(demo: gr.Blocks, args: argparse.Namespace, port: int, sock: socket.socket) -> None:
    """Hand the checked port to gradio and serve the page until the process is stopped."""
    sock.close()  # gradio's launch binds the port itself
    launch(demo, args.server_name, port, args.share)
    demo.block_thread()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    chat, port, sock = chat_on_port(args, chat_from_args)
    demo = build_demo(chat, seed=args.seed)
    if args.api:
        from minigpt4.serve.server import run_with_demo

        run_with_demo(chat, demo.queue(), args, args.server_name, port, sock)
        return
    serve_page(demo, args, port, sock)


if __name__ == "__main__":
    run_command(main, "demo.py")

"""MiniGPT-4 web demo: ``python demo.py --cfg-path eval_configs/minigpt4_eval.yaml --gpu-id 0``.

The page is the original's (image, "Upload & Start Chat", "Restart", beam-search and temperature
sliders, chatbot, text box); answers stream into the chatbot as they are generated. The server
binds 127.0.0.1 unless ``--server-name`` says otherwise; a public share link only with ``--share``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from minigpt4.common.logger import setup_logger  # noqa: E402
from minigpt4.conversation.chat import Chat  # noqa: E402
from minigpt4.conversation.conversation import Conversation  # noqa: E402
from minigpt4.serve.server import add_api_arguments  # noqa: E402

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
DEFAULT_PORT = 7860  # gradio's


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Demo")
    parser.add_argument("--cfg-path", required=True, help="path to configuration file.")
    parser.add_argument("--gpu-id", type=int, default=0, help="specify the gpu to load the model.")
    parser.add_argument(
        "--options",
        nargs="+",
        help="override settings of the config file: key=value pairs such as "
        "model.ckpt=/path/to/pretrained_minigpt4.pth",
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
    parser.add_argument("--server-port", type=int, default=None, help="port (default: 7860)")
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed every answer's sampling, for reproducible answers (default: unseeded)",
    )
    parser.add_argument(
        "--api",
        action="store_true",
        help="also serve the OpenAI-compatible API (/v1) from this process and model",
    )
    add_api_arguments(parser)
    args = parser.parse_args(argv)
    if args.api and args.share:
        parser.error("--api serves through its own server: it cannot be used with --share")
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


def build_demo(chat: Chat, seed: int | None = None) -> gr.Blocks:
    """The demo page around ``chat``; ``seed`` seeds each answer (``None``: unseeded)."""

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

    def upload_img(gr_img: Any, text_input: str, chat_state: Conversation | None):
        if gr_img is None:
            gr.Warning("Choose an image first, then press 'Upload & Start Chat'.")
            return None, None, gr.Button(interactive=True), chat_state, None
        chat_state = chat.new_conversation()
        img_list: list = []
        chat.upload_img(gr_img, chat_state, img_list)
        return (
            gr.Image(interactive=False),
            gr.Textbox(interactive=True, placeholder=PLACEHOLDER_TYPE),
            gr.Button(value=STARTED_LABEL, interactive=False),
            chat_state,
            img_list,
        )

    def gradio_ask(user_message: str, chatbot: list | None, chat_state: Conversation | None):
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
        history.append({"role": "assistant", "content": ""})
        for text in chat.stream_answer(
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

        upload_button.click(
            upload_img,
            [image, text_input, chat_state],
            [image, text_input, upload_button, chat_state, img_list],
            api_name="upload",
        )
        text_input.submit(
            gradio_ask,
            [text_input, chatbot, chat_state],
            [text_input, chatbot, chat_state],
            api_name="ask",
        ).then(
            gradio_answer,
            [chatbot, chat_state, img_list, num_beams, temperature],
            [chatbot, chat_state, img_list],
            api_name="answer",
        )
        clear.click(
            gradio_reset,
            [chat_state, img_list],
            [chatbot, image, text_input, upload_button, chat_state, img_list],
            queue=False,
            api_name="restart",
        )
    return demo


def build_chat(args: argparse.Namespace) -> Chat:
    """Load the model and processor named by the config and wrap them in a ``Chat``."""
    from minigpt4.common.config import Config
    from minigpt4.conversation import loading

    device = loading.resolve_device(args.device, args.gpu_id)
    return loading.build_chat(Config(args), device, args.gpu_id)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logger()
    import minigpt4  # noqa: F401  (registers models and processors)

    logger.info("Initializing Chat")
    chat = build_chat(args)
    logger.info("Initialization Finished")
    demo = build_demo(chat, seed=args.seed)
    if args.api:
        from minigpt4.serve.server import run_with_demo

        port = args.server_port or DEFAULT_PORT
        run_with_demo(chat, demo.queue(), args, args.server_name, port)
        return
    demo.queue().launch(
        server_name=args.server_name, server_port=args.server_port, share=args.share
    )


if __name__ == "__main__":
    main()

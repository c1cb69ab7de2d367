"""Running the API: the model's name, the command line, and one uvicorn server.

    python -m minigpt4.serve --cfg-path eval_configs/minigpt4_tiny_eval.yaml --device cpu

binds 127.0.0.1:8000 unless ``--host`` / ``--port`` say otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minigpt4.common.model_args import add_model_arguments, chat_from_args
from minigpt4.serve.hosts import default_allowed_hosts
from minigpt4.serve.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_S
from minigpt4.serve.ports import listen
from minigpt4.serve.slow_clients import DEFAULT_READ_TIMEOUT_S, header_timeout_protocol

logger = logging.getLogger("minigpt4.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "MINIGPT4_API_KEY"


def model_name(config: Any) -> str:
    """The served model's name, from its config: ``<arch>-<checkpoint file name>`` (e.g.
    ``mini_gpt4-pretrained_minigpt4_tiny``), ``<arch>-<model_type>`` without a checkpoint."""
    if config.ckpt:
        return f"{config.arch}-{Path(str(config.ckpt)).stem}"
    return f"{config.arch}-{config.model_type}"


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The API's own options (shared by ``python -m minigpt4.serve`` and ``demo.py --api``)."""
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on /v1 (default: ${API_KEY_ENV}, else none)",
    )
    parser.add_argument(
        "--allow-remote-images",
        action="store_true",
        help="fetch http(s) image URLs (off: only data:image/...;base64, URLs are accepted)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="most answers generated together "
        f"(default {DEFAULT_MAX_BATCH_SIZE}; 1: one at a time)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULT_MAX_WAIT_S * 1000,
        help="the longest a batch waits for requests still being prepared, or for the clients "
        "of the batch before it, before it starts "
        f"(default {DEFAULT_MAX_WAIT_S * 1000:g} ms; a request to an idle server does not wait)",
    )
    parser.add_argument("--model-name", default=None, help="served model name (default: derived)")
    parser.add_argument(
        "--allowed-hosts",
        nargs="+",
        default=[],
        metavar="NAME",
        help="without an API key, also answer requests whose Host header names these "
        "(default: only localhost, 127.0.0.1, ::1 and the --host address; * allows any)",
    )

    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_S,
        metavar="SECONDS",
        help="a request's headers, and then its body, must arrive within this many seconds "
        f"(default {DEFAULT_READ_TIMEOUT_S:g}); slower clients are cut off",
    )


def check_api_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an empty API key (no client can send one, so every request would be refused) and
    a read timeout that is not positive."""
    if not args.read_timeout > 0:
        parser.error(f"--read-timeout must be > 0 seconds, not {args.read_timeout}")
    if args.api_key is not None and not args.api_key.strip():
        parser.error(
            f"the API key is empty (--api-key or ${API_KEY_ENV}): set a key, or unset "
            f"{API_KEY_ENV} to serve without one"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt4.serve",
        description="Serve MiniGPT-4 over an OpenAI-compatible HTTP API",
    )
    add_model_arguments(parser, cfg_help="path to an eval configuration file")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    add_api_arguments(parser)
    args = parser.parse_args(argv)
    if args.max_batch_size < 1 or args.batch_wait_ms < 0:
        parser.error("--max-batch-size must be >= 1 and --batch-wait-ms >= 0")
    check_api_arguments(parser, args)
    return args


def api_app(chat: Any, args: argparse.Namespace, host: str) -> Any:
    """The API app over ``chat`` with the options of :func:`add_api_arguments`, bound to
    ``host``."""
    from minigpt4.serve.app import create_app

    name = args.model_name or model_name(chat.model.config)
    logger.info(
        "Serving %s: batches of up to %d, waiting %g ms%s",
        name,
        args.max_batch_size,
        args.batch_wait_ms,
        "; API key required" if args.api_key else "",
    )
    return create_app(
        chat,
        name,
        api_key=args.api_key,
        allow_remote_images=args.allow_remote_images,
        max_batch_size=args.max_batch_size,
        max_wait_s=args.batch_wait_ms / 1000,
        allowed_hosts=default_allowed_hosts(host, args.allowed_hosts),
        read_timeout_s=args.read_timeout,
    )


def run(
    app: Any,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> None:
    """Serve ``app`` with uvicorn until interrupted (on ``sock`` if given, from
    :func:`~minigpt4.serve.ports.listen`).

    A mounted gradio app keeps a heartbeat stream open per browser tab until its ``stop_event``
    is set (its own ``launch`` sets it on exit); it is set here too, or stopping would wait for
    the graceful-shutdown timeout.
    """
    import uvicorn

    stop_events = [
        r.app.stop_event for r in app.routes if hasattr(getattr(r, "app", None), "stop_event")
    ]

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            for event in stop_events:
                event.set()  # as gradio does it, from the signal handler
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=10,
        http=header_timeout_protocol(read_timeout_s),
    )
    if sock is not None:  # uvicorn announces only the sockets it binds itself
        logger.info("Running on http://%s:%d (OpenAI API under /v1)", host, port)
    Server(config).run(sockets=[sock] if sock is not None else None)


def run_with_demo(
    chat: Any, demo: Any, args: argparse.Namespace, host: str, port: int, sock: socket.socket
) -> None:
    """One uvicorn server for the API (``/v1``, ``/health``) and the gradio ``demo`` (``/``),
    on one loaded model and the socket ``demo.py --api`` took (``demo.py --api``)."""
    import gradio as gr

    app = api_app(chat, args, host)
    gr.mount_gradio_app(app, demo, path="/", server_name=host, server_port=port)
    logger.info("Running on local URL:  http://%s:%d (OpenAI API under /v1)", host, port)
    run(app, host, port, sock, read_timeout_s=args.read_timeout)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from minigpt4.common.logger import setup_logger

    setup_logger()
    sock = listen(args.host, args.port)  # a taken port fails before the model loads
    chat = chat_from_args(args)
    run(api_app(chat, args, args.host), args.host, args.port, sock, args.read_timeout)

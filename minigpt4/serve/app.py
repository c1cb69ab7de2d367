"""The HTTP API: OpenAI chat completions over a MiniGPT-4 Chat, with request batching.

``create_app(chat, model_name)`` returns a FastAPI app serving ``GET /health``,
``GET /v1/models`` (and ``/v1/models/{id}``) and ``POST /v1/chat/completions``. A request is
turned into the demo's conversation and processed images (:mod:`minigpt4.serve.messages`; image
decoding and processing run in a worker thread, so the event loop keeps accepting requests while
the model is busy), and its answer is one row of a batch (:mod:`minigpt4.serve.batcher`): one
call of the model's answer entry (:class:`~minigpt4.models.answering.Answerer`, the Chat's), which
builds the prompt, embeds the context, generates and holds back what a stream may not show yet.

Long conversations: the demo's Chat cuts the context on the left to keep room for the answer
(and may cut the image); the API refuses instead (the model's
:func:`~minigpt4.models.answering.fit`), with a 400 ``context_length_exceeded`` that says by how
many tokens the conversation or ``max_tokens`` is too long. Without ``max_tokens`` an answer gets
the Chat's default length or what room is left, whichever is less.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from minigpt4.models.answer_text import Pieces
from minigpt4.models.answering import Answer, ContextTooLong, fit
from minigpt4.models.generation import GenerationSettings
from minigpt4.models.memory import release_freed_memory
from minigpt4.serve import images, protocol
from minigpt4.serve.batcher import Batcher
from minigpt4.serve.errors import APIError, bad_request, install_handlers
from minigpt4.serve.hosts import LOOPBACK_NAMES, HostAllowList
from minigpt4.serve.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_S
from minigpt4.serve.messages import Plan, build_conversation, plan_conversation
from minigpt4.serve.slow_clients import DEFAULT_READ_TIMEOUT_S, read_body

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a few images as base64 fit
DISCONNECT_POLL_S = 0.25
CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer
CREATED = int(time.time())
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A temperature this close to 0 samples the arg-max anyway, and dividing the logits by it would
# overflow to inf (then NaN probabilities): it is answered greedily, as 0 is.
GREEDY_BELOW_TEMPERATURE = 1e-4
# After decoding this much, the heap is handed back to the system (glibc keeps freed blocks of
# decoded images otherwise: measured +1.15 GB kept after three 100-megapixel PNGs).
TRIM_AFTER_BYTES = 64 * 1024 * 1024


@dataclass
class Prepared:
    """A request ready for the batcher: its conversation, processed images, context length
    (text and image tokens, ``chat.context_length``) and generation settings."""

    conversation: Any
    images: list[torch.Tensor]
    length: int
    settings: GenerationSettings


class Server:
    """What the routes share: the chat, the batcher and the server's options."""

    def __init__(
        self,
        chat: Any,
        model_name: str,
        api_key: str | None,
        allow_remote_images: bool,
        batcher: Batcher,
    ) -> None:
        self.chat, self.model_name, self.api_key = chat, model_name, api_key
        self.allow_remote_images, self.batcher = allow_remote_images, batcher
        self.disconnects = 0  # clients that hung up before their answer was sent

    # --- request checks --------------------------------------------------------------------------

    def check_key(self, request: Request) -> None:
        """``Authorization: Bearer <key>``, compared in constant time as UTF-8 bytes (any
        Unicode key works; header bytes that are no valid key are a 401, never a 500)."""
        if self.api_key is None:
            return
        given = dict(request.headers.raw).get(b"authorization", b"")
        scheme, _, key = given.partition(b" ")
        expected = self.api_key.encode("utf-8")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(key.strip(), expected):
            what = "Incorrect API key provided" if given else "No API key provided"
            raise APIError(
                HTTPStatus.UNAUTHORIZED,
                f"{what}: send the server's key as 'Authorization: Bearer <key>' (the openai "
                "client's api_key)",
                code="invalid_api_key",
            )

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                HTTPStatus.NOT_FOUND,
                f"The model '{name}' does not exist here; this server serves "
                f"'{self.model_name}' (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": CREATED,
            "owned_by": "minigpt4",
        }

    # --- a completion ----------------------------------------------------------------------------

    async def prepare(self, req: protocol.ChatCompletionRequest) -> Prepared:
        """A request's conversation, images and generation settings (or a 400)."""
        self.check_model(req.model)
        plan = plan_conversation(req.messages)
        # One trip to a worker thread: each hop waits for the GIL, which generation holds often.
        conv, pixels, length = await run_in_threadpool(self._conversation, plan)
        return Prepared(conv, pixels, length, settings_for(self.chat.settings(), req, length))

    def _conversation(self, plan: Plan) -> tuple[Any, list[torch.Tensor], int]:
        """Fetch and decode the images; the Chat's conversation, the processed images and the
        context length (text tokens and image embeddings)."""
        budget = images.ImageBudget()
        encoded = [
            (turn, images.image_bytes(turn.image_url, turn.image_param, self.allow_remote_images))
            for turn in plan.turns
            if turn.image_url is not None
        ]
        for turn, data in encoded:  # every header before any image is decoded
            budget.spend(data, turn.image_param)
        for turn, data in encoded:
            turn.image = images.decode_image(data, turn.image_param)
        conv, pixels = build_conversation(self.chat, plan)
        for turn in plan.turns:
            turn.image = None  # processed: the decoded pixels can go
        if budget.bytes > TRIM_AFTER_BYTES:
            release_freed_memory()
        return conv, pixels, self.chat.context_length(conv, pixels)

    def submit(self, p: Prepared, req: protocol.ChatCompletionRequest, answer: _Answer) -> Any:
        """Queue ``p``'s answer (streamed if ``req`` asks for it); returns the job."""
        on_text = answer.on_text if req.stream else None
        return self.batcher.submit(
            p.conversation, p.images, p.settings, answer.on_done, on_text, req.stop
        )


def settings_for(
    base: GenerationSettings, req: protocol.ChatCompletionRequest, context_len: int
) -> GenerationSettings:
    """The request's generation settings over the Chat's defaults ``base``."""
    changes: dict[str, Any] = {}
    if req.temperature is not None and req.temperature < GREEDY_BELOW_TEMPERATURE:
        changes["do_sample"] = False  # greedy
    elif req.temperature is not None:
        changes["temperature"] = req.temperature
    for name in ("top_p", "top_k", "seed", "num_beams", "repetition_penalty", "length_penalty"):
        if getattr(req, name) is not None:
            changes[name] = getattr(req, name)
    try:
        fitted = fit(context_len, base, req.max_completion_tokens or req.max_tokens)
    except ContextTooLong as err:
        raise _too_long(err) from None
    try:
        return fitted.replace(**changes)
    except ValueError as err:
        raise bad_request(str(err)) from None


def _too_long(err: ContextTooLong) -> APIError:
    """The API's 400 for a context that does not fit (the model's rule, the API's words)."""
    if err.asked is None:
        return bad_request(
            f"the conversation is {err.length} tokens (text and image) and the model takes at "
            f"most {err.max_length} with its answer: shorten it by at least {1 - err.room} tokens",
            param="messages",
            code="context_length_exceeded",
        )
    return bad_request(
        f"max_tokens {err.asked} and the conversation's {err.length} tokens exceed the model's "
        f"{err.max_length} by {err.asked - err.room}: ask for at most {err.room} tokens or "
        "shorten the conversation",
        param="max_tokens",
        code="context_length_exceeded",
    )


async def read_json(request: Request, timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> Any:
    """The request body as JSON: at most :data:`MAX_BODY_BYTES`, else a 413; within
    ``timeout_s``, else a 408; bad JSON a 400."""
    declared = request.headers.get("content-length", "")
    too_large = APIError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"the request body is over {MAX_BODY_BYTES // 2**20} MiB",
        code="request_too_large",
    )
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    try:
        async for piece in read_body(request.stream(), timeout_s):
            body += piece
            if len(body) > MAX_BODY_BYTES:
                raise too_large
    except ClientDisconnect:  # nobody to answer; not a server failure either
        raise APIError(CLIENT_CLOSED, "the client closed the connection") from None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the request body is not valid JSON ({err})") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise bad_request(f"the request body holds a number out of range ({err})") from None
    except RecursionError:
        raise bad_request("the request body is nested too deeply to be a request") from None


class _Answer:
    """The event-loop side of a batch job: the visible text and the result arrive through a
    queue."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[str | tuple] = asyncio.Queue()

    def _put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def on_text(self, text: str) -> None:
        self._put(text)

    def on_done(self, result: Answer | BaseException) -> None:
        self._put(("done", result))


def _unwrap(result: Answer | BaseException) -> Answer:
    if isinstance(result, BaseException):
        raise APIError(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            f"generation failed ({type(result).__name__}: {result}); see the server's log",
            kind="server_error",
        )
    return result


async def complete(server: Server, req: protocol.ChatCompletionRequest, request: Request):
    answer = _Answer()
    with server.batcher.announce():  # a batch being gathered waits for this request
        p = await server.prepare(req)
        job = server.submit(p, req, answer)
    try:
        while True:  # a client that hangs up frees its row
            try:
                _, result = await asyncio.wait_for(answer.events.get(), DISCONNECT_POLL_S)
                break
            except TimeoutError:
                if await request.is_disconnected():
                    server.disconnects += 1
                    raise APIError(CLIENT_CLOSED, "the client closed the connection") from None
    finally:
        job.cancel()  # nothing if it is done
    result = _unwrap(result)
    cid, tokens = protocol.completion_id(), protocol.usage(p.length, len(result.tokens))
    return protocol.completion(cid, server.model_name, result.text, result.finish_reason, tokens)


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def stream(server: Server, req: protocol.ChatCompletionRequest) -> StreamingResponse:
    answer = _Answer()
    with server.batcher.announce():
        p = await server.prepare(req)  # a 400 comes before the stream starts
        job = server.submit(p, req, answer)
    cid, name = protocol.completion_id(), server.model_name

    async def events() -> AsyncIterator[str]:
        pieces = Pieces()
        sent = False
        try:
            yield _sse(protocol.chunk(cid, name, {"role": "assistant", "content": ""}))
            while not isinstance(event := await answer.events.get(), tuple):
                if delta := pieces.next(event):
                    yield _sse(protocol.chunk(cid, name, {"content": delta}))
            try:
                result = _unwrap(event[1])
            except APIError as err:
                yield _sse(err.body())
                yield "data: [DONE]\n\n"
                sent = True
                return
            if rest := pieces.next(result.text):
                yield _sse(protocol.chunk(cid, name, {"content": rest}))
            yield _sse(protocol.chunk(cid, name, {}, result.finish_reason))
            if req.stream_options is not None and req.stream_options.include_usage:
                tokens = protocol.usage(p.length, len(result.tokens))
                yield _sse(protocol.chunk(cid, name, None, token_usage=tokens))
            yield "data: [DONE]\n\n"
            sent = True
        finally:
            job.cancel()  # the client went away (or all is sent): free the row
            if not sent:
                server.disconnects += 1
                logger.info("a client left mid-stream; its answer is no longer generated")

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def create_app(
    chat: Any,
    model_name: str,
    api_key: str | None = None,
    allow_remote_images: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    allowed_hosts: list[str] | None = None,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> FastAPI:
    """The API over ``chat`` (see the module docstring); the batcher runs while the app does.

    Without ``api_key`` the Host header must name one of ``allowed_hosts`` (default: the
    loopback names; :mod:`minigpt4.serve.hosts`); a body must arrive within
    ``read_timeout_s``."""
    batcher = Batcher(chat.answerer, max_batch_size, max_wait_s)
    server = Server(chat, model_name, api_key, allow_remote_images, batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    app = FastAPI(title="MiniGPT-4 (OpenAI-compatible API)", lifespan=lifespan)
    app.state.server = server
    install_handlers(app)
    if api_key is None:
        hosts = allowed_hosts if allowed_hosts is not None else list(LOOPBACK_NAMES)
        app.add_middleware(HostAllowList, allowed=hosts)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = batcher.stats
        return {
            "status": "ok",
            "model": model_name,
            "waiting": batcher.waiting,
            "batches": stats.batches,
            "rows": stats.rows,
            "largest_batch": stats.largest_batch,
            "cancelled": stats.cancelled,
            "disconnects": server.disconnects,
        }

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(server.check_key)])

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [server.model_card()]}

    @v1.get("/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        server.check_model(model_id)
        return server.model_card()

    @v1.post("/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = protocol.parse_request(await read_json(request, read_timeout_s))
        return await (stream(server, req) if req.stream else complete(server, req, request))

    app.include_router(v1)
    return app

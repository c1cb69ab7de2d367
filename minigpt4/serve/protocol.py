"""The chat-completions request as the OpenAI API defines it, and the JSON the server answers.

Parsed with pydantic; a request that does not fit is a 400 naming the parameter
(``messages[0].content[1].image_url``) and what is wrong with it. Accepted beyond the OpenAI
fields, as other OpenAI-compatible servers accept them (send them with the client's
``extra_body``): ``top_k``, ``num_beams``, ``repetition_penalty``, ``length_penalty``. Fields
the server does not use (``tools``, ``logprobs``, ``presence_penalty``, ...) are ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    field_validator,
)

from minigpt4.serve.errors import bad_request

MAX_STOP_STRINGS = 4  # the OpenAI API's limit
ROLES = ("system", "developer", "user", "assistant")
# Bounds on values that only this server takes, so that none can make the batch it joins fail
# or take the machine's memory: a seed torch accepts, beams the demo offers, penalties far
# beyond any useful value.
SEED_RANGE = (-(2**63), 2**64 - 1)
MAX_BEAMS = 10
MAX_TOP_K = 2**31 - 1
MAX_PENALTY = 100.0


def _valid_unicode(text: str) -> str:
    """Text the tokenizer can encode: no unpaired surrogate (JSON can carry ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start : err.end].encode("unicode_escape").decode()
        raise ValueError(
            f"the text holds an unpaired surrogate ({bad}) at character {err.start}: send valid "
            "Unicode"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
# JSON true is not 1 here, nor 2.0 an integer count.
StrictInt = Annotated[int, Strict()]


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ImagePart(BaseModel):
    type: Literal["image_url"]
    # Some clients send the URL as a plain string; the API's form is {"url": ...}.
    image_url: Annotated[
        ImageURL, BeforeValidator(lambda v: {"url": v} if isinstance(v, str) else v)
    ]


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


def _content_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "parts" if isinstance(value, list) else None


Content = Annotated[
    Annotated[Text, Tag("text")] | Annotated[list[Part], Tag("parts")],
    Discriminator(
        _content_kind,
        custom_error_type="content_type",
        custom_error_message="content must be a string or a list of text / image_url parts",
    ),
]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: Content | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


def _stop_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else [] if value is None else value


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: StrictInt = 1
    seed: StrictInt | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: Annotated[list[Annotated[Text, Field(min_length=1)]], BeforeValidator(_stop_list)] = (
        Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    # not in the OpenAI API (see the module docstring)
    top_k: StrictInt | None = Field(None, ge=0, le=MAX_TOP_K)
    num_beams: StrictInt | None = Field(None, ge=1, le=MAX_BEAMS)
    repetition_penalty: float | None = Field(None, gt=0, le=MAX_PENALTY)
    length_penalty: float | None = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"only n=1 is supported (one answer per request), got {n}")
        return n


def parse_request(body: Any) -> ChatCompletionRequest:
    """The request in ``body`` (decoded JSON); a 400 naming the first wrong parameter."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, not {type(body).__name__}")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = parameter_name(first["loc"])
        if first["type"] == "missing":
            raise bad_request(f"'{param}' is required", param=param) from None
        message = first["msg"].removeprefix("Value error, ")
        raise bad_request(f"'{param}': {message}", param=param) from None


def parameter_name(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as the API spells it: ``messages[0].content[1].type``.

    pydantic puts the tag of a union member into the location (after ``content``: "text" or
    "parts"; after a part's index: its ``type``); those are left out.
    """
    name = ""
    for i, part in enumerate(loc):
        before = loc[i - 1] if i else None
        tag = before == "content" or (isinstance(before, int) and loc[i - 2] == "parts")
        if isinstance(part, int):
            name += f"[{part}]"
        elif not tag:
            name += f".{part}" if name else str(part)
    return name


# --- answers ---------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    cid: str, model: str, text: str, finish_reason: str, token_usage: dict
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": token_usage,
        "system_fingerprint": None,
    }


def chunk(
    cid: str,
    model: str,
    delta: dict[str, str] | None,
    finish_reason: str | None = None,
    token_usage: dict | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk (no choices)."""
    choices = []
    if delta is not None:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    out = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if token_usage is not None or delta is None:
        out["usage"] = token_usage
    return out

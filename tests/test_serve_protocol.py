"""The server's pieces without HTTP: request parsing, conversation rules, settings, images and
the streamed answer text (on the tiny-world tokenizer)."""

from __future__ import annotations

import http.server
import struct
import threading
import zlib

import pytest
from PIL import Image

from minigpt4.models.answer_text import Pieces, VisibleText
from minigpt4.models.generation import GenerationSettings
from minigpt4.serve import images
from minigpt4.serve.app import settings_for
from minigpt4.serve.errors import APIError
from minigpt4.serve.messages import plan_conversation
from minigpt4.serve.protocol import parse_request
from tests.serve_helpers import LOCAL, data_url, image_part, png_bytes, user_with_image
from tiny_world import evaluate

URL = data_url(Image.new("RGB", (8, 8), (200, 30, 30)))


@pytest.fixture(scope="module")
def chat():
    return evaluate.build_chat("eval_configs/minigpt4_tiny_eval.yaml")


def refused(fn, *args) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args)
    return info.value


# --- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({}, "messages", "is required"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'user'"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "a string or"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0]",
            "'video'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
            "is required",
        ),
        ({"messages": [user_with_image(URL, "hi")], "n": 2}, "n", "only n=1"),
        ({"messages": [user_with_image(URL, "hi")], "temperature": 3}, "temperature", "2"),
        ({"messages": [user_with_image(URL, "hi")], "max_tokens": 0}, "max_tokens", "1"),
        ({"messages": [user_with_image(URL, "hi")], "stop": list("abcde")}, "stop", "at most 4"),
    ],
)
def test_a_wrong_parameter_is_named(body, param, words):
    err = refused(parse_request, body)
    assert (err.status, err.param) == (400, param)
    assert param in err.message and words in err.message


def test_a_request_parses_with_defaults_and_extensions():
    req = parse_request(
        {"messages": [user_with_image(URL, "hi")], "stop": "###x", "top_k": 5, "tools": []}
    )
    assert req.stop == ["###x"] and req.top_k == 5 and req.n == 1 and not req.stream
    part = {"type": "image_url", "image_url": URL}  # the URL as a plain string is accepted
    req = parse_request({"messages": [{"role": "user", "content": [part]}]})
    assert req.messages[0].content[0].image_url.url == URL
    assert refused(parse_request, [1, 2]).message.startswith("the request body must be")


# --- conversations -----------------------------------------------------------------------------


def plan(messages):
    return plan_conversation(parse_request({"messages": messages}).messages)


def test_conversation_rules():
    ok = plan(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Be kind."},
            {"role": "user", "content": [{"type": "text", "text": "What?"}, image_part(URL)]},
            {"role": "assistant", "content": "A square."},
            {"role": "user", "content": "Colour?"},
        ]
    )
    assert ok.system == "Be brief.\nBe kind."
    assert [(t.role, t.text, t.image_url is not None) for t in ok.turns] == [
        ("user", "What?", True),
        ("assistant", "A square.", False),
        ("user", "Colour?", False),
    ]
    two = {
        "role": "user",
        "content": [image_part(URL), image_part(URL), {"type": "text", "text": "?"}],
    }
    cases = [
        ([{"role": "user", "content": "no image"}], "image_required", "no image"),
        ([two], "too_many_images", "one image per user message"),
        ([user_with_image(URL, "  ")], None, "no text"),
        ([user_with_image(URL, "a"), {"role": "assistant", "content": "b"}], None, "last message"),
        ([user_with_image(URL, "a"), user_with_image(URL, "b")], None, "must alternate"),
        ([{"role": "assistant", "content": "b"}], None, "must alternate"),
        ([user_with_image(URL, "a"), {"role": "system", "content": "s"}], None, "before the first"),
    ]
    for messages, code, words in cases:
        err = refused(plan, messages)
        assert err.status == 400 and err.code == code and words in err.message, err.message
    assert refused(plan, [two]).param == "messages[0].content[1].image_url"


# --- settings ----------------------------------------------------------------------------------


def settings(body: dict, context_len: int = 100) -> GenerationSettings:
    req = parse_request({"messages": [user_with_image(URL, "hi")], **body})
    return settings_for(GenerationSettings(), req, context_len)


def test_request_settings_over_the_chats_defaults():
    assert settings({"temperature": 0}).do_sample is False
    hot = settings({"temperature": 0.5, "top_p": 0.5, "seed": 3, "max_tokens": 7})
    assert (hot.do_sample, hot.temperature, hot.top_p, hot.seed, hot.max_new_tokens) == (
        True,
        0.5,
        0.5,
        3,
        7,
    )
    assert settings({"max_completion_tokens": 9, "max_tokens": 7}).max_new_tokens == 9
    assert settings({"num_beams": 3, "repetition_penalty": 1.1}).num_beams == 3
    assert settings({}).max_new_tokens == 300  # the Chat's default...
    assert settings({}, context_len=1900).max_new_tokens == 100  # ...or the room left


def test_too_long_conversations_are_refused_saying_by_how_much():
    err = refused(settings, {"max_tokens": 500}, 1600)
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "max_tokens")
    assert "by 100" in err.message and "at most 400" in err.message
    err = refused(settings, {}, 2010)
    assert (err.code, err.param) == ("context_length_exceeded", "messages")
    assert "2010 tokens" in err.message and "by at least 11 tokens" in err.message


# --- images ------------------------------------------------------------------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    data = png_bytes(Image.new("L", (1, 1)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:8] + patched + data[8 + len(patched) :]


def test_image_decoding_refuses_what_it_cannot_use():
    ok = images.decode_image(png_bytes(Image.new("RGBA", (5, 4))), "p")
    assert (ok.mode, ok.size) == ("RGB", (5, 4))
    bomb = bomb_png(12_000, 9_000)  # 108 megapixels
    assert len(bomb) < 100
    err = refused(images.decode_image, bomb, "p")
    assert err.code == "image_too_large" and "12000x9000 = 108 megapixels" in err.message
    bomb = bomb_png(20_000, 20_000)  # so large that PIL refuses it itself
    err = refused(images.decode_image, bomb, "p")
    assert err.code == "image_too_large" and "400 megapixels" in err.message
    assert "not an image" in refused(images.decode_image, b"plain text", "p").message
    truncated = png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:-30]
    assert "cannot be decoded" in refused(images.decode_image, truncated, "p").message


def test_image_urls():
    assert images.image_bytes(URL, "p", False)[:4] == b"\x89PNG"
    for url, words in [
        ("data:image/png;base64,@@@", "not valid base64"),
        ("data:text/plain;base64,aGk=", "must look like"),
        ("data:image/png,rawdata", "must look like"),
        ("/etc/passwd", "never reads local files"),
        ("file:///etc/passwd", "never reads local files"),
        ("http://127.0.0.1:1/x.png", "--allow-remote-images"),
    ]:
        err = refused(images.image_bytes, url, "p", False)
        assert err.status == 400 and err.param == "p" and words in err.message, err.message
    huge = "data:image/png;base64," + "A" * (images.MAX_IMAGE_BYTES * 4 // 3 + 8)
    assert refused(images.image_bytes, huge, "p", False).code == "image_too_large"


@pytest.fixture()
def http_image():
    """An image (and an oversized file) on a loopback HTTP server."""
    files = {"/ok.png": png_bytes(Image.new("RGB", (6, 6))), "/big.bin": b"\0" * (2**20 + 10)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_remote_images_when_allowed(http_image, monkeypatch):
    data = images.image_bytes(f"{http_image}/ok.png", "p", True)
    assert images.decode_image(data, "p").size == (6, 6)
    assert "404" in refused(images.image_bytes, f"{http_image}/missing.png", "p", True).message
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 2**20)
    err = refused(images.image_bytes, f"{http_image}/big.bin", "p", True)
    assert err.code == "image_too_large"


# --- streamed text -----------------------------------------------------------------------------


def pieces(chat, text: str, stops=()) -> tuple[list[str], str]:
    """The pieces a stream sends for the tokens of ``text`` (the model's hold-back, then only
    what extends the text sent), the last one completing the final answer."""
    tokens = chat.model.llama_tokenizer.encode(text)
    decoder = chat.answerer.decoder
    visible, to_send = VisibleText(decoder, stops), Pieces()
    sent = [to_send.next(visible.text) if visible.push(t) else "" for t in tokens]
    final = decoder.final(tokens, stops)
    return sent + [to_send.next(final)], final


def test_streamed_pieces_add_up_to_the_answer(chat):
    sent, final = pieces(chat, "The star is purple é #.###Human: more")
    assert final == "The star is purple é #." and "".join(sent) == final
    assert all("\ufffd" not in s for s in sent)  # half a character is held back
    assert sent.count("") >= 3  # the bytes of "é", the "#" and what follows "###"

    sent, final = pieces(chat, "The star is purple on black.###", stops=["purple on", "zzz"])
    assert final == "The star is" and "".join(sent) == final
    assert not any("purple" in s for s in sent)  # the start of a stop string is held back


def test_a_body_over_the_limit_is_refused_with_413(chat, monkeypatch):
    from fastapi.testclient import TestClient

    from minigpt4.serve import app as app_module

    monkeypatch.setattr(app_module, "MAX_BODY_BYTES", 1000)
    with TestClient(app_module.create_app(chat, "tiny"), base_url=LOCAL) as client:
        resp = client.post("/v1/chat/completions", content=b"x" * 2000)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"


def test_the_listening_socket_names_tcp():
    """asyncio turns Nagle's algorithm off only on sockets whose protocol is TCP: without it
    every answer waits ~40 ms for a delayed ACK."""
    import socket

    from minigpt4.serve.ports import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()

"""The server under hostile requests: one bad request fails alone, nothing hangs or leaks.

A subprocess server (API key, 2-second read timeout) takes the batch-isolation and slow-client
cases; key, Host and decoding cases run on the app in-process.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from minigpt4.serve import create_app, images
from minigpt4.serve import server as serve_cli
from minigpt4.serve.errors import APIError
from tests.process_helpers import free_port, serving
from tests.serve_helpers import LOCAL, data_url, png_bytes, user_with_image
from tests.test_serve_protocol import bomb_png
from tiny_world import evaluate, text, world

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"
API_KEY = "hardening-key"
READ_TIMEOUT_S = 2
GOOD = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", TINY_EVAL, "--device", "cpu"]
    cmd += ["--port", str(port), "--api-key", API_KEY, "--read-timeout", str(READ_TIMEOUT_S)]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/health", log_path, env={"OMP_NUM_THREADS": "1"}) as proc:
        yield base, port, log_path, proc


@pytest.fixture(scope="module")
def urls():
    samples = [world.make_sample(evaluate.HELD_OUT_SEED, i) for i in range(GOOD)]
    return [(s.scene, data_url(world.to_jpeg_bytes(s.image), "image/jpeg")) for s in samples]


def post(base: str, body=None, content: bytes | None = None, headers=None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
    url = f"{base}/v1/chat/completions"
    if content is not None:
        return httpx.post(url, content=content, headers=headers, timeout=120)
    return httpx.post(url, json=body, headers=headers, timeout=120)


def ask(url: str, question: str = text.DEMO_QUESTION, **extra) -> dict:
    messages = [user_with_image(url, question)]
    return {"messages": messages, "temperature": 0, "max_tokens": 40, **extra}


def answer_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def streamed_answer(base: str, body: dict) -> tuple[int, str]:
    """(status, content) of a streamed request; an error event makes the content 'ERROR'."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    content = ""
    url = f"{base}/v1/chat/completions"
    with httpx.stream("POST", url, json={**body, "stream": True}, headers=headers) as resp:
        if resp.status_code != 200:
            return resp.status_code, resp.read().decode()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return 200, "ERROR"
            for choice in event.get("choices", []):
                content += choice["delta"].get("content") or ""
    return 200, content


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_bad_request_in_a_batch_fails_alone(server, urls, stream):
    base = server[0]
    alone = [answer_of(post(base, ask(url))) for _, url in urls]
    bad_requests = {
        "seed": ask(urls[0][1], seed=2**70, temperature=1.0),
        "tiny temperature": ask(urls[0][1], temperature=1e-300),
        "placeholder": ask(urls[0][1], "Describe <ImageHere> this image."),
    }
    for name, bad in bad_requests.items():
        barrier = threading.Barrier(GOOD + 1)

        def send(body, barrier=barrier):
            barrier.wait()
            if stream:
                return streamed_answer(base, body)
            response = post(base, body)
            return response.status_code, response.text

        with ThreadPoolExecutor(GOOD + 1) as pool:
            futures = [pool.submit(send, ask(url)) for _, url in urls] + [pool.submit(send, bad)]
            results = [f.result() for f in futures]
        good = [r if stream else (r[0], json.loads(r[1])["choices"][0]["message"]["content"])
                for r in results[:GOOD]]  # fmt: skip
        assert good == [(200, a) for a in alone], name
        status, body = results[GOOD]
        if name == "tiny temperature":  # answered greedily, as temperature 0
            content = body if stream else json.loads(body)["choices"][0]["message"]["content"]
            assert (status, content) == (200, alone[0])
        else:
            assert status == 400, (name, body)
    assert "Traceback" not in server[2].read_text()


def test_bodies_json_cannot_hold_are_400s(server, urls):
    base = server[0]
    url = urls[0][1]
    good = json.dumps(ask(url))
    asked = ask(url)["messages"]
    cases = {
        "5000 digits": good.replace('"max_tokens": 40', '"max_tokens": 1' + "0" * 5000),
        "nested 100,000 deep": '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "lone surrogate": good.replace("Describe this image.", "Describe \\ud800 this."),
        "max_tokens true": good.replace('"max_tokens": 40', '"max_tokens": true'),
        "system placeholder": json.dumps(
            {**ask(url), "messages": [{"role": "system", "content": "<ImageHere>"}, *asked]}
        ),
        "huge beams": good.replace('"max_tokens": 40', '"max_tokens": 40, "num_beams": 100000'),
    }  # fmt: skip
    for name, content in cases.items():
        response = post(
            base, content=content.encode(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["message"], name
    answer_of(post(base, ask(url)))  # still serving


def test_images_too_large_together_are_refused_from_their_headers(server, urls):
    base = server[0]
    huge = data_url(bomb_png(9_990, 9_990))  # 100 megapixels in a few bytes
    error = post(base, ask(huge)).json()["error"]
    assert error["code"] == "image_too_large" and "100 megapixels" in error["message"]
    six_thousand = data_url(bomb_png(5_000, 5_000))  # 25 MP each: two exceed 40 MP
    messages = [
        user_with_image(six_thousand, "What is it?"),
        {"role": "assistant", "content": "A shape."},
        user_with_image(six_thousand, "And this?"),
    ]
    error = post(base, {"messages": messages}).json()["error"]
    assert error["code"] == "image_too_large" and "together" in error["message"]
    assert error["param"] == "messages[2].content[0].image_url"


def test_half_sent_headers_are_cut_off(server):
    port = server[1]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, not by our 30 s timeout
        assert time.monotonic() - start < 20


def test_half_sent_body_is_a_408(server):
    port = server[1]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"messages": [')
        reply = b""
        while b"}}" not in reply and (piece := sock.recv(4096)):  # headers, then the JSON
            reply += piece
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in reply


# --- in-process: keys, hosts, decoding -------------------------------------------------------


@pytest.fixture(scope="module")
def chat():
    return evaluate.build_chat(TINY_EVAL)


def test_any_unicode_key_works_and_any_header_bytes_give_401(chat, urls):
    key = "clé-🔑"
    with TestClient(create_app(chat, "tiny", api_key=key), base_url=LOCAL) as client:
        ok = client.get("/v1/models", headers={"Authorization": b"Bearer " + key.encode()})
        assert ok.status_code == 200
        for given in [b"Bearer \xff\xfe", "Bearer clé".encode("latin-1"), b"Bearer", b"\x80"]:
            response = client.get("/v1/models", headers={"Authorization": given})
            assert response.status_code == 401, given
            assert response.json()["error"]["code"] == "invalid_api_key"


def test_an_empty_key_is_an_error_at_start(monkeypatch, capsys):
    monkeypatch.setenv(serve_cli.API_KEY_ENV, "")
    with pytest.raises(SystemExit) as exit_info:
        serve_cli.parse_args(["--cfg-path", TINY_EVAL])
    assert exit_info.value.code == 2
    assert "the API key is empty" in capsys.readouterr().err


def test_a_keyless_server_answers_only_its_own_host_names(chat):
    app = create_app(chat, "tiny", allowed_hosts=serve_cli.default_allowed_hosts("127.0.0.1"))
    with TestClient(app) as client:
        for host in ["localhost:8000", "127.0.0.1", "[::1]:8000"]:
            assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host
        for host in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"]:
            response = client.get("/v1/models", headers={"Host": host})
            assert response.status_code == 400, host
            assert response.json()["error"]["code"] == "host_not_allowed"
    hosts = serve_cli.default_allowed_hosts("0.0.0.0", ["chat.lan"])
    with TestClient(create_app(chat, "tiny", allowed_hosts=hosts)) as client:
        assert client.get("/v1/models", headers={"Host": "chat.lan:8000"}).status_code == 200
    with TestClient(create_app(chat, "tiny", api_key="k")) as client:  # a key: any Host
        response = client.get("/v1/models", headers={"Host": "x", "Authorization": "Bearer k"})
        assert response.status_code == 200


def test_ids_past_the_tokenizers_pieces_are_never_generated(chat, urls):
    """An LLM embedding with more rows than the tokenizer has pieces (Vicuna-13B v1.1: 32,001
    for 32,000), the spare rows made the most likely: answers and decoding still work."""
    model = chat.model
    llm = model.llama_model
    pieces = len(model.llama_tokenizer)
    original = llm.get_output_embeddings().weight.shape[0]
    try:
        llm.resize_token_embeddings(pieces + 3)
        with torch.no_grad():
            llm.get_output_embeddings().weight[pieces:] = (
                50 * llm.get_output_embeddings().weight[:3]
            )
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(evaluate.held_out_images(evaluate.HELD_OUT_SEED, 1)[0][1], conv, img_list)
        chat.ask(text.DEMO_QUESTION, conv)
        answer, tokens = chat.answer(conv, img_list, do_sample=False, max_new_tokens=8)
        assert all(t < pieces for t in tokens) and isinstance(answer, str)
        assert model.llama_tokenizer.decode([pieces + 1, 5]) == model.llama_tokenizer.decode([5])
    finally:
        llm.resize_token_embeddings(original)


def test_a_drip_feeding_image_host_is_cut_off_at_the_deadline(monkeypatch):
    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(100):  # a byte now and then, each well within a read timeout
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the fetch gave up: what is tested

        def log_message(self, *args):
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    monkeypatch.setattr(images, "FETCH_DEADLINE_S", 1.5)
    try:
        start = time.monotonic()
        with pytest.raises(APIError, match="took longer than 1.5 s"):
            images.image_bytes(f"http://127.0.0.1:{host.server_port}/slow.png", "p", True)
        assert time.monotonic() - start < 10
    finally:
        host.shutdown()


def test_image_budget_counts_decoded_bytes_by_mode():
    budget = images.ImageBudget()
    budget.spend(png_bytes_of_mode("RGB"), "p")
    assert (budget.pixels, budget.bytes) == (64, 64 * 3)
    budget.spend(png_bytes_of_mode("RGBA"), "p")
    assert (budget.pixels, budget.bytes) == (128, 64 * 3 + 64 * 4)
    budget.spend(b"not an image", "p")  # left to the decoder to refuse
    assert budget.pixels == 128


def png_bytes_of_mode(mode: str) -> bytes:
    from PIL import Image

    return png_bytes(Image.new(mode, (8, 8)))

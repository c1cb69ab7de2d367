"""``python -m minigpt4.serve`` on the tiny-world model, driven by the official ``openai`` client.

One server (a subprocess on 127.0.0.1, CPU, one thread, an API key) serves every test here: it
must describe held-out images of the tiny world (plain and streamed, scored by the world's own
scorer), hold a two-turn conversation as the demo's Chat does, reproduce seeded answers, batch
concurrent requests without changing greedy answers, refuse every bad request with an
OpenAI-style error, and survive a client that hangs up mid-stream.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.process_helpers import free_port, serving
from tests.serve_helpers import data_url, image_part, user_with_image
from tests.test_serve_protocol import bomb_png
from tiny_world import evaluate, text, world

TINY_EVAL = "eval_configs/minigpt4_tiny_eval.yaml"
MODEL = "mini_gpt4-pretrained_minigpt4_tiny"  # <arch>-<checkpoint file name>
API_KEY = "test-key-123"
HELD_OUT = 50
CLIENTS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server on a free port; yields (base URL, log path, process)."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", TINY_EVAL, "--device", "cpu"]
    cmd += ["--port", str(port), "--api-key", API_KEY]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/health", log_path, env={"OMP_NUM_THREADS": "1"}) as proc:
        yield base, log_path, proc


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def held_out():
    """Held-out scenes with their JPEG bytes as data URLs (as the evaluation decodes them)."""
    out = []
    for i in range(HELD_OUT):
        sample = world.make_sample(evaluate.HELD_OUT_SEED, i)
        out.append((sample.scene, data_url(world.to_jpeg_bytes(sample.image), "image/jpeg")))
    return out


def describe(client, url: str, **kwargs) -> openai.types.chat.ChatCompletion:
    settings = {"temperature": 0, "max_tokens": evaluate.MAX_NEW_TOKENS, **kwargs}
    return client.chat.completions.create(
        model=MODEL, messages=[user_with_image(url, text.DEMO_QUESTION)], **settings
    )


def streamed(client, messages: list, **kwargs) -> tuple[str, list]:
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kwargs)
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return content, chunks


def health(base: str) -> dict:
    return httpx.get(f"{base}/health").json()


def test_binds_loopback_and_lists_the_model(server, client):
    base, log_path, _ = server
    assert f"Running on {base} (OpenAI API under /v1)" in log_path.read_text()  # 127.0.0.1
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    assert health(base)["status"] == "ok"  # no key needed for the health check


def test_held_out_images_plain_and_streamed(client, held_out):
    with ThreadPoolExecutor(CLIENTS) as pool:
        plain = list(pool.map(lambda s: describe(client, s[1]), held_out))
        stream = list(
            pool.map(
                lambda s: streamed(
                    client,
                    [user_with_image(s[1], text.DEMO_QUESTION)],
                    temperature=0,
                    max_tokens=evaluate.MAX_NEW_TOKENS,
                    stream_options={"include_usage": True},
                ),
                held_out,
            )
        )
    answers = [r.choices[0].message.content for r in plain]
    accuracy = sum(world.scene_matches(s, a) for (s, _), a in zip(held_out, answers)) / HELD_OUT
    assert accuracy >= 0.9, answers
    assert [content for content, _ in stream] == answers  # streaming changes nothing
    for response, (_, chunks) in zip(plain, stream):
        assert response.choices[0].finish_reason == "stop"
        usage = response.usage
        assert usage.prompt_tokens > 32 and usage.completion_tokens > 5  # 32 image tokens
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].usage.completion_tokens == usage.completion_tokens
        assert {c.object for c in chunks} == {"chat.completion.chunk"}


def test_two_turn_conversation_is_the_chats(client, held_out):
    chat = evaluate.build_chat(TINY_EVAL)
    follow_up = "What colour is the shape?"
    right = 0
    for (scene, url), (_, image) in zip(
        held_out[:10], evaluate.held_out_images(evaluate.HELD_OUT_SEED, 10)
    ):
        first = describe(client, url).choices[0].message.content
        messages = [
            user_with_image(url, text.DEMO_QUESTION),
            {"role": "assistant", "content": first},
            {"role": "user", "content": follow_up},
        ]
        second = client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
        answer = second.choices[0].message.content
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(image, conv, img_list)
        chat.ask(text.DEMO_QUESTION, conv)
        expected_first, _ = chat.answer(conv, img_list, do_sample=False, max_new_tokens=60)
        chat.ask(follow_up, conv)
        assert (first, answer) == (expected_first, chat.answer(conv, img_list, do_sample=False)[0])
        right += world.parse_answer(answer)["colour"] == scene.colour
    assert right >= 9


def test_seeded_answers_repeat(client, held_out):
    url = held_out[0][1]

    def sample(seed: int) -> str:
        response = describe(client, url, seed=seed, temperature=1.5, top_p=1.0)
        return response.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:  # alone and inside batches: the same answer
        again = list(pool.map(sample, [5, 5, 5, 5]))
    assert again == [sample(5)] * 4
    assert len({sample(seed) for seed in range(6)}) > 1


def test_batched_answers_equal_one_at_a_time(server, client, held_out):
    questions = [text.DEMO_QUESTION] + [q for q, _ in text.FOLLOW_UPS]
    requests = [
        (held_out[i][1], questions[i % len(questions)], [60, 8, 40, 3, 60, 20, 60, 12][i])
        for i in range(CLIENTS)
    ]

    def ask(url: str, question: str, max_tokens: int) -> tuple[str, str]:
        response = client.chat.completions.create(
            model=MODEL,
            messages=[user_with_image(url, question)],
            temperature=0,
            max_tokens=max_tokens,
        )
        return response.choices[0].message.content, response.choices[0].finish_reason

    alone = [ask(*r) for r in requests]  # one after another: batches of one
    before = health(server[0])
    barrier = threading.Barrier(CLIENTS)

    def ask_together(r):
        barrier.wait()
        return ask(*r)

    with ThreadPoolExecutor(CLIENTS) as pool:
        together = list(pool.map(ask_together, requests))
    after = health(server[0])
    assert together == alone
    assert {reason for _, reason in alone} == {"stop", "length"}
    assert after["largest_batch"] > 1
    assert after["batches"] - before["batches"] < CLIENTS  # fewer generate calls than requests


# --- bad requests --------------------------------------------------------------------------------


def post(base: str, body=None, key: str | None = API_KEY, content: bytes | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{base}/v1/chat/completions"
    if content is not None:
        return httpx.post(url, content=content, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def one(url: str, question: str = "What is it?", **extra) -> dict:
    return {"model": MODEL, "messages": [user_with_image(url, question)], **extra}


def test_bad_requests_get_openai_errors(server, held_out):
    base = server[0]
    url = held_out[0][1]
    b64 = url.split(",", 1)[1]
    truncated = base64.b64decode(b64)[:600]  # a JPEG cut short
    huge = "data:image/png;base64," + base64.b64encode(b"\0" * (21 * 2**20)).decode()
    two = {
        "role": "user",
        "content": [image_part(url), image_part(url), {"type": "text", "text": "?"}],
    }
    cases = [
        (dict(content=b'{"messages": [}'), 400, None, "not valid JSON"),
        (dict(body={"model": MODEL}), 400, None, "'messages' is required"),
        (
            dict(body={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "image_required",
            "no image",
        ),
        (
            dict(body={"model": MODEL, "messages": [two]}),
            400,
            "too_many_images",
            "one image per user message",
        ),
        (
            dict(body=one("data:image/jpeg;base64," + b64[:-3] + "!!!")),
            400,
            None,
            "not valid base64",
        ),
        (
            dict(body=one(data_url(truncated, "image/jpeg"))),
            400,
            None,
            "cannot be decoded",
        ),
        (dict(body=one(data_url(b"no image at all"))), 400, None, "not an image"),
        (dict(body=one(huge)), 400, "image_too_large", "too large (21.0 MiB"),
        (
            dict(body=one(data_url(bomb_png(30_000, 30_000)))),
            400,
            "image_too_large",
            "900 megapixels",
        ),
        (dict(body=one(url, "red " * 2500)), 400, "context_length_exceeded", "by at least"),
        (dict(body=one(url, max_tokens=1990)), 400, "context_length_exceeded", "ask for at most"),
        (
            dict(body=one("https://example.com/cat.png")),
            400,
            "remote_images_disabled",
            "--allow-remote-images",
        ),
        (dict(body=one("/etc/hostname")), 400, None, "never reads local files"),
        (dict(body={**one(url), "model": "gpt-4o"}), 404, "model_not_found", MODEL),
        (dict(body=one(url), key=None), 401, "invalid_api_key", "No API key"),
        (dict(body=one(url), key="wrong"), 401, "invalid_api_key", "Incorrect API key"),
    ]
    for kwargs, status, code, words in cases:
        error = error_of(post(base, **kwargs), status)
        assert error["code"] == code and words in error["message"], error
    error_of(httpx.get(f"{base}/v1/nothing", headers={"Authorization": f"Bearer {API_KEY}"}), 404)
    error_of(
        httpx.get(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}),
        405,
    )


def test_the_client_raises_its_own_exceptions(server, client, held_out):
    with pytest.raises(openai.BadRequestError, match="no image"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        describe(client.with_options(), held_out[0][1], extra_body={"model": "other"})
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server[0]}/v1", api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="must alternate"):
        client.chat.completions.create(
            model=MODEL,
            messages=[user_with_image(held_out[0][1], "a"), user_with_image(held_out[1][1], "b")],
        )


def test_a_client_that_leaves_mid_stream_frees_its_slot(server, client, held_out):
    base, log_path, proc = server
    before = health(base)["disconnects"]
    body = {**one(held_out[3][1], text.DEMO_QUESTION), "stream": True, "max_tokens": 60}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200
        first = next(resp.iter_lines())
        assert first.startswith("data: ") and '"role": "assistant"' in first
    # hung up after the first event
    deadline = time.monotonic() + 10
    while health(base)["disconnects"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health(base)["disconnects"] == before + 1
    response = describe(client, held_out[4][1])
    assert world.scene_matches(held_out[4][0], response.choices[0].message.content)
    assert proc.poll() is None
    assert "Traceback" not in log_path.read_text()


def test_the_llama2_model_is_served_too(tmp_path):
    """The other variant (LLaMA-2 Chat template, no Q-Former) from its shipped eval config."""
    from tests.model_fixtures import LLAMA2_CONFIGS, llama2_options

    port = free_port()
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", LLAMA2_CONFIGS["eval"]]
    cmd += ["--device", "cpu", "--port", str(port), "--options", *llama2_options("eval")]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/health", tmp_path / "llama2.log", env={"OMP_NUM_THREADS": "1"}):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        (model,) = client.models.list()
        assert model.id == "minigpt4-pretrained_minigpt4_llama2_tiny"
        url = data_url(world.make_sample(1, 0).image)
        response = client.chat.completions.create(
            model=model.id, messages=[user_with_image(url, "What is it?")], max_tokens=5
        )
        assert response.usage.completion_tokens <= 5
        assert response.choices[0].finish_reason in ("stop", "length")


def test_a_taken_port_fails_before_the_model_loads(server):
    port = server[0].rsplit(":", 1)[1]  # the running server holds it
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", TINY_EVAL, "--port", port]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"--port {port}: 127.0.0.1:{port} cannot be used" in done.stderr
    assert "Loading VIT" not in done.stderr + done.stdout

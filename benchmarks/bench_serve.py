"""Throughput and latency of the HTTP API, batched against one at a time (no assertions).

python benchmarks/bench_serve.py                  # tiny-world model on CPU, 1/4/8/16 clients
python benchmarks/bench_serve.py --requests 128   # more requests per level

Starts ``python -m minigpt4.serve`` twice on the tiny-world model (one thread, as on a laptop):
with batching (``--max-batch-size 16``) and one request at a time (``--max-batch-size 1``); they
take turns at each level. For each number of concurrent clients, each client sends requests one
after another (a held-out
image, "Describe this image.", greedy, up to 60 tokens) until ``--requests`` answers are in.
Prints answers/s and latency percentiles per level, the speed-up of batching, whether the
greedy answers are the same both ways, and what ``model.generate_from_embeddings`` alone gives
in batches of 1, 8 and 16 (the ceiling the server's own work and the clients eat into).

Each rate is printed beside its share of its bound on this machine (``roofline.py``, measured at
the tiny model's shapes with one thread, as the servers run). Answering is decoding: every step
of a batch reads the LLM's weights once (bytes per step / read bandwidth: the least time of a
step) and gives one token to each of the batch's answers, so a batch of B answers of T tokens
takes at least T steps, and the least time of an answer is T x step / B: the bound on answers/s
is B / (T x bytes per step / bandwidth), with B the mean batch the server formed and T the mean
tokens of the answers (the prefill, the images and HTTP are not in it: it is the decoding's
ceiling). The tiny LLM's weights stay in the cache from one step to the next: the bandwidth is
measured over as many bytes as they hold. ``generate_from_embeddings`` alone is held to the
larger of its FLOPs over the matmul peak and its LLM calls' weight bytes over that bandwidth
(``work.py``), its work counted on a second run.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

import roofline  # noqa: E402
import work  # noqa: E402

from minigpt4.serve.limits import DEFAULT_MAX_WAIT_S  # noqa: E402
from tiny_world import evaluate, text, world  # noqa: E402

EVAL_CONFIG = "eval_configs/minigpt4_tiny_eval.yaml"
CLIENTS = (1, 4, 8, 16)
STARTUP_TIMEOUT_S = 240
WARMUP_REQUESTS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(max_batch_size: int, wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", EVAL_CONFIG, "--device", "cpu"]
    cmd += ["--port", str(port), "--max-batch-size", str(max_batch_size)]
    cmd += ["--batch-wait-ms", str(wait_ms)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server ({' '.join(cmd)}) did not start")


def request_body(url: str) -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    content.append({"type": "text", "text": text.DEMO_QUESTION})
    return {
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": evaluate.MAX_NEW_TOKENS,
    }


def run_level(base: str, bodies: list[dict], clients: int, count: int):
    """``count`` requests from ``clients`` threads; (seconds, latencies, answers by index)."""
    answers: dict[int, str] = {}
    tokens: list[int] = []
    latencies: list[float] = []
    next_index = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                start = time.perf_counter()
                resp = http.post("/v1/chat/completions", json=bodies[i % len(bodies)])
                resp.raise_for_status()
                elapsed = time.perf_counter() - start
                reply = resp.json()
                with lock:
                    latencies.append(elapsed)
                    answers[i] = reply["choices"][0]["message"]["content"]
                    tokens.append(reply["usage"]["completion_tokens"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, answers, tokens


def generation_only(chat, roof: roofline.Roofline, count: int = 16) -> dict[int, tuple]:
    """Answers/s of ``model.generate_from_embeddings`` alone (no HTTP, no image work) on
    ``count`` held-out contexts, in batches of 1, 8 and 16: what the model could give the
    server; beside each, its share of its bound."""
    import torch

    contexts = []
    for _, image in evaluate.held_out_images(evaluate.HELD_OUT_SEED, count):
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(image, conv, img_list)
        chat.ask(text.DEMO_QUESTION, conv)
        conv.append_message(conv.roles[1], None)
        with torch.no_grad():
            contexts.append(chat.model.get_context_emb(conv.get_prompt(), img_list))
    settings = chat.settings(do_sample=False, max_new_tokens=evaluate.MAX_NEW_TOKENS)
    rates = {}
    for size in (1, 8, 16):

        def generate(size=size):
            for i in range(0, count, size):
                rows = contexts[i : i + size]
                chat.model.generate_from_embeddings(
                    rows, [settings] * len(rows), [chat.stop_rule] * len(rows)
                )

        start = time.perf_counter()
        generate()
        seconds = time.perf_counter() - start
        done = work.count(generate, chat.model, chat.model.llama_model)
        share = roofline.percent_of_bound(seconds, done.bound_s(roof, "fp32"))
        rates[size] = (count / seconds, share)
    return rates


def answers_per_s_bound(level: dict, step_s: float) -> float:
    """The decoding's ceiling: a batch of B answers of T tokens takes T steps of ``step_s``."""
    return level["mean_batch"] / (level["tokens"] * step_s)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def combine(rounds: list[dict]) -> dict:
    """Rounds of one level: the median rate, percentiles over every request, the first answers
    (every round must give the same greedy answers; counted in ``unstable``)."""
    latencies = [x for r in rounds for x in r["latencies"]]
    tokens = [x for r in rounds for x in r["tokens"]]
    rates = sorted(r["rate"] for r in rounds)
    return {
        "rate": rates[len(rates) // 2],
        "p50": percentile(latencies, 0.5),
        "p90": percentile(latencies, 0.9),
        "p99": percentile(latencies, 0.99),
        "answers": rounds[0]["answers"],
        "unstable": sum(r["answers"] != rounds[0]["answers"] for r in rounds),
        "mean_batch": sum(r["mean_batch"] for r in rounds) / len(rounds),
        "tokens": sum(tokens) / len(tokens),
    }


def measure_level(base: str, bodies: list[dict], clients: int, count: int) -> dict:
    before = httpx.get(f"{base}/health").json()
    seconds, latencies, answers, tokens = run_level(base, bodies, clients, count)
    after = httpx.get(f"{base}/health").json()
    batches = max(1, after["batches"] - before["batches"])
    return {
        "rate": count / seconds,
        "latencies": latencies,
        "answers": answers,
        "tokens": tokens,
        "mean_batch": (after["rows"] - before["rows"]) / batches,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per level")
    parser.add_argument("--max-batch-size", type=int, default=16, help="of the batched server")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULT_MAX_WAIT_S * 1000)
    parser.add_argument("--rounds", type=int, default=3, help="turns per level (median rate)")
    return parser.parse_args(argv)


def measure_servers(args: argparse.Namespace, bodies: list[dict]) -> tuple[dict, dict]:
    """Each level's combined rounds, one at a time and batched."""
    # Both servers run side by side (an idle one costs nothing) and take turns at each level,
    # so a change in the machine's load hits both alike.
    servers = [start_server(1, 0), start_server(args.max_batch_size, args.batch_wait_ms)]
    alone, batched = {}, {}
    try:
        for _, base in servers:
            run_level(base, bodies, CLIENTS[-1], WARMUP_REQUESTS)
        for clients in CLIENTS:
            rounds = [
                [measure_level(base, bodies, clients, args.requests) for _, base in servers]
                for _ in range(args.rounds)
            ]
            alone[clients] = combine([r[0] for r in rounds])
            batched[clients] = combine([r[1] for r in rounds])
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=30)
    return alone, batched


def print_levels(args, alone: dict, batched: dict, step_s: float) -> None:
    """The table: per level, each server's answers/s (and its share of the decoding's bound),
    latencies, the batched server's mean batch and its speed-up."""
    print(
        "| clients | one at a time: answers/s | of bound | p50 / p90 / p99 s "
        f"| batched (max {args.max_batch_size}, {args.batch_wait_ms:g} ms): answers/s "
        "| of bound | p50 / p90 / p99 s | mean batch | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for clients in CLIENTS:
        a, b = alone[clients], batched[clients]
        shares = [
            roofline.format_percent(100 * level["rate"] / answers_per_s_bound(level, step_s))
            for level in (a, b)
        ]
        print(
            f"| {clients} | {a['rate']:.1f} | {shares[0]} "
            f"| {a['p50']:.3f} / {a['p90']:.3f} / {a['p99']:.3f} | {b['rate']:.1f} | {shares[1]} "
            f"| {b['p50']:.3f} / {b['p90']:.3f} / {b['p99']:.3f} "
            f"| {b['mean_batch']:.1f} | {b['rate'] / a['rate']:.2f}x |"
        )


def print_agreement(args, alone: dict, batched: dict) -> None:
    differ = sum(
        alone[c]["answers"][i] != batched[c]["answers"][i]
        for c in CLIENTS
        for i in range(args.requests)
    )
    total = len(CLIENTS) * args.requests
    print(f"greedy answers equal batched and one at a time: {total - differ} of {total}")
    unstable = sum(r[c]["unstable"] for r in (alone, batched) for c in CLIENTS)
    print(f"rounds whose answers differ from the level's first round: {unstable}")


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    samples = [world.make_sample(evaluate.HELD_OUT_SEED, i) for i in range(args.requests)]
    urls = [
        "data:image/jpeg;base64," + base64.b64encode(world.to_jpeg_bytes(s.image)).decode()
        for s in samples
    ]
    bodies = [request_body(u) for u in urls]
    torch.set_num_threads(1)  # each server's torch threads
    print(f"servers on {roofline.this_machine().describe()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    alone, batched = measure_servers(args, bodies)
    print(f"load average after:  {os.getloadavg()[0]:.2f}")
    chat = evaluate.build_chat(EVAL_CONFIG)
    roof = work.measure_at(chat.model, "cpu")
    step_s = roof.memory_bound_s(work.llm_bytes_per_call(chat.model.llama_model))
    rates = generation_only(chat, roof)
    print(
        f"{args.requests} requests per level and round, {args.rounds} rounds (median rate); "
        "tiny-world model, CPU, one torch thread"
    )
    print(f"roofline (one thread, over the tiny model's weights): {roof.summary()}; a decode "
          f"step's bound {step_s * 1e6:.1f} us")  # fmt: skip
    print_levels(args, alone, batched, step_s)
    print_agreement(args, alone, batched)
    shown = ", ".join(
        f"batches of {size}: {rate:.0f} ({roofline.format_percent(share)})"
        for size, (rate, share) in rates.items()
    )
    print(f"model.generate_from_embeddings alone (no HTTP, no images), answers/s: {shown}")


if __name__ == "__main__":
    main()

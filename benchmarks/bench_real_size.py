"""Real-size MiniGPT-4 on this machine: load time, memory, image encode, answer, training step.

python benchmarks/bench_real_size.py --size 7b --weights DIR --device cpu --modes bf16 8bit 4bit
python benchmarks/bench_real_size.py --size 7b --weights DIR --device cuda   # fp16 bf16 8bit 4bit
python benchmarks/bench_real_size.py --size tiny --weights DIR               # seconds (CI)

DIR receives random weights of the real sizes in the real formats once (``real_size_weights.py``:
7B ~15 GB, 13B ~28 GB of disk) and is reused. Each mode then runs in a fresh subprocess, through
the normal path (``eval_configs/minigpt4_eval.yaml`` + ``--options``, the registry,
``build_chat``): load, one image encode, one chat answer of ``--new-tokens`` greedy tokens, one
stage-2 training step (forward, backward, AdamW) of ``--train-batch`` samples, and a training
checkpoint. It prints one table:

- load s: from the config to a ready Chat; memory in GB (1e9 bytes) from /proc/self/status:
  RSS and RssAnon (anonymous memory; mapped weight files are reclaimable page cache, so judge
  by this): the peak while loading (RSS: VmHWM; anon: sampled every 10 ms) and the steady value
  once loaded; ``run anon``: the anonymous peak over the whole run (answer and training step
  included); on CUDA also torch's allocator peak while loading and over the run;
- encode s (``chat.upload_img``), 1st token s (prompt to first token), tok/s (decode, after the
  first token), train s/it;
- bound: the copy bandwidth (bytes copied per second by a large ``copy_``) divided by the bytes
  of weights the LLM reads per token (all but its input embedding table), and tok/s as a share
  of it; ckpt MB: the training checkpoint's ``model`` entry; load avg: the 1-minute load average
  at the mode's end (the figures are only as quiet as the machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

import torch  # noqa: E402
from real_size_weights import SIZES, ensure_weights  # noqa: E402

EVAL_CONFIG = os.path.join(REPO, "eval_configs", "minigpt4_eval.yaml")
MODES = {
    "cpu": {
        "fp32": ["model.cpu_dtype=fp32", "model.low_resource=False"],
        "bf16": ["model.cpu_dtype=bf16", "model.low_resource=False"],
        "8bit": ["model.low_resource=True"],  # the shipped eval config as it is
        "4bit": ["model.low_resource=False", "model.llm_quantization=4bit"],
    },
    "cuda": {
        "fp16": ["model.autocast_dtype=fp16", "model.low_resource=False"],
        "bf16": ["model.autocast_dtype=bf16", "model.low_resource=False"],
        "8bit": ["model.low_resource=True"],
        "4bit": ["model.low_resource=False", "model.llm_quantization=4bit"],
    },
}
DEFAULT_MODES = {"cpu": ["bf16", "8bit", "4bit"], "cuda": ["fp16", "bf16", "8bit", "4bit"]}
QUESTION = "Describe this image in detail."
CAPTION = (
    "The image shows a wooden table by a window with a white cup of coffee, an open book and a "
    "pair of glasses on it. Sunlight falls across the table and a green plant stands in the "
    "corner, while the street outside is blurred. The scene looks calm and quiet."
)
RESULT_PREFIX = "RESULT "
GB = 1e9
logger = logging.getLogger("bench_real_size")


# --- memory -----------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM and RssAnon of this process in bytes ({} where /proc is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    wanted = {"VmRSS", "VmHWM", "RssAnon"}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0]) * 1024
    return out


class AnonPeak:
    """Samples RssAnon every 10 ms in a thread: the kernel keeps no peak of it."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc_status().get("RssAnon", 0))

    def read(self) -> int:
        return max(self.peak, proc_status().get("RssAnon", 0))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.read()


def copy_bandwidth(device: str, nbytes: int = 1 << 30) -> float:
    """Bytes copied per second by ``copy_`` of a ``nbytes`` buffer (best of 5)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(6):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return nbytes / best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- one mode (in its own process) ------------------------------------------------------------


def build(args: argparse.Namespace) -> Any:
    import minigpt4  # noqa: F401  (registers models and processors)
    from minigpt4.common.config import Config
    from minigpt4.conversation import loading

    files = ensure_weights(args.size, args.weights, log=lambda _m: None)
    options = [
        f"model.llama_model={files['llm']}",
        f"model.vit_model_path={files['vit']}",
        f"model.q_former_model={files['blip2']}",
        f"model.ckpt={files['ckpt']}",
        *SIZES[args.size].model_options(),
        *MODES[args.device][args.worker],
    ]
    cfg = Config(argparse.Namespace(cfg_path=EVAL_CONFIG, options=options))
    device = loading.resolve_device(args.device, 0)
    return loading.build_chat(cfg, device, 0)


def _image(size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def encode(chat: Any, device: str, image_size: int) -> tuple[float, Any, list]:
    conv, img_list = chat.new_conversation(), []
    image = _image(image_size)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        chat.upload_img(image, conv, img_list)
    _sync(device)
    return time.perf_counter() - start, conv, img_list


def answer(chat: Any, conv: Any, img_list: list, new_tokens: int) -> dict[str, float]:
    """Greedy answer of exactly ``new_tokens`` tokens, timed per LLM forward call."""
    calls: list[float] = []
    hook = chat.model.llama_model.register_forward_hook(
        lambda *_: calls.append(time.perf_counter())
    )
    chat.ask(QUESTION, conv)
    start = time.perf_counter()
    try:
        _, tokens = chat.answer(
            conv, img_list, max_new_tokens=new_tokens, min_length=new_tokens, do_sample=False
        )
    finally:
        hook.remove()
    decode = (len(calls) - 1) / (calls[-1] - calls[0]) if len(calls) > 1 else float("nan")
    return {"first_token_s": calls[0] - start, "tok_s": decode, "tokens": len(tokens)}


def train_step(chat: Any, device: str, batch: int) -> float:
    """One stage-2 step (random prompt of the eval config, forward, backward, AdamW), timed."""
    from minigpt4.models import quantized

    model = chat.model
    model.train()
    quantized.unpack_4bit_for_training(model.llama_model)  # logged; not part of the step
    images = chat.process_image(_image(224)).repeat(batch, 1, 1, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.05)
    _sync(device)
    start = time.perf_counter()
    loss = model({"image": images, "text_input": [CAPTION] * batch})["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    model.eval()
    return time.perf_counter() - start


def checkpoint_mb(model: Any) -> float:
    from minigpt4.models.weights import save_weights, training_checkpoint_state

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pth")
        save_weights({"model": training_checkpoint_state(model)}, path)
        return os.path.getsize(path) / 1e6


def llm_bytes_per_token(llm: torch.nn.Module) -> int:
    """Bytes of LLM weights read to decode one token: every parameter and quantization scale
    but the input embedding table (of which one row is read)."""
    embed = llm.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in llm.parameters() if p is not embed)
    for module in llm.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        extras = [getattr(state, "absmax", None), getattr(weight, "SCB", None)]
        total += sum(t.numel() * t.element_size() for t in extras if torch.is_tensor(t))
    return total


def _cuda_peak_and_reset(device: str) -> float | None:
    if device != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / GB
    torch.cuda.reset_peak_memory_stats()
    return peak


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    anon = AnonPeak()
    start = time.perf_counter()
    chat = build(args)
    result: dict[str, Any] = {"load_s": time.perf_counter() - start}
    logger.info("benchmark: loaded in %.1f s", result["load_s"])
    status = proc_status()
    result.update(load_peak_rss=status.get("VmHWM"), load_peak_anon=anon.read())
    result["cuda_load_peak"] = _cuda_peak_and_reset(args.device)
    gc.collect()
    status = proc_status()
    result.update(steady_rss=status.get("VmRSS"), steady_anon=status.get("RssAnon"))
    if args.device == "cuda":
        result["cuda_steady"] = torch.cuda.memory_allocated() / GB
    size = SIZES[args.size]
    result["encode_s"], conv, img_list = encode(chat, args.device, size.image_size)
    logger.info("benchmark: image encoded in %.2f s", result["encode_s"])
    result.update(answer(chat, conv, img_list, args.new_tokens))
    logger.info("benchmark: answer: first token %.2f s, %.2f tok/s",
                result["first_token_s"], result["tok_s"])  # fmt: skip
    result["train_s"] = train_step(chat, args.device, args.train_batch)
    logger.info("benchmark: training step %.1f s", result["train_s"])
    result["ckpt_mb"] = checkpoint_mb(chat.model)
    result["bytes_per_token"] = llm_bytes_per_token(chat.model.llama_model)
    result["run_peak_anon"] = anon.stop()
    result["cuda_run_peak"] = _cuda_peak_and_reset(args.device)
    result["loadavg"] = os.getloadavg()[0]
    return result


def worker(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(levelname)s] %(message)s", stream=sys.stderr
    )
    from minigpt4.models.memory import NotEnoughMemoryError

    try:
        result = run_mode(args)
    except NotEnoughMemoryError as err:
        result = {"error": "refused by the memory preflight: " + str(err).splitlines()[0]}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- all modes, one table ---------------------------------------------------------------------


def run_in_subprocess(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """One mode in a fresh Python process (clean memory figures); its log goes to stderr."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--size", args.size,
           "--weights", args.weights, "--device", args.device, "--new-tokens",
           str(args.new_tokens), "--train-batch", str(args.train_batch),
           "--threads", str(args.threads)]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit status {proc.returncode} (see its log above)"}
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value / GB:.2f}"


def row(mode: str, r: dict[str, Any], bandwidth: float, device: str) -> list[str]:
    if "error" in r:
        return [mode, r["error"]]
    bound = bandwidth / r["bytes_per_token"]
    cells = [mode, f"{r['load_s']:.3g}", _gb(r["load_peak_rss"]), _gb(r["load_peak_anon"]),
             _gb(r["steady_rss"]), _gb(r["steady_anon"]), _gb(r["run_peak_anon"])]  # fmt: skip
    if device == "cuda":
        cells += [f"{r['cuda_load_peak']:.2f}", f"{r['cuda_steady']:.2f}",
                  f"{r['cuda_run_peak']:.2f}"]  # fmt: skip
    cells += [f"{r['encode_s']:.3g}", f"{r['first_token_s']:.3g}", f"{r['tok_s']:.3g}",
              f"{bound:.3g}", f"{100 * r['tok_s'] / bound:.0f} %", f"{r['train_s']:.3g}",
              f"{r['ckpt_mb']:.3g}", f"{r['loadavg']:.1f}"]  # fmt: skip
    return cells


def header(device: str, train_batch: int) -> list[str]:
    cols = ["mode", "load s", "load peak RSS GB", "load peak anon GB", "steady RSS GB",
            "steady anon GB", "run peak anon GB"]  # fmt: skip
    if device == "cuda":
        cols += ["CUDA load peak GB", "CUDA steady GB", "CUDA run peak GB"]
    return cols + ["encode s", "1st token s", "tok/s", "bound tok/s", "of bound",
                   f"train s/it (batch {train_batch})", "ckpt MB", "load avg"]  # fmt: skip


def machine(device: str, bandwidth: float) -> str:
    import platform

    if device == "cuda":
        what = torch.cuda.get_device_name(0)
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        cpu = platform.processor() or platform.machine()
        what = f"{cpu}, {os.cpu_count()} CPUs, {total:.0f} GB RAM"
    return (f"{what}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"copy bandwidth {bandwidth / GB:.1f} GB/s (bytes copied per second)")  # fmt: skip


def markdown(rows: list[list[str]]) -> str:
    width = len(rows[0])
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows[1:]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="7b")
    parser.add_argument("--weights", required=True, help="folder for the random weights")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--modes", nargs="+", help="default: bf16 8bit 4bit (CPU), all (CUDA)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--train-batch", type=int, help="default 1 on CPU, 12 on CUDA")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    args.weights = os.path.abspath(args.weights)
    args.modes = args.modes or DEFAULT_MODES[args.device]
    unknown = sorted(set(args.modes) - set(MODES[args.device]))
    if unknown:
        known = sorted(MODES[args.device])
        parser.error(f"unknown mode(s) {unknown} for --device {args.device}; known: {known}")
    if args.train_batch is None:
        args.train_batch = 12 if args.device == "cuda" else 1
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return []
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    ensure_weights(args.size, args.weights, log=lambda m: print(m, file=sys.stderr))
    bandwidth = copy_bandwidth(args.device)
    results = []
    for mode in args.modes:
        print(f"--- {args.size} {mode} on {args.device}", file=sys.stderr, flush=True)
        results.append(run_in_subprocess(args, mode))
    rows = [header(args.device, args.train_batch)]
    rows += [row(m, r, bandwidth, args.device) for m, r in zip(args.modes, results)]
    print(f"\nMiniGPT-4 {args.size}, random weights, on {machine(args.device, bandwidth)}\n")
    print(markdown(rows))
    return results


if __name__ == "__main__":
    main()

"""Real-size MiniGPT-4 on this machine: load time, memory, image encode, answer, training step.

python benchmarks/bench_real_size.py --size 7b --weights DIR --device cpu --modes bf16 8bit 4bit
python benchmarks/bench_real_size.py --size 7b --weights DIR --device cuda   # fp16 bf16 8bit 4bit
python benchmarks/bench_real_size.py --size tiny --weights DIR               # seconds (CI)
python benchmarks/bench_real_size.py --size 7b --variant minigptv2 --weights DIR --new-tokens 16

DIR receives random weights of the real sizes in the real formats once (``real_size_weights.py``:
7B ~15 GB, 13B ~28 GB of disk; MiniGPT-v2 adds 0.23 GB beside v1's files) and is reused. Each
mode then runs in a fresh subprocess, through the normal path (``eval_configs/minigpt4_eval.yaml``
or, for ``--variant minigptv2``, ``minigptv2_eval.yaml``, + ``--options``, the registry,
``build_chat``): load, one image encode, one chat answer of ``--new-tokens`` greedy tokens, one
training step (forward, backward, AdamW) of ``--train-batch`` samples, and a training
checkpoint. It prints one table:

- load s: from the config to a ready Chat; memory in GB (1e9 bytes) from /proc/self/status:
  RSS and RssAnon (anonymous memory; mapped weight files are reclaimable page cache, so judge
  by this): the peak while loading (RSS: VmHWM; anon: sampled every 10 ms) and the steady value
  once loaded; ``run anon``: the anonymous peak over the whole run (answer and training step
  included); on CUDA also torch's allocator peak while loading and over the run;
- encode s (``chat.upload_img``), 1st token s (prompt to first token), answer s (prompt to the
  whole answer of ``--new-tokens`` tokens), prefill s (the LLM's first forward call, on the
  whole prompt), tok/s (decode, after the first token), train s/it;
- each phase beside its bound on this machine (``roofline.py``, measured first, in this
  process, with the same threads), as bound / time (at most 100 % when the bound is right):
  encode and prefill against the matmul peak of the dtype they compute in (FLOPs counted as
  they run: torch's FLOP counter for the vision side, the LLM's Linear calls for the prefill,
  ``linear_flops.py``); decode as ``bound tok/s``: the read bandwidth divided by the bytes of
  weights the LLM reads per token (all but its input embedding table), and ``of bound``;
- ckpt MB: the training checkpoint's ``model`` entry; load avg: the 1-minute load average at the
  mode's end (the figures are only as quiet as the machine).

Below the table: each phase's work and dtype, and the roofline's peaks per dtype and shape.
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

import roofline  # noqa: E402
import torch  # noqa: E402
from linear_flops import LinearFlops  # noqa: E402
from real_size_weights import SIZES, VARIANTS, ensure_weights  # noqa: E402
from work import llm_bytes_per_call  # noqa: E402

EVAL_CONFIGS = {
    "minigpt4": os.path.join(REPO, "eval_configs", "minigpt4_eval.yaml"),
    "minigptv2": os.path.join(REPO, "eval_configs", "minigptv2_eval.yaml"),
}
TITLES = {"minigpt4": "MiniGPT-4", "minigptv2": "MiniGPT-v2"}
MODES = {
    "cpu": {
        "fp32": ["model.cpu_dtype=fp32", "model.low_resource=False"],
        "bf16": ["model.cpu_dtype=bf16", "model.low_resource=False"],
        # bf16 weights, products in the dtype model.cpu_dtype: auto picks for this CPU
        "auto": ["model.cpu_dtype=auto", "model.low_resource=False"],
        "8bit": ["model.low_resource=True"],  # the shipped eval config as it is
        "4bit": ["model.low_resource=False", "model.llm_quantization=4bit"],
        # the same with the kernels model.cpu_quantized names instead of auto's choice
        "8bit-bnb": ["model.low_resource=True", "model.cpu_quantized=bitsandbytes"],
        "8bit-torch": ["model.low_resource=True", "model.cpu_quantized=torch"],
        "4bit-bnb": [
            "model.low_resource=False",
            "model.llm_quantization=4bit",
            "model.cpu_quantized=bitsandbytes",
        ],  # fmt: skip
        "4bit-torch": [
            "model.low_resource=False",
            "model.llm_quantization=4bit",
            "model.cpu_quantized=torch",
        ],  # fmt: skip
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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- one mode (in its own process) ------------------------------------------------------------


def build(args: argparse.Namespace) -> Any:
    from minigpt4.conversation.loading import load_chat

    files = ensure_weights(args.size, args.weights, log=lambda _m: None, variant=args.variant)
    size = SIZES[args.size]
    options = [
        f"model.llama_model={files['llm']}",
        f"model.vit_model_path={files['vit']}",
        f"model.ckpt={files['ckpt']}",
        *(size.v2_model_options() if args.variant == "minigptv2" else
          [f"model.q_former_model={files['blip2']}", *size.model_options()]),
        *MODES[args.device][args.worker],
    ]  # fmt: skip
    return load_chat(EVAL_CONFIGS[args.variant], args.device, options)


def _image(size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def encode(chat: Any, device: str, image_size: int) -> tuple[float, int, Any, list]:
    """``chat.upload_img`` timed, then run again under torch's FLOP counter for its bound (the
    vision side is plain torch; attention where torch has no formula, as its CPU flash
    attention, is left out, which only loosens the bound)."""
    from torch.utils.flop_counter import FlopCounterMode

    conv, img_list = chat.new_conversation(), []
    image = _image(image_size)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        chat.upload_img(image, conv, img_list)
    _sync(device)
    seconds = time.perf_counter() - start
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        chat.upload_img(image, chat.new_conversation(), [])
    return seconds, counter.get_total_flops(), conv, img_list


def answer(chat: Any, conv: Any, img_list: list, new_tokens: int) -> dict[str, float]:
    """Greedy answer of exactly ``new_tokens`` tokens, timed per LLM forward call; the first
    call (the prompt's prefill) is also timed alone, and its Linear FLOPs counted. A LoRA
    model's calls are timed on the LLM inside peft's wrapper (its ``generate`` calls that one)."""
    llm = chat.model.llama_model
    if hasattr(llm, "get_base_model"):
        llm = llm.get_base_model()
    starts: list[float] = []
    ends: list[float] = []
    prefill = LinearFlops(llm)

    def ended(*_: Any) -> None:
        ends.append(time.perf_counter())
        prefill.remove()  # counts the first call only; decoding runs without the hooks

    hooks = [llm.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())),
             llm.register_forward_hook(ended)]  # fmt: skip
    chat.ask(QUESTION, conv)
    start = time.perf_counter()
    try:
        _, tokens = chat.answer(
            conv, img_list, max_new_tokens=new_tokens, min_length=new_tokens, do_sample=False
        )
        answer_s = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    decode = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    return {"first_token_s": ends[0] - start, "answer_s": answer_s,
            "prefill_s": ends[0] - starts[0], "prefill_flops": prefill.total, "tok_s": decode,
            "tokens": len(tokens)}  # fmt: skip


def train_step(chat: Any, device: str, batch: int) -> float:
    """One stage-2 step (random prompt of the eval config, forward, backward, AdamW), timed."""
    from minigpt4.models.loading import quantized

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


def matmul_dtypes(model: Any) -> dict[str, str]:
    """The dtypes the image encode's and the prefill's matmuls run in, whose peaks bound them:
    the vision side's compute dtype; the LLM's, or int8 for bitsandbytes' 8-bit layers
    (LLM.int8(): on CUDA, and for prefills on a CPU where its int8 kernel runs); fp32 where the
    CPU computes the products of bf16 weights, or of 8-bit weights dequantized, in fp32
    (``model.cpu_dtype: auto``; :mod:`minigpt4.models.int8_linear`), and for 4-bit layers on
    torch's int4 kernel (:mod:`minigpt4.models.int4_linear`)."""
    from minigpt4.models.int4_linear import Int4WeightLinear
    from minigpt4.models.int8_linear import prefills_weight_only
    from minigpt4.models.precision import DTYPE_NAMES

    precision = model.precision
    upcast = precision.cpu_matmul is not None and precision.cpu_matmul.upcast
    vision = "fp32" if upcast else DTYPE_NAMES[precision.autocast or precision.vision]
    llm = DTYPE_NAMES[precision.autocast or precision.llm]
    layers = list(model.llama_model.modules())
    weight_only = any(prefills_weight_only(m) for m in layers)
    if precision.quantization == "8bit" and not weight_only:
        llm = "int8"
    elif any(isinstance(m, Int4WeightLinear) for m in layers):
        llm = "fp32"  # torch's int4 kernel multiplies in fp32 (FMAs on the unpacked weight)
    elif upcast and precision.quantization != "4bit":
        llm = "fp32"
    return {"encode_dtype": vision, "prefill_dtype": llm}


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
    result["encode_s"], result["encode_flops"], conv, img_list = encode(
        chat, args.device, chat.model.config.image_size
    )
    logger.info("benchmark: image encoded in %.2f s", result["encode_s"])
    result.update(answer(chat, conv, img_list, args.new_tokens))
    logger.info("benchmark: answer: first token %.2f s, %.2f tok/s",
                result["first_token_s"], result["tok_s"])  # fmt: skip
    result["train_s"] = train_step(chat, args.device, args.train_batch)
    logger.info("benchmark: training step %.1f s", result["train_s"])
    result["ckpt_mb"] = checkpoint_mb(chat.model)
    result["bytes_per_token"] = llm_bytes_per_call(chat.model.llama_model)
    result.update(matmul_dtypes(chat.model))
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
    print_result(result)


# --- workers and their results ---------------------------------------------------------------


def print_result(result: dict[str, Any]) -> None:
    """A worker's result, as the line :func:`worker_result` reads."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def worker_result(cmd: list[str], threads: int) -> dict[str, Any]:
    """Run one worker in a fresh Python process (clean memory figures; its log goes to stderr)
    on ``threads`` threads (``OMP_NUM_THREADS``: the model's loading would otherwise choose its
    own, and the roofline's were these) and read its result, or say how it failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit status {proc.returncode} (see its log above)"}
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def gb(value: float | None) -> str:
    """Bytes as GB (1e9) with 2 decimals, "-" when not measured."""
    return "-" if value is None else f"{value / GB:.2f}"


# --- all modes, one table ---------------------------------------------------------------------


def run_in_subprocess(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """One mode in its own worker process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--size", args.size,
           "--variant", args.variant, "--weights", args.weights, "--device", args.device,
           "--new-tokens", str(args.new_tokens), "--train-batch", str(args.train_batch),
           "--threads", str(args.threads)]  # fmt: skip
    return worker_result(cmd, args.threads)


def bounds(r: dict[str, Any], roof: roofline.Roofline) -> dict[str, float | None]:
    """Each phase's least time on this machine, in seconds: FLOPs / the matmul peak of its
    dtype for the image encode and the prefill; LLM weight bytes / read bandwidth per token."""
    return {"encode": roof.compute_bound_s(r["encode_flops"], r["encode_dtype"]),
            "prefill": roof.compute_bound_s(r["prefill_flops"], r["prefill_dtype"]),
            "token": roof.memory_bound_s(r["bytes_per_token"])}  # fmt: skip


def row(mode: str, r: dict[str, Any], roof: roofline.Roofline, device: str) -> list[str]:
    if "error" in r:
        return [mode, r["error"]]
    bound = bounds(r, roof)
    pct = roofline.format_percent
    of = roofline.percent_of_bound
    cells = [mode, f"{r['load_s']:.3g}", gb(r["load_peak_rss"]), gb(r["load_peak_anon"]),
             gb(r["steady_rss"]), gb(r["steady_anon"]), gb(r["run_peak_anon"])]  # fmt: skip
    if device == "cuda":
        cells += [f"{r['cuda_load_peak']:.2f}", f"{r['cuda_steady']:.2f}",
                  f"{r['cuda_run_peak']:.2f}"]  # fmt: skip
    cells += [f"{r['encode_s']:.3g}", pct(of(r["encode_s"], bound["encode"])),
              f"{r['first_token_s']:.3g}", f"{r['answer_s']:.3g}", f"{r['prefill_s']:.3g}",
              pct(of(r["prefill_s"], bound["prefill"])), f"{r['tok_s']:.3g}",
              f"{1 / bound['token']:.3g}", pct(of(1 / r["tok_s"], bound["token"])),
              f"{r['train_s']:.3g}", f"{r['ckpt_mb']:.3g}", f"{r['loadavg']:.1f}"]  # fmt: skip
    return cells


def header(device: str, train_batch: int) -> list[str]:
    cols = ["mode", "load s", "load peak RSS GB", "load peak anon GB", "steady RSS GB",
            "steady anon GB", "run peak anon GB"]  # fmt: skip
    if device == "cuda":
        cols += ["CUDA load peak GB", "CUDA steady GB", "CUDA run peak GB"]
    return cols + ["encode s", "encode of bound", "1st token s", "answer s", "prefill s",
                   "prefill of bound", "tok/s", "bound tok/s", "of bound",
                   f"train s/it (batch {train_batch})", "ckpt MB", "load avg"]  # fmt: skip


def work_rows(modes: list[str], results: list[dict[str, Any]]) -> list[list[str]]:
    """What the bounds divide: each phase's work, and the dtype whose peak it is held to."""
    rows = [["mode", "encode GFLOP", "encode dtype", "prefill GFLOP", "prefill dtype",
             "LLM GB read per token"]]  # fmt: skip
    for mode, r in zip(modes, results):
        if "error" not in r:
            rows.append([mode, f"{r['encode_flops'] / GB:.3g}", r["encode_dtype"],
                         f"{r['prefill_flops'] / GB:.3g}", r["prefill_dtype"],
                         f"{r['bytes_per_token'] / GB:.3g}"])  # fmt: skip
    return rows


def machine(roof: roofline.Roofline) -> str:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return (f"{roof.machine.describe()}, {total:.0f} GB RAM; torch {torch.__version__}; "
            f"{roof.summary()}")  # fmt: skip


def markdown(rows: list[list[str]]) -> str:
    width = len(rows[0])
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows[1:]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="7b")
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="minigpt4",
        help="minigptv2: MiniGPT-v2 (LLaMA-2-Chat + LoRA, 448 px, no Q-Former)",
    )
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


def print_report(args: argparse.Namespace, results: list[dict[str, Any]],
                 roof: roofline.Roofline) -> None:  # fmt: skip
    """The table, each phase's work, and the roofline its bounds come from."""
    rows = [header(args.device, args.train_batch)]
    rows += [row(m, r, roof, args.device) for m, r in zip(args.modes, results)]
    print(f"\n{TITLES[args.variant]} {args.size}, random weights, on {machine(roof)}\n")
    print(markdown(rows))
    print("\nThe work each bound divides (FLOPs by the dtype's peak, bytes by the bandwidth):\n")
    print(markdown(work_rows(args.modes, results)))
    print(f"\nThe roofline (each product the best of {roofline.REPEATS}; a dtype's peak is its "
          "best row):\n")  # fmt: skip
    print(roof.table())
    for note in roof.notes:
        print(note)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return []
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    ensure_weights(args.size, args.weights, log=lambda m: print(m, file=sys.stderr),
                   variant=args.variant)  # fmt: skip
    size = SIZES[args.size]
    print("--- roofline of this machine", file=sys.stderr, flush=True)
    roof = roofline.measure(args.device, kn=size.llm_matmul_shapes())
    results = []
    for mode in args.modes:
        print(f"--- {args.variant} {args.size} {mode} on {args.device}", file=sys.stderr,
              flush=True)  # fmt: skip
        results.append(run_in_subprocess(args, mode))
    print_report(args, results, roof)
    return results


if __name__ == "__main__":
    main()

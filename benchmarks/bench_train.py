"""Stage-2 training at real sizes on this machine: peak memory and seconds per iteration.

python benchmarks/bench_train.py --size 7b --weights DIR --device cuda --batches 1 4 12
python benchmarks/bench_train.py --size 7b --weights DIR --device cpu --modes bf16 4bit --batches 1
python benchmarks/bench_train.py --size 7b --variant minigptv2 --weights DIR --modes 4bit
python benchmarks/bench_train.py --size tiny --weights DIR               # seconds (CI)

``--variant minigptv2`` times MiniGPT-v2's fine-tuning step instead (the original's
``train_configs/minigptv2_finetune.yaml``: LLaMA-2-Chat with LoRA r 64, ``llama_proj`` and LoRA
trained, 448-px images): a sample is an instruction in the chat template and an answer as long
as the config's ``max_txt_len``; the weights are ``bench_real_size.py --variant minigptv2``'s.

DIR holds random weights of the real sizes in the real formats, written once by
``real_size_weights.py`` (the same folder ``bench_real_size.py`` uses). For every mode (bf16 and
4-bit LLMs by default), batch and LLM gradient checkpointing off/on, a fresh subprocess builds the
stage-2 model as train.py does (``train_configs/minigpt4_stage2_finetune.yaml`` + ``--options``,
the registry, :func:`minigpt4.models.training_precision.prepare_for_training`) and runs ``--steps``
training steps (forward under the run's autocast, backward, AdamW) on random images and a caption
as long as ``max_txt_len``, after ``--warmup`` untimed steps (default 1). It prints one table: s/it
(the mean of the timed steps) and the process's CPU seconds per step divided by its threads (the
same figure on an idle machine; lower than s/it when something else shares the cores), the peak RSS
of loading and of training apart (the kernel's high-water mark is reset between them), the whole
run's peak anonymous memory (GB, 1e9 bytes, /proc/self/status; anonymous memory is what the machine
must really have, mapped weight files being reclaimable page cache), torch's allocator peak on
CUDA, and beside them the training-memory estimate of :mod:`minigpt4.models.train_memory` for the
same run. A CPU run whose estimate exceeds the memory available now is not started (its row says
so) rather than left to the out-of-memory killer. The machine is named as ``roofline.py`` names it.

Beside s/it, the step's bound on this machine (``roofline.py``, measured first, in this process,
with the same threads, at the LLM's shapes): the FLOPs of one step, forward and backward, over the
matmul peak of the dtype its products run in, and s/it's share of it. The FLOPs are counted once,
on the first step (a warm-up step; with ``--warmup 0`` the first timed one, whose time then holds
the counter's cost per operation: milliseconds, against minutes for a real-size step), by torch's
``FlopCounterMode``, which sees backward's matmuls too and the recomputed forward of gradient
checkpointing; a Linear layer whose kernel it does not see (bitsandbytes' 4-bit CPU kernels are
custom ops) is counted from its shape, forward only: its backward is a plain ``torch.matmul`` by
the dequantized weight, which the counter sees (``work.py``). The last column says which counting
each run used.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

import roofline  # noqa: E402
import torch  # noqa: E402
from bench_real_size import (  # noqa: E402
    AnonPeak,
    gb,
    markdown,
    matmul_dtypes,
    print_result,
    proc_status,
    worker_result,
)
from real_size_weights import SIZES, ensure_weights, paths  # noqa: E402
from work import count  # noqa: E402

CONFIGS = {
    "minigpt4": os.path.join(REPO, "train_configs", "minigpt4_stage2_finetune.yaml"),
    "minigptv2": os.path.join(REPO, "train_configs", "minigptv2_finetune.yaml"),
}
TITLES = {"minigpt4": "MiniGPT-4 {size} stage 2", "minigptv2": "MiniGPT-v2 {size} finetune"}
MODES = {
    "cpu": {"bf16": ["model.cpu_dtype=bf16"], "4bit": ["model.llm_quantization=4bit"]},
    "cuda": {
        "bf16": ["model.autocast_dtype=bf16"],
        "4bit": ["model.autocast_dtype=bf16", "model.llm_quantization=4bit"],
    },
}
CAPTION = "A wooden table by a window with a cup of coffee, an open book and a plant. "


# --- one run (in its own process) ------------------------------------------------------------


def config(args: argparse.Namespace, mode: str, checkpoint: bool) -> Any:
    from minigpt4.common.config import Config

    files = paths(args.weights, args.variant)
    options = [
        f"model.llama_model={files['llm']}",
        f"model.vit_model_path={files['vit']}",
        f"model.ckpt={files['ckpt']}",
        f"model.device={args.device}",
        f"model.use_grad_checkpoint_llm={checkpoint}",
        f"run.device={args.device}",
        f"run.amp={args.device == 'cuda'}",
        "run.amp_dtype=bf16",
        *MODES[args.device][mode],
        *vision_options(args, files),
    ]
    return Config(argparse.Namespace(cfg_path=CONFIGS[args.variant], options=options))


def vision_options(args: argparse.Namespace, files: dict[str, str]) -> list[str]:
    """The vision side's files and sizes: v1's Q-Former, or v2's ViT at twice the resolution
    (only the model's keys: the v2 config names other datasets)."""
    size = SIZES[args.size]
    if args.variant == "minigptv2":
        return [o for o in size.v2_model_options() if o.startswith("model.")]
    return [f"model.q_former_model={files['blip2']}", *size.model_options()]


def training_batch(args: argparse.Namespace, model: Any, batch: int) -> dict[str, Any]:
    """Random images and a text as long as ``max_txt_len``: v1 a caption, v2 an instruction
    (a detailed grounded description, in the chat template) and its answer."""
    size = SIZES[args.size]
    side = size.v2_image_size if args.variant == "minigptv2" else size.image_size
    images = torch.randn(batch, 3, side, side, device=torch.device(args.device))
    text = CAPTION * (model.max_txt_len // len(CAPTION.split()) + 1)
    if args.variant == "minigptv2":
        from minigpt4.datasets.v2.templates import GROUNDED_CAPTION_POOL, image_instruction

        instruction = image_instruction(GROUNDED_CAPTION_POOL[0])
        return {"image": images, "instruction_input": [instruction] * batch,
                "answer": [text] * batch}  # fmt: skip
    return {"image": images, "text_input": [text] * batch}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train(args: argparse.Namespace, mode: str, batch: int, checkpoint: bool) -> dict[str, Any]:
    """Build the stage-2 model as train.py does and time ``args.steps`` training steps."""
    from minigpt4.common.registry import registry
    from minigpt4.models.train_memory import config_of, estimate
    from minigpt4.models.training_precision import check_training_config, prepare_for_training

    anon = AnonPeak()
    cfg = config(args, mode, checkpoint)
    check_training_config(cfg)
    run = cfg.training_run_config()
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
    device = torch.device(args.device)
    model, plan = prepare_for_training(model, run, device)
    model = model.to(device)
    model.train()
    samples = training_batch(args, model, batch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.05)
    load_rss = proc_status().get("VmHWM")
    reset_peak_rss()
    work = None
    times, cpu_times = [], []
    for _ in range(args.warmup + args.steps):  # warm-up steps: allocations, kernel choice
        _sync(args.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        if work is None:  # the first step's FLOPs, forward and backward
            work = count(lambda: step(model, samples, optimizer, plan), model)
        else:
            step(model, samples, optimizer, plan)
        _sync(args.device)
        times.append(time.perf_counter() - start)
        cpu_times.append((time.process_time() - cpu_start) / torch.get_num_threads())
    model_cls, model_config = config_of(cfg)
    estimated = estimate(model_cls, model_config, args.device, batch).total
    return {
        "s_per_it": sum(times[args.warmup :]) / args.steps,
        "cpu_s_per_it": sum(cpu_times[args.warmup :]) / args.steps,
        "flops": work.flops,
        "flops_by": work.counted_by(),
        "dtypes": sorted(set(matmul_dtypes(model).values())),
        "load_rss": load_rss,
        "peak_rss": proc_status().get("VmHWM"),
        "peak_anon": anon.stop(),
        "cuda_peak": torch.cuda.max_memory_allocated() if args.device == "cuda" else None,
        "estimate": estimated,
    }


def step(model: Any, samples: dict[str, Any], optimizer: Any, plan: Any) -> None:
    """One training step: forward under the run's autocast, backward, AdamW."""
    with plan.autocast_context():
        loss = model(samples)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux; elsewhere a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def estimated_bytes(args: argparse.Namespace, mode: str, batch: int, ckpt: str) -> int:
    """The training-memory estimate of one run, computed without loading anything."""
    from minigpt4.models.train_memory import config_of, estimate

    model_cls, model_config = config_of(config(args, mode, ckpt == "on"))
    return estimate(model_cls, model_config, args.device, batch).total


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def worker(args: argparse.Namespace) -> None:
    mode, batch, checkpoint = args.worker.split(",")
    result = train(args, mode, int(batch), checkpoint == "on")
    print_result(result)


# --- every run, one table -------------------------------------------------------------------


def run_in_subprocess(args: argparse.Namespace, mode: str, batch: int, ckpt: str) -> dict:
    """One run in its own worker process (its own memory peak)."""
    if args.device == "cpu":
        needed, available = estimated_bytes(args, mode, batch, ckpt), available_bytes()
        if available is not None and needed > available:
            return {"error": f"not run: estimate {gb(needed)} GB > {gb(available)} GB available"}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{mode},{batch},{ckpt}",
           "--size", args.size, "--variant", args.variant, "--weights", args.weights,
           "--device", args.device,
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads)]  # fmt: skip
    return worker_result(cmd, args.threads)


def table(runs: list[tuple[str, int, str]], results: list[dict[str, Any]],
          roof: roofline.Roofline) -> list[list[str]]:  # fmt: skip
    rows = [["mode", "batch", "LLM grad ckpt", "s/it", "CPU s/it", "load peak RSS GB",
             "train peak RSS GB", "peak anon GB", "cuda peak GB", "estimate GB", "GFLOP/it",
             "dtype", "bound s/it", "of bound", "FLOPs counted by"]]  # fmt: skip
    for (mode, batch, ckpt), r in zip(runs, results):
        if "error" in r:
            rows.append([mode, str(batch), ckpt, r["error"]])
            continue
        bound = roof.bound_s(r["flops"], tuple(r["dtypes"]))
        share = roofline.format_percent(roofline.percent_of_bound(r["s_per_it"], bound))
        rows.append([mode, str(batch), ckpt, f"{r['s_per_it']:.3g}", f"{r['cpu_s_per_it']:.3g}",
                     gb(r["load_rss"]), gb(r["peak_rss"]), gb(r["peak_anon"]),
                     gb(r["cuda_peak"]), gb(r["estimate"]), f"{r['flops'] / 1e9:.3g}",
                     "/".join(r["dtypes"]), "-" if bound is None else f"{bound:.3g}", share,
                     r["flops_by"]])  # fmt: skip
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="7b")
    parser.add_argument("--variant", choices=sorted(CONFIGS), default="minigpt4",
                        help="minigptv2: MiniGPT-v2's fine-tuning step")  # fmt: skip
    parser.add_argument("--weights", required=True, help="folder for the random weights")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--modes", nargs="+", default=["bf16", "4bit"], help="bf16 and/or 4bit")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 12])
    parser.add_argument(
        "--grad-checkpoint", nargs="+", choices=["off", "on"], default=["off", "on"]
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    args.weights = os.path.abspath(args.weights)
    unknown = sorted(set(args.modes) - set(MODES[args.device]))
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; known: {sorted(MODES[args.device])}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return []
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    ensure_weights(args.size, args.weights, log=lambda m: print(m, file=sys.stderr),
                   variant=args.variant)  # fmt: skip
    print("--- roofline of this machine", file=sys.stderr, flush=True)
    roof = roofline.measure(args.device, ("fp32", "bf16"), kn=SIZES[args.size].llm_matmul_shapes())
    runs = list(itertools.product(args.modes, args.batches, args.grad_checkpoint))
    results = []
    for mode, batch, ckpt in runs:
        print(f"--- {args.size} {mode} batch {batch} LLM grad ckpt {ckpt}", file=sys.stderr,
              flush=True)  # fmt: skip
        results.append(run_in_subprocess(args, mode, batch, ckpt))
    machine = roof.machine.describe()
    title = TITLES[args.variant].format(size=args.size)
    print(
        f"\n{title}, random weights, {args.steps} timed step(s) after {args.warmup} warm-up "
        f"step(s), on {machine}; {roof.summary()}\n"
    )
    print(markdown(table(runs, results, roof)))
    return results


if __name__ == "__main__":
    main()

"""MiniGPT-4 (LLaMA-2 Chat) end to end, from the shipped configs, as a user runs them.

Stage 1 with ``torchrun --nproc_per_node 2`` (gloo, CPU) over generated webdataset shards, with
the per-dataset batch size the original's LLaMA-2 configs use; stage 2 from its checkpoint;
the demo answering through its HTTP API; the batch command. The tiny reference weights of the
LLaMA-2 set stand in for Llama-2-7b-chat and the ViT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minigpt4  # noqa: F401
from tests.model_fixtures import LLAMA2_CONFIGS, llama2_options
from tests.process_helpers import REPO_ROOT, free_port, serving
from tests.train_helpers import write_align_folder, write_shards

pytestmark = pytest.mark.slow
TORCHRUN_TIMEOUT_S = 600
RUN = [
    "run.iters_per_epoch=2",
    "run.max_epoch=1",
    "run.warmup_steps=1",
    "run.init_lr=1e-2",
    "run.num_workers=0",
    "run.device=cpu",
    "run.log_freq=1",
    "run.amp=False",  # the shipped configs' amp: True contradicts the tiny model's fp32 on CPU
]


def model_options(stage: str, **replace: str) -> list[str]:
    """The tiny LLaMA-2 weights for a shipped config; ``replace``: other model.* values."""
    keep = [o for o in llama2_options(stage) if o.split("=", 1)[0][len("model.") :] not in replace]
    return keep + [f"model.{k}={v}" for k, v in replace.items()]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama2_stage1")
    laion = write_shards(root / "laion", n_shards=2, per_shard=4, seed=1)
    cc_sbu = write_shards(root / "cc_sbu", n_shards=2, per_shard=4, seed=2)
    options = [o for o in llama2_options("stage1") if not o.startswith("model.ckpt=")]
    options += RUN + [
        f"run.output_dir={root / 'out'}",
        f"datasets.laion.build_info.storage={laion}",
        f"datasets.cc_sbu.build_info.storage={cc_sbu}",
        "datasets.laion.batch_size=2",
        "datasets.cc_sbu.batch_size=3",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "train.py", "--cfg-path", LLAMA2_CONFIGS["stage1"], "--options", *options]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=TORCHRUN_TIMEOUT_S)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    (job,) = (root / "out").iterdir()
    return {"output": output, "ckpt": job / "checkpoint_0.pth", "root": root}


def test_stage1_under_torchrun(stage1):
    output = stage1["output"]
    assert "distributed init (rank 1, world 2)" in output
    assert "Do not use Q-Former here." in output and "Loading Q-Former" not in output
    assert "run.wandb_log is set: this project does not log to wandb" in output
    assert output.count("Train: data epoch: [0]  [1/2]") == 1
    ckpt = torch.load(stage1["ckpt"], weights_only=True)
    assert sorted(ckpt["model"]) == ["llama_proj.bias", "llama_proj.weight"]
    assert ckpt["model"]["llama_proj.weight"].shape == (64, 192)  # 4 x 48 ViT features in
    assert ckpt["config"]["model"]["arch"] == "minigpt4"
    assert ckpt["config"]["datasets"]["cc_sbu"]["batch_size"] == 3


def test_stage2_then_demo_and_batch_command(stage1, tmp_path, monkeypatch, caplog):
    import train

    align = write_align_folder(tmp_path / "cc_sbu_align", n=6)
    options = model_options("stage2", ckpt=str(stage1["ckpt"]), prompt_path="prompts/alignment.txt")
    options += RUN + [
        f"run.output_dir={tmp_path / 'out'}",
        f"datasets.cc_sbu_align.build_info.storage={align}",
        "datasets.cc_sbu_align.batch_size=2",
    ]
    monkeypatch.chdir(REPO_ROOT)
    runner = train.main(["--cfg-path", LLAMA2_CONFIGS["stage2"], "--options", *options])
    assert f"Load MiniGPT-4 Checkpoint: {stage1['ckpt']}" in caplog.messages
    model = runner.unwrap_dist_model(runner.model)
    assert (
        model.prompt_list[0]
        == "[INST] <Img><ImageHere></Img> Describe this image in detail. [/INST] "
    )
    start = torch.load(stage1["ckpt"], weights_only=True)["model"]["llama_proj.weight"]
    assert not torch.equal(model.llama_proj.weight.detach(), start)
    (job,) = (tmp_path / "out").iterdir()
    stage2_ckpt = job / "checkpoint_0.pth"

    eval_options = model_options("eval", ckpt=str(stage2_ckpt))
    check_demo(tmp_path, eval_options, align / "image" / "2.jpg")
    check_batch_command(tmp_path, eval_options, align / "image")


def check_demo(tmp_path: Path, options: list[str], image: Path) -> None:
    from gradio_client import Client, handle_file

    port = free_port()
    cmd = [sys.executable, "demo.py", "--cfg-path", LLAMA2_CONFIGS["eval"], "--device", "cpu",
           "--server-port", str(port), "--options", *options]  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    with serving(cmd, url, tmp_path / "demo.log"):
        client = Client(url, verbose=False)
        client.predict(handle_file(str(image)), "", api_name="/upload")
        _, history = client.predict("What is in the picture?", [], api_name="/ask")
        final = client.predict(history, 1, 1.0, api_name="/answer")
    assert [m["role"] for m in final] == ["user", "assistant"]
    log = (tmp_path / "demo.log").read_text()
    assert "Do not use Q-Former here." in log and "Traceback" not in log


def check_batch_command(tmp_path: Path, options: list[str], images: Path) -> None:
    from minigpt4.inference import main

    out = tmp_path / "answers.jsonl"
    main(["--cfg-path", LLAMA2_CONFIGS["eval"], "--images", str(images), "--out", str(out),
          "--device", "cpu", "--greedy", "--max-new-tokens", "8",
          "--options", *options])  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6 and all(isinstance(r["answer"], str) for r in records)

"""A launch over two machines, simulated on localhost: two ``torchrun`` commands (one per node,
``--nnodes 2 --nproc_per_node 1``, c10d rendezvous on 127.0.0.1) train the same ``llama_proj``
as one node running two processes (``--standalone --nproc_per_node 2``).

Both runs use the tiny model and the e2e tests' generated stage-1 shards, one epoch of two
iterations on CPU (gloo). Global rank r seeds, reads and steps as rank r does on one node, so
the weights agree (within 1e-6; in practice bit for bit).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_helpers import write_shards, write_stage1_config

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(cfg: Path, out: Path) -> list[str]:
    return ["train.py", "--cfg-path", str(cfg), "--options", f"run.output_dir={out}"]


def run_all(commands: list[list[str]]) -> list[str]:
    """Start every command at once (the nodes meet at the rendezvous); wait for all, bounded."""
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for cmd in commands
    ]
    try:
        outputs = [proc.communicate(timeout=TIMEOUT_S)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-6000:]
    return outputs


def llama_proj(out: Path) -> dict[str, torch.Tensor]:
    (ckpt,) = out.glob("*/checkpoint_0.pth")
    model = torch.load(ckpt, weights_only=True)["model"]
    return {k: v for k, v in model.items() if k.startswith("llama_proj.")}


@pytest.mark.slow
def test_two_nodes_train_what_one_node_with_two_processes_trains(tmp_path):
    laion = write_shards(tmp_path / "laion", n_shards=2, per_shard=6, seed=1)
    cc_sbu = write_shards(tmp_path / "cc_sbu", n_shards=2, per_shard=6, seed=2)
    cfg = write_stage1_config(tmp_path / "stage1.yaml", laion, cc_sbu, Path("unused"),
                              max_epoch=1, iters_per_epoch=2)  # fmt: skip

    one_node = [*TORCHRUN, "--standalone", "--nproc_per_node", "2"]
    (single_out,) = run_all([one_node + train_args(cfg, tmp_path / "one_node")])

    endpoint = f"127.0.0.1:{free_port()}"
    node = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", endpoint, "--rdzv_id", "two-nodes",
            "--local_addr", "127.0.0.1"]  # fmt: skip
    outputs = run_all([node + train_args(cfg, tmp_path / "two_nodes")] * 2)

    joined = "".join(outputs)
    assert "distributed init (rank 0, world 2)" in joined
    assert "distributed init (rank 1, world 2)" in joined
    assert joined.count("Saving checkpoint at epoch 0") == 1  # rank 0 only, on one node
    assert "Saving checkpoint at epoch 0" in single_out
    one, two = llama_proj(tmp_path / "one_node"), llama_proj(tmp_path / "two_nodes")
    assert set(one) == set(two) == {"llama_proj.weight", "llama_proj.bias"}
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6)

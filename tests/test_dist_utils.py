"""Distributed helpers: single process without a launcher, gloo under torchrun, cached download."""

import os
import subprocess
import sys
import textwrap

from omegaconf import OmegaConf

from minigpt4.common import dist_utils


def test_single_process_without_launcher(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    run_cfg = OmegaConf.create({"distributed": True, "dist_url": "env://", "device": "cpu"})
    dist_utils.init_distributed_mode(run_cfg)
    assert run_cfg.distributed is False
    assert dist_utils.get_rank() == 0 and dist_utils.get_world_size() == 1
    assert dist_utils.is_main_process()


def test_cached_file_path_uses_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
    assert dist_utils.cached_file_path(url) == str(
        tmp_path / "hub" / "checkpoints" / "eva_vit_g.pth"
    )


SCRIPT = textwrap.dedent(
    """
    import os, sys
    from omegaconf import OmegaConf
    from minigpt4.common import dist_utils

    run_cfg = OmegaConf.create({"distributed": True, "dist_url": "env://", "device": "cpu"})
    dist_utils.init_distributed_mode(run_cfg)
    path = dist_utils.download_cached_file(sys.argv[1], check_hash=False)
    with open(os.path.join(sys.argv[2], f"rank{run_cfg.rank}.txt"), "w") as f:
        f.write(f"{run_cfg.rank} {run_cfg.world_size} {run_cfg.dist_backend} "
                f"{dist_utils.get_world_size()} {path}")
    """
)


def test_torchrun_two_ranks_gloo_and_one_download(tmp_path, repo_root):
    source = tmp_path / "weights.pth"
    source.write_bytes(b"0123456789")
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch"), PYTHONPATH=str(repo_root))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), source.as_uri(), str(out)]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, timeout=300, cwd=tmp_path)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "weights.pth"
    assert cached.read_bytes() == b"0123456789"
    for rank in (0, 1):
        fields = (out / f"rank{rank}.txt").read_text().split()
        assert fields == [str(rank), "2", "gloo", "2", str(cached)]

"""Running a benchmark script as a user runs it, for tests: one torch thread, offline."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.model_fixtures import REPO_ROOT


def run_benchmark(script: str, *args: str, timeout: int = 300) -> str:
    """``python benchmarks/<script> <args>``'s standard output; the test fails with the tail of
    its standard error when it exits with an error."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout

"""The documentation site builds strictly: a broken link or anchor between pages fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strictly(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "tiny-world" / "index.html").is_file()
    assert (tmp_path / "demo.png").is_file()


def test_a_broken_link_fails_the_build(tmp_path):
    """The check itself: the same build over a copy of the pages with one bad link fails."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (REPO_ROOT / "docs").iterdir():
        (docs / page.name).symlink_to(page)
    (docs / "index.md").unlink()
    text = (REPO_ROOT / "docs" / "index.md").read_text()
    (docs / "index.md").write_text(text + "\nSee [nowhere](no-such-page.md#none).\n")
    config = (REPO_ROOT / "mkdocs.yml").read_text()
    (tmp_path / "mkdocs.yml").write_text(config)
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr

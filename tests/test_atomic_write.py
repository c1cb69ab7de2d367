"""The one atomic-write helper: old or new content, never half; one temporary name, cleaned."""

import os
import re
from pathlib import Path

import pytest

from minigpt4.common.atomic_write import (
    atomic_write,
    atomic_write_files,
    atomic_write_text,
    remove_stale_temp_files,
    temp_path,
)

REPO = Path(__file__).resolve().parents[1]
DEAD_PID = 4194304  # above Linux's default pid_max
# Where a rename other than atomic_write's is the point (each says why in a comment there).
OWN_RENAMES = {
    "minigpt4/common/atomic_write.py",
    "minigpt4/inference.py",  # completes OUT.partial, a documented result file
    "dataset/convert_captions.py",  # a standalone script: the same name, written out
}


def test_new_content_replaces_the_old_and_no_temporary_remains(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write_text("new", target)
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        assert tmp == temp_path(target) == f"{target}.tmp.{os.getpid()}"
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_folder_files_move_in_and_others_stay(tmp_path):
    out = tmp_path / "llm"
    out.mkdir()
    (out / "kept.txt").write_text("kept")
    (out / "config.json").write_text("old")
    with atomic_write_files(out) as tmp:
        Path(tmp, "config.json").write_text("new")
        Path(tmp, "model.safetensors").write_bytes(b"w")
    assert sorted(os.listdir(out)) == ["config.json", "kept.txt", "model.safetensors"]
    assert (out / "config.json").read_text() == "new"
    assert os.listdir(tmp_path) == ["llm"]


def test_stale_temporary_files_and_folders_are_removed(tmp_path):
    (tmp_path / f"x.pth.tmp.{DEAD_PID}").write_bytes(b"")
    (tmp_path / f"llm.tmp.{DEAD_PID}").mkdir()
    (tmp_path / f"llm.tmp.{DEAD_PID}" / "config.json").write_text("{}")
    (tmp_path / "answers.jsonl.partial").write_text("{}\n")  # results so far: never removed
    removed = remove_stale_temp_files([str(tmp_path)])
    assert sorted(os.path.basename(p) for p in removed) == [
        f"llm.tmp.{DEAD_PID}",
        f"x.pth.tmp.{DEAD_PID}",
    ]
    assert os.listdir(tmp_path) == ["answers.jsonl.partial"]


def test_every_writer_renames_through_the_helper():
    """A rename that completes a write belongs to atomic_write (one temporary-name convention)."""
    offenders = []
    for folder in ("minigpt4", "dataset", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.is_symlink():  # convert_laion.py, convert_cc_sbu.py: convert_captions.py
                continue
            relative = path.relative_to(REPO).as_posix()
            text = path.read_text(encoding="utf-8")
            if relative not in OWN_RENAMES and re.search(r"os\.replace\(|\.rename\(|mkstemp", text):
                offenders.append(relative)
    assert offenders == []

"""Bad input to train.py fails early with a message that says what and where (no hang)."""

import logging
from pathlib import Path

import pytest

import train
from tests.train_helpers import (
    write_align_folder,
    write_shards,
    write_stage1_config,
    write_stage2_config,
)

REPO = Path(__file__).resolve().parents[1]


def messages(caplog):
    return "\n".join(r.getMessage() for r in caplog.records)


def test_shipped_stage1_config_without_data_names_dataset_and_path(monkeypatch, caplog):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MINIGPT4_LAION_STORAGE", raising=False)
    with caplog.at_level(logging.INFO), pytest.raises(FileNotFoundError) as err:
        train.main(["--cfg-path", "train_configs/minigpt4_stage1_pretrain.yaml",
                    "--options", "run.device=cpu"])  # fmt: skip
    assert "'laion'" in str(err.value)
    assert "/path/to/laion_dataset/{00000..10488}.tar" in str(err.value)
    assert "Loading VIT" not in messages(caplog)  # before anything heavy


def test_storage_from_environment_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MINIGPT4_LAION_STORAGE", str(tmp_path / "mine" / "{00000..00002}.tar"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mine")):
        train.main(["--cfg-path", "train_configs/minigpt4_stage1_pretrain.yaml"])


def test_empty_shard_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    good = write_shards(tmp_path / "good", n_shards=1, per_shard=2)
    empty = str(tmp_path / "empty" / "{00000..00009}.tar")
    cfg = write_stage1_config(tmp_path / "s1.yaml", good, empty, Path("out"))
    with pytest.raises(FileNotFoundError, match=r"'cc_sbu': no shard found"):
        train.main(["--cfg-path", str(cfg)])
    assert not (tmp_path / "out").exists()


def test_missing_align_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_stage2_config(tmp_path / "s2.yaml", tmp_path / "no_such_dir", Path("out"))
    with pytest.raises(FileNotFoundError, match=r"'cc_sbu_align': storage path .*no_such_dir"):
        train.main(["--cfg-path", str(cfg)])


def test_missing_stage1_checkpoint(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    align = write_align_folder(tmp_path / "align", n=2)
    missing = tmp_path / "output" / "minigpt4_stage1_pretrain" / "x" / "checkpoint_3.pth"
    cfg = write_stage2_config(tmp_path / "s2.yaml", align, Path("out"), ckpt=str(missing))
    with caplog.at_level(logging.INFO), pytest.raises(FileNotFoundError) as err:
        train.main(["--cfg-path", str(cfg)])
    assert "model.ckpt" in str(err.value) and str(missing) in str(err.value)
    assert "Start training" not in messages(caplog)


def test_help_and_required_cfg_path(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    assert "--cfg-path" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        train.main([])
    assert exit_info.value.code == 2

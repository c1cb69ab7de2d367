"""Config merging, --options, environment interpolation and typo errors (FACTS.md section e)."""

import json
import logging
import types

import pytest
from omegaconf import OmegaConf

from minigpt4.common.config import Config, ConfigError, parse_options
from minigpt4.common.registry import Registry


@pytest.fixture(scope="module")
def defaults_dir(tmp_path_factory):
    """A test model and builder with default YAMLs, registered under test-only names."""
    root = tmp_path_factory.mktemp("defaults")
    (root / "model.yaml").write_text(
        "model:\n  arch: cfgtest_arch\n  image_size: 224\n  num_query_token: 32\n"
        "  llama_model: /path/to/vicuna\n"
        "preprocess:\n  vis_processor:\n    train:\n      name: blip2_image_train\n"
    )
    (root / "data_default.yaml").write_text(
        "datasets:\n  cfgtest_data:\n    data_type: images\n    build_info:\n"
        "      storage: /path/to/data/{00000..00009}.tar\n"
    )
    (root / "data_align.yaml").write_text(
        "datasets:\n  cfgtest_data:\n    data_type: images\n    build_info:\n"
        "      storage: /path/to/align/\n"
    )

    class _Model:
        PRETRAINED_MODEL_CONFIG_DICT = {"cfgtest_type": str(root / "model.yaml")}

        @classmethod
        def default_config_path(cls, model_type):
            return cls.PRETRAINED_MODEL_CONFIG_DICT[model_type]

    class _Builder:
        DATASET_CONFIG_DICT = {
            "default": str(root / "data_default.yaml"),
            "align": str(root / "data_align.yaml"),
        }

        @classmethod
        def default_config_path(cls, type="default"):  # the original's argument name
            return cls.DATASET_CONFIG_DICT[type]

    if "cfgtest_arch" not in Registry.mapping["model_name_mapping"]:
        Registry.register_model("cfgtest_arch")(_Model)
        Registry.register_builder("cfgtest_data")(_Builder)
    return root


def write_cfg(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


USER_CFG = """
model:
  arch: cfgtest_arch
  model_type: cfgtest_type
  max_txt_len: 160
datasets:
  cfgtest_data:
    vis_processor:
      train:
        name: blip2_image_train
    sample_ratio: 14
run:
  task: image_text_pretrain
  init_lr: 1e-4
  output_dir: out
"""


def make(path, options=None):
    return Config(types.SimpleNamespace(cfg_path=path, options=options))


def test_merge_defaults_under_user_file(defaults_dir, tmp_path):
    cfg = make(write_cfg(tmp_path, USER_CFG))
    assert cfg.model_cfg.image_size == 224  # from the model's default YAML
    assert cfg.model_cfg.max_txt_len == 160  # from the user's file
    assert cfg.config.preprocess.vis_processor.train.name == "blip2_image_train"
    data = cfg.datasets_cfg.cfgtest_data
    assert data.build_info.storage == "/path/to/data/{00000..00009}.tar"
    assert data.sample_ratio == 14
    assert cfg.run_cfg.init_lr == pytest.approx(1e-4)  # OmegaConf reads 1e-4 as a float
    assert isinstance(cfg.run_cfg.init_lr, float)
    assert set(cfg.config) == {"run", "model", "preprocess", "datasets"}


def test_dataset_type_selects_builder_default(defaults_dir, tmp_path):
    text = USER_CFG.replace("    sample_ratio: 14", "    type: align")
    cfg = make(write_cfg(tmp_path, text))
    assert cfg.datasets_cfg.cfgtest_data.build_info.storage == "/path/to/align/"


@pytest.mark.parametrize(
    "options",
    [
        ["run.init_lr=3e-5", "model.llama_model=/w/vicuna", "datasets.cfgtest_data.sample_ratio=2"],
        ["run.init_lr", "3e-5", "model.llama_model", "/w/vicuna"]
        + ["datasets.cfgtest_data.sample_ratio", "2"],
    ],
)
def test_options_override_everything(defaults_dir, tmp_path, options):
    cfg = make(write_cfg(tmp_path, USER_CFG), options)
    assert cfg.run_cfg.init_lr == pytest.approx(3e-5)
    assert cfg.model_cfg.llama_model == "/w/vicuna"
    assert cfg.datasets_cfg.cfgtest_data.sample_ratio == 2


def test_options_can_add_new_keys(defaults_dir, tmp_path):
    cfg = make(write_cfg(tmp_path, USER_CFG), ["model.ckpt=/w/stage1.pth"])
    assert cfg.model_cfg.ckpt == "/w/stage1.pth"


def test_every_image_processor_key_is_accepted_in_a_dataset_block(defaults_dir, tmp_path):
    """``random_crop`` (blip2_image_train: crop or plain resize) is a processor key like the
    others, not an unknown one."""
    options = ["datasets.cfgtest_data.vis_processor.train.name=blip2_image_train",
               "datasets.cfgtest_data.vis_processor.train.random_crop=True"]  # fmt: skip
    cfg = make(write_cfg(tmp_path, USER_CFG), options)
    assert cfg.datasets_cfg.cfgtest_data.vis_processor.train.random_crop is True


def test_bad_options_are_reported():
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["run.init_lr", "1e-4", "run.seed"])
    assert OmegaConf.to_container(parse_options(None)) == {}


def test_environment_variables_in_yaml(defaults_dir, tmp_path, monkeypatch):
    text = USER_CFG + "  resume_ckpt_path: ${oc.env:CFGTEST_CKPT,null}\n"
    text = text.replace(
        "    sample_ratio: 14",
        "    sample_ratio: 14\n    build_info:\n"
        "      storage: ${oc.env:CFGTEST_DATA}/{00000..00003}.tar",
    )
    monkeypatch.setenv("CFGTEST_DATA", "/data/laion")
    cfg = make(write_cfg(tmp_path, text))
    assert cfg.datasets_cfg.cfgtest_data.build_info.storage == "/data/laion/{00000..00003}.tar"
    assert cfg.run_cfg.resume_ckpt_path is None
    # resolved once: the value no longer depends on the environment
    monkeypatch.setenv("CFGTEST_DATA", "/elsewhere")
    assert cfg.to_dict()["datasets"]["cfgtest_data"]["build_info"]["storage"].startswith("/data")


def test_missing_environment_variable_names_key_and_variable(defaults_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("CFGTEST_UNSET", raising=False)
    text = USER_CFG.replace("output_dir: out", "output_dir: ${oc.env:CFGTEST_UNSET}/out")
    with pytest.raises(ConfigError) as info:
        make(write_cfg(tmp_path, text))
    message = str(info.value)
    assert "run.output_dir" in message and "CFGTEST_UNSET" in message


def test_misspelt_run_key_is_an_error(defaults_dir, tmp_path):
    text = USER_CFG.replace("init_lr: 1e-4", "inti_lr: 1e-4")
    with pytest.raises(ConfigError) as info:
        make(write_cfg(tmp_path, text))
    message = str(info.value)
    assert "run.inti_lr" in message and "Did you mean 'init_lr'?" in message


def test_misspelt_run_key_in_options_is_an_error(defaults_dir, tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'max_epoch'"):
        make(write_cfg(tmp_path, USER_CFG), ["run.max_epochs=3"])


def test_unknown_section_is_an_error(defaults_dir, tmp_path):
    with pytest.raises(ConfigError) as info:
        make(write_cfg(tmp_path, USER_CFG.replace("run:", "runs:")))
    assert "'runs'" in str(info.value) and "Did you mean 'run'?" in str(info.value)


def test_missing_file_and_model_type(defaults_dir, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        make(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="model_type"):
        make(write_cfg(tmp_path, USER_CFG.replace("  model_type: cfgtest_type\n", "")))


def test_pretty_print_blocks(defaults_dir, tmp_path, caplog):
    cfg = make(write_cfg(tmp_path, USER_CFG))
    with caplog.at_level(logging.INFO, logger="minigpt4.common.config"):
        cfg.pretty_print()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "\n=====  Running Parameters    ====="
    assert json.loads(messages[1]) == cfg.to_dict()["run"]
    assert messages[1] == json.dumps(cfg.to_dict()["run"], indent=4, sort_keys=True)
    assert messages[2] == "\n======  Dataset Attributes  ======"
    assert messages[3] == "\n======== cfgtest_data ======="
    assert messages[5] == "\n======  Model Attributes  ======"
    assert json.loads(messages[6])["max_txt_len"] == 160


def test_cfg_path_relative_to_repo_root_from_elsewhere(tmp_path, monkeypatch):
    import minigpt4  # noqa: F401  (registers mini_gpt4 and the builders)

    monkeypatch.chdir(tmp_path)
    cfg = make("train_configs/minigpt4_stage1_pretrain.yaml")
    assert cfg.run_cfg.max_epoch == 4


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["datasets.cfgtest_data.build_inf=null"], "unknown key 'datasets.cfgtest_data.build_inf'"),
        (["run.init_lr=${oc.env:CFGTEST_UNSET_LR}"], "cannot resolve 'run.init_lr'"),
        (["run.max_epochs=null"], "unknown key 'run.max_epochs'"),
        (["model.freez_vit=True"], "unknown key 'model.freez_vit'. Did you mean 'freeze_vit'?"),
    ],
)
def test_errors_from_options_name_options_not_the_file(defaults_dir, tmp_path, options, says):
    """A value given with --options (null and interpolations too) is blamed on --options."""
    path = write_cfg(tmp_path, USER_CFG)
    with pytest.raises(ConfigError) as info:
        make(path, options)
    message = str(info.value)
    assert message.startswith("--options: ") and says in message
    assert path not in message


def test_unknown_model_key_in_the_file_names_the_file(defaults_dir, tmp_path):
    """A model key that no model reads would silently keep its default: an error instead."""
    path = write_cfg(tmp_path, USER_CFG.replace("  max_txt_len: 160", "  max_text_len: 160"))
    with pytest.raises(ConfigError) as info:
        make(path)
    assert str(info.value).startswith(f"{path}: unknown key 'model.max_text_len'")
    assert "Did you mean 'max_txt_len'?" in str(info.value)

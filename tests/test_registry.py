"""Registry: registration by explicit import, lookups, and errors that list the known names."""

import pytest

from minigpt4.common.registry import Registry, RegistryError, registry


def test_original_names_are_registered():
    import minigpt4  # noqa: F401  (registers everything)

    assert "mini_gpt4" in registry.list_models()
    for name in ("laion", "cc_sbu", "cc_sbu_align"):
        assert name in registry.list_builders()
    for name in ("blip2_image_train", "blip2_image_eval", "blip_caption"):
        assert name in registry.list_processors()
    assert "image_text_pretrain" in registry.list_tasks()
    assert "runner_base" in registry.list_runners()
    for name in ("linear_warmup_cosine_lr", "linear_warmup_step_lr"):
        assert name in registry.list_lr_schedulers()


def test_unknown_name_lists_registered_names():
    @Registry.register_task("test_registry_task_a")
    class _TaskA:
        pass

    with pytest.raises(RegistryError) as info:
        registry.get_task_class("test_registry_task_b")
    message = str(info.value)
    assert "Unknown task name 'test_registry_task_b'" in message
    assert "test_registry_task_a" in message
    assert "Did you mean 'test_registry_task_a'?" in message


def test_duplicate_name_is_an_error():
    @Registry.register_processor("test_registry_proc")
    class _P1:
        pass

    # Registering the same class again (module re-import) is harmless...
    Registry.register_processor("test_registry_proc")(_P1)

    # ...but a different class under a taken name is refused.
    class _P2:
        pass

    with pytest.raises(RegistryError, match="already registered"):
        Registry.register_processor("test_registry_proc")(_P2)


def test_paths():
    import minigpt4

    assert registry.get_path("library_root") == minigpt4.library_root
    assert registry.get_path("repo_root") == minigpt4.repo_root
    with pytest.raises(RegistryError, match="Registered paths"):
        registry.get_path("no_such_path")


def test_import_is_light_and_the_first_lookup_registers_everything():
    """``import minigpt4`` imports no torch; the first lookup imports every registering module,
    whatever was imported before (here: nothing but the registry)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import json, sys\n"
        "import minigpt4\n"
        "from minigpt4.common.registry import registry\n"
        "light = 'torch' not in sys.modules\n"
        "model = registry.get_model_class('minigpt4').__name__\n"
        "print(json.dumps([light, model, registry.list_builders(), registry.list_tasks()]))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    light, model, builders, tasks = json.loads(done.stdout.strip().splitlines()[-1])
    assert light
    assert model == "MiniGPT4Llama2"
    assert {"laion", "cc_sbu", "cc_sbu_align"} <= set(builders)
    assert "image_text_pretrain" in tasks

"""Name -> class registry for everything a YAML config can refer to.

Configs name their parts by string (``arch: mini_gpt4``, ``name: blip2_image_train``,
``lr_sched: linear_warmup_cosine_lr`` ...). Each kind of part has its own table here; classes
enter it through the ``register_*`` decorators when their module is imported (see
``minigpt4/__init__.py``, which imports every module that registers something).

The decorators and accessors (``register_model``, ``get_model_class``, ``get_path`` ...) are
those of the original MiniGPT-4 / LAVIS registry, so code written against them keeps working;
the original's unused entries (``MAX_INT``, ``SPLIT_NAMES``, the ``configuration`` object and
the ``cache_root`` / ``output_dir`` / ``result_dir`` paths) are not kept.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate name; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would repr() the message and show the quotes
        return str(self.args[0])


class Registry:
    mapping: dict[str, dict[str, Any]] = {
        "builder_name_mapping": {},
        "model_name_mapping": {},
        "processor_name_mapping": {},
        "task_name_mapping": {},
        "runner_name_mapping": {},
        "lr_scheduler_name_mapping": {},
        "paths": {},
    }

    # --- registration -------------------------------------------------------------------------

    @classmethod
    def _register(cls, kind: str, name: str) -> Callable[[T], T]:
        table = cls.mapping[f"{kind}_name_mapping"]

        def wrap(obj: T) -> T:
            existing = table.get(name)
            if existing is not None and existing is not obj:
                raise RegistryError(
                    f"{kind} name '{name}' is already registered to {existing.__module__}."
                    f"{existing.__qualname__}; pick another name for "
                    f"{obj.__module__}.{obj.__qualname__}"
                )
            table[name] = obj
            return obj

        return wrap

    @classmethod
    def register_builder(cls, name: str) -> Callable[[T], T]:
        """Register a dataset builder under ``name`` (the key used under ``datasets:``)."""
        return cls._register("builder", name)

    @classmethod
    def register_model(cls, name: str) -> Callable[[T], T]:
        """Register a model class under ``name`` (``model.arch`` in a config)."""
        return cls._register("model", name)

    @classmethod
    def register_processor(cls, name: str) -> Callable[[T], T]:
        """Register a processor class under ``name`` (``vis_processor.train.name`` ...)."""
        return cls._register("processor", name)

    @classmethod
    def register_task(cls, name: str) -> Callable[[T], T]:
        """Register a task class under ``name`` (``run.task``)."""
        return cls._register("task", name)

    @classmethod
    def register_runner(cls, name: str) -> Callable[[T], T]:
        """Register a runner class under ``name`` (``run.runner``)."""
        return cls._register("runner", name)

    @classmethod
    def register_lr_scheduler(cls, name: str) -> Callable[[T], T]:
        """Register an lr scheduler class under ``name`` (``run.lr_sched``)."""
        return cls._register("lr_scheduler", name)

    @classmethod
    def register_path(cls, name: str, path: str) -> None:
        """Remember a filesystem path (``library_root``, ``output_dir`` ...)."""
        if not isinstance(path, str):
            raise TypeError(f"path '{name}' must be a str, got {type(path).__name__}")
        cls.mapping["paths"][name] = path

    # --- lookup -------------------------------------------------------------------------------

    @classmethod
    def _get(cls, kind: str, name: str) -> Any:
        table = cls.mapping[f"{kind}_name_mapping"]
        if name in table:
            return table[name]
        known = sorted(table)
        hint = difflib.get_close_matches(str(name), known, n=1)
        did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
        raise RegistryError(
            f"Unknown {kind} name '{name}'.{did_you_mean} "
            f"Registered {kind} names: {', '.join(known) if known else '(none)'}"
        )

    @classmethod
    def get_builder_class(cls, name: str) -> Any:
        return cls._get("builder", name)

    @classmethod
    def get_model_class(cls, name: str) -> Any:
        return cls._get("model", name)

    @classmethod
    def get_processor_class(cls, name: str) -> Any:
        return cls._get("processor", name)

    @classmethod
    def get_task_class(cls, name: str) -> Any:
        return cls._get("task", name)

    @classmethod
    def get_runner_class(cls, name: str) -> Any:
        return cls._get("runner", name)

    @classmethod
    def get_lr_scheduler_class(cls, name: str) -> Any:
        return cls._get("lr_scheduler", name)

    @classmethod
    def list_builders(cls) -> list[str]:
        return sorted(cls.mapping["builder_name_mapping"])

    @classmethod
    def list_models(cls) -> list[str]:
        return sorted(cls.mapping["model_name_mapping"])

    @classmethod
    def list_processors(cls) -> list[str]:
        return sorted(cls.mapping["processor_name_mapping"])

    @classmethod
    def list_tasks(cls) -> list[str]:
        return sorted(cls.mapping["task_name_mapping"])

    @classmethod
    def list_runners(cls) -> list[str]:
        return sorted(cls.mapping["runner_name_mapping"])

    @classmethod
    def list_lr_schedulers(cls) -> list[str]:
        return sorted(cls.mapping["lr_scheduler_name_mapping"])

    @classmethod
    def get_path(cls, name: str) -> str:
        try:
            return cls.mapping["paths"][name]
        except KeyError:
            known = ", ".join(sorted(cls.mapping["paths"])) or "(none)"
            raise RegistryError(f"Unknown path name '{name}'. Registered paths: {known}") from None


registry = Registry()

"""Name -> class registry for everything a YAML config can refer to.

Configs name their parts by string (``arch: mini_gpt4``, ``name: blip2_image_train``,
``lr_sched: linear_warmup_cosine_lr`` ...). Each kind of part has its own table here; classes
enter it through the ``register_*`` decorators when their module is imported. The first lookup
imports every module that registers something (:data:`REGISTERING_MODULES`), so ``import
minigpt4`` stays light (a command's ``--help`` answers without torch) and a name is found
whatever was imported before.

The decorators and accessors (``register_model``, ``get_model_class``, ``get_path`` ...) are
those of the original MiniGPT-4 / LAVIS registry, so code written against them keeps working;
the original's unused entries (``MAX_INT``, ``SPLIT_NAMES``, the ``configuration`` object and
the ``cache_root`` / ``output_dir`` / ``result_dir`` paths) are not kept.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Every module whose import registers models, builders, processors, tasks, runners and lr
# schedulers (each package imports its registering modules explicitly).
REGISTERING_MODULES = (
    "minigpt4.common.optims",
    "minigpt4.datasets.builders",
    "minigpt4.models",
    "minigpt4.processors",
    "minigpt4.runners",
    "minigpt4.tasks",
)


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
    _registered_all = False

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
    def _table(cls, kind: str) -> dict[str, Any]:
        """The ``kind`` table, after every registering module has been imported once."""
        if not cls._registered_all:
            cls._registered_all = True  # first: a module that looks a name up while imported
            try:
                for module in REGISTERING_MODULES:
                    importlib.import_module(module)
            except BaseException:
                cls._registered_all = False  # a failed import is retried, not half-remembered
                raise
        return cls.mapping[f"{kind}_name_mapping"]

    @classmethod
    def _get(cls, kind: str, name: str) -> Any:
        table = cls._table(kind)
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
        return sorted(cls._table("builder"))

    @classmethod
    def list_models(cls) -> list[str]:
        return sorted(cls._table("model"))

    @classmethod
    def list_processors(cls) -> list[str]:
        return sorted(cls._table("processor"))

    @classmethod
    def list_tasks(cls) -> list[str]:
        return sorted(cls._table("task"))

    @classmethod
    def list_runners(cls) -> list[str]:
        return sorted(cls._table("runner"))

    @classmethod
    def list_lr_schedulers(cls) -> list[str]:
        return sorted(cls._table("lr_scheduler"))

    @classmethod
    def get_path(cls, name: str) -> str:
        try:
            return cls.mapping["paths"][name]
        except KeyError:
            known = ", ".join(sorted(cls.mapping["paths"])) or "(none)"
            raise RegistryError(f"Unknown path name '{name}'. Registered paths: {known}") from None


registry = Registry()

"""The task registry: every module of this package registers its Task subclasses with @register."""
from __future__ import annotations

import importlib
import os
import pkgutil

from .base import Task
from .params import TaskError

TASKS: dict[str, type[Task]] = {}
PACKAGE = __name__.rsplit(".", 1)[0]


def register(cls: type[Task]) -> type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    TASKS[cls.name] = cls
    return cls


_loaded = False


def load_tasks() -> dict[str, type[Task]]:
    """Import every module of this package once (each task module registers its classes), plus the modules
    named in $WORKBENCH_TASK_MODULES (comma-separated): the curator's own tasks."""
    global _loaded
    if not _loaded:
        names = [f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(importlib.import_module(PACKAGE).__path__)]
        names += [m.strip() for m in os.environ.get("WORKBENCH_TASK_MODULES", "").split(",") if m.strip()]
        for name in names:
            importlib.import_module(name)
        _loaded = True
    return TASKS


def get_task(name: str) -> type[Task]:
    tasks = load_tasks()
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]

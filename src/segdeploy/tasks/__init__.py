"""Tasks (saliency, binary, semantic): decoding, metric sets, fidelity measures, output formats.

``get_task(spec.task)`` returns the task object; code elsewhere calls its methods instead of
comparing task names.
"""

from __future__ import annotations

from segdeploy.core.errors import UsageError
from segdeploy.tasks.base import Prediction, Task
from segdeploy.tasks.binary import BinaryTask
from segdeploy.tasks.saliency import SaliencyTask
from segdeploy.tasks.semantic import SemanticTask, voc_palette

_TASKS: dict[str, Task] = {task.name: task for task in (SaliencyTask(), BinaryTask(), SemanticTask())}


def get_task(spec_or_name) -> Task:
    """The Task object for a ModelSpec or a task name."""
    name = getattr(spec_or_name, "task", spec_or_name)
    try:
        return _TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; segdeploy knows {', '.join(_TASKS)}") from None


def task_names() -> list[str]:
    return list(_TASKS)


__all__ = ["Prediction", "Task", "get_task", "task_names", "voc_palette"]

"""SentiBench: YAML tasks, registry, prompting, parsers, metrics, model adapters and the runner."""

from sentidistill.bench.registry import get_task, list_suites, list_tasks, load_task_file, resolve_tasks
from sentidistill.bench.task import Task, TaskSpec

__all__ = ["Task", "TaskSpec", "get_task", "list_suites", "list_tasks", "load_task_file", "resolve_tasks", "run_bench"]


def __getattr__(name: str):
    # The runner pulls in torch; keep `import sentidistill.bench` light for the registry users.
    if name == "run_bench":
        from sentidistill.bench.runner import run_bench

        return run_bench
    raise AttributeError(name)

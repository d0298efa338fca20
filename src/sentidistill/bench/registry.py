"""The task registry: the YAML files in ``bench/tasks/`` plus any task file a user points to."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from sentidistill.bench.task import Task, TaskSpec
from sentidistill.errors import InputError
from sentidistill.utils.schema import field_homes, validation_error_lines

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def load_task_file(path: str | Path) -> Task:
    """Read and validate one task YAML file; errors name the file and the offending field."""
    path = Path(path)
    if not path.is_file():
        raise InputError("task file not found", path=path)
    try:
        from sentidistill.data.readers import read_text_file

        raw = yaml.safe_load(read_text_file(path))  # strict decoding: a bad byte names its line
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path,
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise InputError("expected a mapping of task fields", path=path, got=type(raw).__name__)
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        # Every problem on its own line, each naming its field; an unknown field says where it belongs.
        lines = validation_error_lines(exc, task_field_homes())
        loc = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "(top level)"
        raise InputError("invalid task:\n  - " + "\n  - ".join(lines), path=path, field=loc) from None
    return Task(spec, source=path)


def task_field_homes() -> dict[str, list[str]]:
    """Field name -> where a task file takes it: every TaskSpec section, plus each reader option under
    ``loader.options`` (``label_field`` at the top level belongs in ``loader.options.label_field``)."""
    from sentidistill.data.loading import FORMAT_READERS, reader_options

    extra: dict[str, list[str]] = {}
    for fmt in FORMAT_READERS:
        for name in reader_options(fmt):
            extra.setdefault(name, [])
    for name in extra:
        fmts = [f for f in FORMAT_READERS if name in reader_options(f)]
        extra[name] = [f"loader.options.{name} (formats {', '.join(fmts)})"]
    return field_homes(TaskSpec, extra)


@cache
def _builtin() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for f in sorted(TASKS_DIR.glob("*.yaml")):
        task = load_task_file(f)
        if task.name in tasks:
            raise InputError(f"duplicate task name '{task.name}'", path=f, field="name")
        tasks[task.name] = task
    return dict(sorted(tasks.items(), key=lambda kv: (kv[1].spec.order, kv[0])))


def get_task(name: str) -> Task:
    """A built-in task by name, or a user's task file (``path/to/task.yaml``)."""
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        return load_task_file(name)
    tasks = _builtin()
    if name not in tasks:
        close = [t for t in tasks if name.lower() in t.lower() or t.lower() in name.lower()]
        hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
        raise InputError(f"unknown task '{name}'{hint}", field="task",
                         expected="a name from `sentidistill bench --list` or a task YAML file")
    return tasks[name]


def list_tasks(suite: str | None = None) -> list[str]:
    """Task names in the paper's order (the ``order`` field of each file), optionally one suite's."""
    tasks = _builtin()
    if suite is None:
        return list(tasks)
    if suite not in list_suites():
        raise InputError(f"unknown suite '{suite}'", field="suite", expected=" | ".join(list_suites()))
    return [n for n, t in tasks.items() if suite in t.suites]


def list_suites() -> list[str]:
    return sorted({s for t in _builtin().values() for s in t.suites})


def resolve_tasks(suite: str | None = None, tasks: list[str] | None = None) -> list[Task]:
    """Explicit task names/files win; else the suite; else the ``sentibench`` suite."""
    if tasks:
        return [get_task(t) for t in tasks]
    return [get_task(t) for t in list_tasks(suite or "sentibench")]


def task_texts(name: str, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """The ``text`` of every row of task ``name``'s ``split`` (labels dropped): a review source for KnowDist."""
    return [r["text"] for r in get_task(name).load(split, data_dir=data_dir)]

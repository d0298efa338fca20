"""Task names for serving: friendly aliases over the SentiBench registry, and prompt/parse helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentidistill.errors import InputError

# Friendly names a user types -> SentiBench registry names.
TASK_ALIASES: dict[str, str] = {
    "sentiment": "sst2",  # binary polarity (positive/negative)
    "polarity": "twitter",  # three-way polarity (negative/neutral/positive), tweet style
    "emotion": "emotion",
    "irony": "irony18",
    "stance": "pstance",  # needs a `target` per text
    "intimacy": "intimacy",
    "aspects": "atsa_rest16",  # (aspect term, polarity) pairs
    "categories": "acsa_rest16",  # (aspect category, polarity) pairs
    "triplets": "aste_16res",  # (aspect, opinion, polarity)
    "quads": "asqp_rest16",  # (aspect, category, polarity, opinion)
    "opinions": "opener",  # structured sentiment
}


def builtin_task_names() -> list[str]:
    from sentidistill.bench import list_tasks

    return list_tasks()


def resolve_task(name: str) -> Any:
    """A built-in SentiBench task by registry name or alias. Never a file path: this name may come
    from an HTTP client, and the registry would otherwise read any YAML file on the server.
    Raises ``InputError`` (field ``task``) for an unknown name. Resolved tasks are kept (one registry look-up
    per name per process: the server resolves the task of every request)."""
    registry_name = TASK_ALIASES.get(name, name)
    task = _RESOLVED.get(registry_name)
    if task is None:
        from sentidistill.bench import get_task

        if registry_name not in builtin_task_names():
            raise InputError(f"unknown task '{name}'", field="task",
                             expected=f"an alias ({', '.join(TASK_ALIASES)}) or a SentiBench task name")
        task = _RESOLVED[registry_name] = get_task(registry_name)
    return task


_RESOLVED: dict[str, Any] = {}


def make_row(item: str | dict[str, Any], index: int) -> dict[str, Any]:
    """A task row from a plain string or an object with ``text`` and extra fields (e.g. ``target``).

    Raises ``InputError`` naming ``texts.<index>`` for an empty text, or one holding a lone UTF-16 surrogate
    (not text: UTF-8 cannot encode it, and the tokenizer would fail on it)."""
    from sentidistill.serve.schemas import lone_surrogate

    row = {"text": item} if isinstance(item, str) else dict(item)
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty text", field=f"texts.{index}", expected="a non-empty string")
    found = lone_surrogate(row)
    if found:
        path, at, char = found
        raise InputError(f"a lone UTF-16 surrogate (U+{ord(char):04X}) at character {at} is not text",
                         field=".".join([f"texts.{index}", *(str(p) for p in path)]) if isinstance(item, dict)
                         else f"texts.{index}",
                         expected="text that UTF-8 can encode (whole surrogate pairs)")
    return row


def build_prompts(task: Any, rows: Sequence[dict[str, Any]], demos: Sequence[dict[str, Any]] = (),
                  style: str = "plain") -> list[str | list[dict[str, str]]]:
    """The task's prompt for each row; a row missing a field the template needs is an InputError."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(task.prompt(row, list(demos), style=style))
        except InputError as exc:
            raise InputError(f"{exc}", field=f"texts.{i}") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"cannot build the '{task.name}' prompt: {exc}", field=f"texts.{i}") from None
    return out


def default_max_tokens(task: Any) -> int:
    """Enough tokens for the task's answer (the task file's ``max_new_tokens`` when it has one)."""
    n = getattr(getattr(task, "spec", None), "max_new_tokens", None)
    if isinstance(n, int) and n > 0:
        return n
    return 16 if task.kind == "classification" else 150


def jsonable_prediction(value: Any) -> Any:
    """Tuples become lists so the parsed answer is plain JSON."""
    if isinstance(value, (list, tuple)):
        return [jsonable_prediction(v) for v in value]
    return value

"""Running a typer app the way every sentidistill entry point does."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from sentidistill.errors import SentidistillError


def run_cli(app: typer.Typer) -> None:
    """Run ``app``; a user error prints one clear line and exits 2, never a traceback."""
    try:
        app()
    except SentidistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


# Loggers of libraries whose INFO/WARNING chatter (weight loading, progress, deprecations) is noise to a
# user of `predict` and `serve`; their errors still show.
_THIRD_PARTY_LOGGERS = ("transformers", "huggingface_hub", "datasets", "torch", "onnxruntime", "optimum",
                        "sentence_transformers", "accelerate", "urllib3", "httpx", "filelock")


def quiet_third_party(verbose: bool = False) -> None:
    """Silence third-party warnings, logs and progress bars for a user-facing command, unless ``verbose``.

    Called only by the ``predict`` and ``serve`` commands (never on import): it sets the libraries' own
    controls (``transformers.logging``, ``huggingface_hub`` verbosity and progress bars, their
    environment variables) and ignores Python ``warnings`` for the rest of the process. With ``verbose``,
    or when the root logger is at DEBUG (``sentidistill -v``), nothing is changed.
    """
    import logging
    import os
    import warnings

    if verbose or logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ORT_LOG_SEVERITY_LEVEL", "3")  # onnxruntime: errors only
    warnings.simplefilter("ignore")
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def _option_type(annotation: Any) -> Any:
    """The typer type of a pydantic field annotation (``Literal``s become ``str``, checked by pydantic later)."""
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _option_type(args[0]) | None
    if origin is typing.Literal:
        return str | None
    if origin is list:
        return list[args[0]] | None if args else list[str] | None
    return annotation | None


def config_options(*fields: tuple[type, str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one typer option per ``(PydanticModel, field)`` to a command: ``--field-name`` (the field's name with
    dashes; its description is the help), plus each spelling in the field's ``json_schema_extra["aliases"]`` as a
    hidden option. The command receives the values given as ``overrides: dict[field, value]`` (fields not given
    on the command line are absent). Booleans get ``--name/--no-name``; lists are repeatable options.

    Raises ``typer.BadParameter`` (at call time) when a field is given under two spellings."""
    import inspect

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        params = [p for n, p in sig.parameters.items() if n != "overrides"]
        spellings: dict[str, str] = {}  # parameter name -> field name
        for model, name in fields:
            info = model.model_fields[name]
            flag = "--" + name.replace("_", "-")
            kind = _option_type(info.annotation)
            decl = f"{flag}/--no-{name.replace('_', '-')}" if info.annotation is bool else flag
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            options = [(name, typer.Option(None, decl, help=info.description or name.replace("_", " ")))]
            options += [(f"{name}__alias{i}", typer.Option(None, alias, hidden=True))
                        for i, alias in enumerate(extra.get("aliases", []))]
            for pname, default in options:
                params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default,
                                                annotation=kind))
                spellings[pname] = name

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            overrides: dict[str, Any] = {}
            for pname, name in spellings.items():
                value = kwargs.pop(pname)
                if value is None or value == []:
                    continue
                if name in overrides:
                    raise typer.BadParameter(f"--{name.replace('_', '-')} given twice (under two spellings)")
                overrides[name] = list(value) if isinstance(value, list | tuple) else value
            return fn(**kwargs, overrides=overrides)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate

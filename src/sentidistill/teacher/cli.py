"""``sentidistill teach``: answer a JSONL file of prompts with any teacher backend, through the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sentidistill.errors import InputError


def read_prompt_rows(path: Path, params: Any, answer_format: Any) -> tuple[list[Any], list[Any]]:
    """Rows with ``messages`` (a chat list) or ``prompt`` (+ optional ``system``), optional ``id`` and
    ``answer_format``; returns (ids, requests). Problems name the file, line and field."""
    from pydantic import ValidationError

    from sentidistill.core.records import AnswerFormat, TeacherRequest
    from sentidistill.utils.io import read_jsonl

    ids: list[Any] = []
    requests: list[TeacherRequest] = []
    for lineno, row in enumerate(read_jsonl(path), start=1):
        if "messages" in row:
            messages = row["messages"]
            ok = isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
            if not ok:
                raise InputError(
                    "bad chat messages", path=path, line=lineno, field="messages",
                    expected='a non-empty list of {"role": ..., "content": "..."}',
                )
        elif isinstance(row.get("prompt"), str):
            messages = [{"role": "user", "content": row["prompt"]}]
            if isinstance(row.get("system"), str):
                messages.insert(0, {"role": "system", "content": row["system"]})
        else:
            raise InputError(
                "row has neither 'messages' nor 'prompt'", path=path, line=lineno, field="messages",
                expected="a 'messages' list or a 'prompt' string",
            )
        fmt = answer_format
        if row.get("answer_format") is not None:
            try:
                fmt = AnswerFormat.model_validate(row["answer_format"])
            except ValidationError as exc:
                raise InputError(
                    f"invalid answer_format ({exc.errors()[0]['msg']})", path=path, line=lineno,
                    field="answer_format", expected='{"kind": "free|label|json|tuples", "labels": [...]}',
                ) from None
        requests.append(
            TeacherRequest(
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                params=params,
                prompt_id=str(row.get("prompt_id", "adhoc")),
                prompt_version=str(row.get("prompt_version", "0")),
                answer_format=fmt,
                metadata={k: v for k, v in row.items() if k in ("id", "text", "review")},
            )
        )
        ids.append(row.get("id", lineno))
    return ids, requests


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["n_ctx=2048", "mode=server"]`` -> ``{"n_ctx": 2048, "mode": "server"}`` (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError("a teacher option is KEY=VALUE", field="--option", expected="e.g. n_ctx=2048", got=pair)
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def register(app: typer.Typer) -> None:
    @app.command("teach")
    def teach(
        input: Path = typer.Option(..., "--input", "-i", help="JSONL: one {'messages': [...]} or {'prompt': '...'} a line (optional 'id', 'answer_format')."),
        output: Path = typer.Option(..., "--output", "-o", help="JSONL answers, one per input line, same order."),
        cache: Path = typer.Option(Path("teacher_cache.sqlite"), "--cache", help="SQLite response cache (resumes a killed run)."),
        teacher_kind: str = typer.Option("openai", "--teacher-kind", help="openai | llamacpp | transformers | replay | vllm."),
        model: str = typer.Option("builtin:qwen2.5-coder-0.5b", "--model", help="Model name / path / builtin GGUF teacher."),
        option: list[str] = typer.Option([], "--option", "-O", help="A backend option KEY=VALUE (YAML value), repeatable, e.g. -O base_url=http://localhost:8000/v1 -O n_ctx=2048; see docs/architecture.md for each backend's options."),
        base_url: str | None = typer.Option(None, "--base-url", help="Shortcut for -O base_url=URL (openai)."),
        api_key_env: str | None = typer.Option(None, "--api-key-env", help="Shortcut for -O api_key_env=NAME (openai): the variable holding the key."),
        replay_path: Path | None = typer.Option(None, "--replay-path", help="Shortcut for -O replay_path=FILE (replay)."),
        concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight."),
        max_tokens: int = typer.Option(256, "--max-tokens", min=1),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0),
        seed: int | None = typer.Option(None, "--seed"),
        logprobs: int = typer.Option(0, "--logprobs", min=0, max=20, help="Keep the top-K log-probs of every token (0 = off)."),
        labels: str | None = typer.Option(None, "--labels", help="Comma-separated labels: validate each answer as one of them."),
        answer_format: str = typer.Option("free", "--answer-format", help="free | label | json | tuples (rows may override)."),
        max_retries: int = typer.Option(6, "--max-retries", min=0),
        repair_attempts: int = typer.Option(2, "--repair-attempts", min=0),
        timeout: float = typer.Option(120.0, "--timeout", help="Per-request timeout, seconds."),
        max_requests: int | None = typer.Option(None, "--max-requests", help="Budget: most requests sent in this run."),
        max_total_tokens: int | None = typer.Option(None, "--max-total-tokens", help="Budget: most tokens in this run."),
        price_prompt: float | None = typer.Option(None, "--price-prompt", help="Price per 1k prompt tokens (cost column)."),
        price_completion: float | None = typer.Option(None, "--price-completion", help="Price per 1k completion tokens."),
        export: Path | None = typer.Option(None, "--export", help="Also export the whole cache to .jsonl or .parquet."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on a terminal."),
    ) -> None:
        """Ask a teacher LLM every prompt of a JSONL file; answers are cached as they arrive.

        Example:

            sentidistill teach --teacher-kind openai --base-url http://localhost:8000/v1 --model qwen \\
                --input prompts.jsonl --output answers.jsonl --cache teacher.sqlite --concurrency 16 --logprobs 5

        A killed run restarted with the same --cache sends only the prompts not answered yet.
        """
        from sentidistill.core.records import AnswerFormat, SamplingParams
        from sentidistill.errors import BudgetExceeded, ConfigError
        from sentidistill.teacher import build_teacher
        from sentidistill.teacher.config import TeacherConfig
        from sentidistill.utils.io import write_jsonl

        options = parse_options(option)
        for key, value in (("base_url", base_url), ("api_key_env", api_key_env), ("replay_path", replay_path)):
            if value is not None:
                options[key] = value
        try:
            cfg = TeacherConfig(
                **options, kind=teacher_kind, model=model, concurrency=concurrency, max_retries=max_retries, repair_attempts=repair_attempts, timeout_s=timeout,
                max_requests=max_requests, max_total_tokens=max_total_tokens,
                price_per_1k_prompt_tokens=price_prompt, price_per_1k_completion_tokens=price_completion,
            )
        except ValueError as exc:
            raise ConfigError(f"invalid teacher options: {exc}") from None
        params = SamplingParams(
            max_tokens=max_tokens, temperature=temperature, seed=seed, logprobs=logprobs > 0, top_logprobs=logprobs
        )
        label_list = tuple(x.strip() for x in labels.split(",") if x.strip()) if labels else ()
        if answer_format not in ("free", "label", "json", "tuples"):
            raise InputError("unknown --answer-format", expected="free, label, json or tuples", got=answer_format)
        fmt = AnswerFormat(kind="label" if label_list else answer_format, labels=label_list)
        ids, requests = read_prompt_rows(input, params, fmt)
        with build_teacher(cfg, cache, progress=None if progress else False) as teacher:
            try:
                responses = teacher.generate(requests)
                budget_msg = None
            except BudgetExceeded as exc:
                responses, budget_msg = exc.responses, str(exc)  # type: ignore[attr-defined]
            rows = [answer_row(rid, resp) for rid, resp in zip(ids, responses, strict=True)]
            write_jsonl(output, rows)
            if export is not None and teacher.cache is not None:
                teacher.cache.export(export)
            typer.echo(teacher.summary())
            typer.echo(f"wrote {len(rows)} answers to {output}")
        if budget_msg:
            raise BudgetExceeded(budget_msg)


def answer_row(rid: Any, resp: Any) -> dict[str, Any]:
    """One line of ``sentidistill teach``'s output: the id, the answer, its status and parse, usage, and the
    error, reasoning and per-token log-probs where there are any."""
    row: dict[str, Any] = {"id": rid, "text": resp.text, "status": resp.status, "parsed": resp.parsed}
    row.update(usage=resp.usage.model_dump(), cached=resp.cached, attempts=resp.attempts)
    if resp.error:
        row["error"] = resp.error
    if resp.reasoning is not None:
        row["reasoning"] = resp.reasoning
    if resp.logprobs is not None:
        row["logprobs"] = [t.model_dump(mode="json") for t in resp.logprobs]
    return row


def main() -> None:
    """``python -m sentidistill.teacher.cli teach ...``: the same command without loading the other stages."""
    from sentidistill.utils.cli import run_cli

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(app)

    @app.callback()
    def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
        import logging

        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the summary

    run_cli(app)


if __name__ == "__main__":
    main()

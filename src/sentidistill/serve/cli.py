"""CLI commands of the serve stage: ``serve``, ``predict`` and ``export-onnx`` (registered on the main app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from sentidistill.errors import InputError

SERVE_HELP = """Serve a student over HTTP: OpenAI-compatible /v1/chat/completions and /v1/completions,
/v1/analyze {task, texts}, /v1/models, /health and /metrics (Prometheus).

Concurrent requests are batched dynamically: whatever arrives within --batch-wait-ms (or until
--max-batch-size) runs as one padded batch.

Examples:

  sentidistill serve builtin:smollm2-135m-instruct --port 8000

  sentidistill serve runs/demo/student --max-batch-size 64 --batch-wait-ms 10

  sentidistill serve runs/demo/student-onnx --backend onnx

  curl localhost:8000/v1/analyze -d '{"task": "sentiment", "texts": ["I loved it"]}'

Access logs are off by default (--access-log turns them on). See docs/serving.md.
"""


def serve_command(
    model: str | None = typer.Argument(None, help="HF id or path, builtin:minilm-encdec, or an ONNX export dir "
                                       "(default: the newest distilled student under runs/)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it on the network)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    served_model_name: str | None = typer.Option(None, "--served-model-name",
                                                 help="Name clients pass as `model` (default: MODEL)."),
    max_batch_size: int = typer.Option(16, min=1, help="Most requests per generate() batch."),
    batch_wait_ms: float = typer.Option(0.0, min=0.0, help="How long a batch that is not full may wait for more texts (0: none; batches still form from what queues while the previous one runs)."),
    max_texts: int = typer.Option(64, min=1, help="Most texts (prompts) per request."),
    max_chars: int = typer.Option(8000, min=1, help="Most characters per text, prompt or message."),
    max_body_bytes: int = typer.Option(1 << 20, min=1, help="Largest request body."),
    max_tokens: int = typer.Option(512, min=1, help="Ceiling on a request's max_tokens."),
    request_timeout_s: float = typer.Option(60.0, min=0.1, help="Per-request timeout (504 after it)."),
    prompt_style: str = typer.Option("plain", help="Task prompt style for /v1/analyze: plain | chat."),
    backend: str = typer.Option("torch", help="torch | onnx (MODEL is then an export-onnx folder)."),
    int8: bool = typer.Option(False, "--int8", help="Serve the int8 graphs of an ONNX export (made with --int8)."),
    device: str | None = typer.Option(None, help="torch device, e.g. cuda:0 (default: CPU)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log",
                                    help="Log one line per request (off by default: at thousands of requests per "
                                         "second the log line costs more than the request)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show third-party warnings and logs "
                                 "(weight loading, deprecations), hidden by default."),
) -> None:
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party(verbose)
    import uvicorn

    from sentidistill.serve.app import create_app

    model = _default_model(model)
    if prompt_style not in ("plain", "chat"):
        raise InputError("unknown prompt style", field="--prompt-style", expected="plain | chat", got=prompt_style)
    app = create_app(
        model, served_model_name=served_model_name, device=device, max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms, prompt_style=prompt_style, backend=backend, int8=int8, max_texts=max_texts,
        max_chars=max_chars, max_body_bytes=max_body_bytes, max_tokens=max_tokens,
        request_timeout_s=request_timeout_s,
    )
    uvicorn.run(app, **uvicorn_options(host=host, port=port, log_level=log_level, access_log=access_log))


def uvicorn_options(*, host: str, port: int, log_level: str = "info", access_log: bool = False) -> dict[str, Any]:
    """The keyword arguments ``sentidistill serve`` passes to ``uvicorn.run``: no per-request access log unless
    asked, and uvicorn's fastest installed event loop and HTTP parser (uvloop and httptools, when the
    ``serve-fast`` extra installed them; asyncio and h11 otherwise)."""
    return {"host": host, "port": port, "log_level": log_level, "access_log": access_log, "loop": "auto",
            "http": "auto"}


serve_command.__doc__ = SERVE_HELP


def _default_model(model: str | None) -> str:
    """``model``, or the newest distilled student under runs/ (said on stderr); an InputError naming what to
    run when there is none: never an untrained model by default."""
    if model is not None:
        return model
    from sentidistill.serve.predict import newest_student

    path = newest_student()
    print(f"using the newest distilled student: {path}", file=sys.stderr)
    return str(path)


def _read_inputs(texts: list[str], file: Path | None) -> list[str | dict]:
    """Texts from arguments, '-' (stdin, one per line) or --file (.txt one per line, .jsonl objects)."""
    from sentidistill.utils.io import read_jsonl

    items: list[str | dict] = []
    for t in texts:
        if t == "-":
            items.extend(line.rstrip("\n") for line in sys.stdin if line.strip())
        else:
            items.append(t)
    if file is not None:
        if not file.exists():
            raise InputError("file not found", path=file)
        if file.suffix.lower() in (".jsonl", ".ndjson"):
            for i, obj in enumerate(read_jsonl(file), start=1):
                if not isinstance(obj.get("text"), str):
                    raise InputError("missing 'text'", path=file, line=i, field="text", expected="a string")
                items.append(obj)
        else:
            from sentidistill.data.readers import read_text_file

            # One text per line, split on "\n" only: a text holding U+2028 or U+0085 stays one text.
            items.extend(line.removesuffix("\r") for line in read_text_file(file).split("\n") if line.strip())
    if not items:
        raise InputError("no texts given", field="TEXTS", expected="texts as arguments, '-' for stdin, or --file")
    return items


def predict_command(
    texts: list[str] = typer.Argument(None, help="Texts to analyse; '-' reads one text per line from stdin."),
    file: Path | None = typer.Option(None, "--file", "-f", help=".txt (one per line) or .jsonl ({text, ...})."),
    task: str | None = typer.Option(None, help="Alias (sentiment, emotion, irony, stance, aspects, triplets, "
                                   "...), a SentiBench task name, or a classifier's own head (default: a "
                                   "classifier's only head, else sentiment)."),
    model: str | None = typer.Option(None, help="Student: HF id/path, builtin, or ONNX dir (default: the newest "
                                     "distilled student under runs/)."),
    batch_size: int = typer.Option(32, min=1, help="Texts per batch."),
    backend: str = typer.Option("torch", help="torch | onnx."),
    int8: bool = typer.Option(False, "--int8", help="Use the int8 graphs of an ONNX export (made with --int8)."),
    target: str | None = typer.Option(None, help="Stance target for every text (stance tasks)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show third-party warnings and logs "
                                 "(weight loading, deprecations), hidden by default."),
) -> None:
    """Analyse texts with a student and print one JSON object per line.

    Examples:

      sentidistill predict "I loved it" "Never again" --task sentiment

      cat tweets.txt | sentidistill predict - --task emotion --model runs/demo/student

      sentidistill predict --file reviews.jsonl --task aspects --backend onnx --model runs/demo/onnx
    """
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party(verbose)
    from sentidistill.serve.predict import predict

    items = _read_inputs(texts or [], file)
    model = _default_model(model)
    if target is not None:
        items = [{"text": t, "target": target} if isinstance(t, str) else {"target": target, **t} for t in items]
    for row in predict(items, task=task, model=model, batch_size=batch_size, backend=backend, int8=int8):
        print(json.dumps(row, ensure_ascii=False), flush=True)


def export_onnx_command(
    model: str = typer.Argument(..., help="Student to export: HF id/path or builtin:<name>."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    int8: bool = typer.Option(False, "--int8", help="Also write dynamically int8-quantized graphs."),
    check: int = typer.Option(8, help="Check agreement with PyTorch on this many built-in sentences (0: skip)."),
) -> None:
    """Export a student to ONNX (encoder + decoder for seq2seq, one graph for causal LMs, encoder + all
    heads for a classifier student).

    Examples:

      sentidistill export-onnx builtin:minilm-encdec --out runs/demo/onnx --int8

      sentidistill serve runs/demo/onnx --backend onnx

      sentidistill export-onnx runs/demo/models/classifier/final --out runs/demo/clf-onnx --int8
    """
    from sentidistill.students.classifier import is_classifier_checkpoint

    if is_classifier_checkpoint(model):
        _export_classifier(model, out, int8, check)
        return
    from sentidistill.serve.onnx import agreement, export_onnx

    path = export_onnx(model, out, int8=int8)
    print(f"exported to {path}")
    if check:
        from sentidistill.students import load_student

        sample = ["The food was great and the service was friendly.", "Terrible movie, boring plot.",
                  "It was fine, nothing special.", "I love this phone but the screen is awful."][:check]
        loaded = load_student(model)
        for variant in (["fp32", "int8"] if int8 else ["fp32"]):
            res = agreement(loaded, path, sample, int8=variant == "int8", max_tokens=16)
            print(f"{variant}: ONNX and PyTorch agree on {res['agree']}/{res['n']} generations")


def _export_classifier(model: str, out: Path, int8: bool, check: int) -> None:
    """export-onnx for a classifier student, checked against PyTorch on ``check`` built-in sentences."""
    from sentidistill.serve.classifier_onnx import classifier_agreement, export_classifier_onnx

    path = export_classifier_onnx(model, out, int8=int8)
    print(f"exported to {path}")
    if check:
        sample = ["The food was great and the service was friendly.", "Terrible movie, boring plot.",
                  "It was fine, nothing special.", "I love this phone but the screen is awful.",
                  "What a waste of two hours.", "Best concert I have been to in years!",
                  "The hotel room was dirty and the staff did not care.", "Simple, honest cooking; we will be back."]
        for variant in (["fp32", "int8"] if int8 else ["fp32"]):
            res = classifier_agreement(model, path, sample[:check], int8=variant == "int8")
            print(f"{variant}: ONNX and PyTorch pick the same label on {res['agree']}/{res['n']} (text, head) pairs; "
                  f"largest probability difference {res['max_abs_prob_diff']:.4f}")


def register(app: typer.Typer) -> None:
    app.command("serve", help=SERVE_HELP)(serve_command)
    app.command("predict")(predict_command)
    app.command("export-onnx")(export_onnx_command)

"""The `sentidistill` command line: one sub-command per stage, plus `run` and `quickstart`.

Each stage module registers its own command here (imports are lazy inside the commands so that
`sentidistill --help` stays fast).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from sentidistill import __version__
from sentidistill.utils.cli import run_cli

app = typer.Typer(
    name="sentidistill",
    help="Distil sentiment analysis from a large language model (teacher) into a small, fast student, "
    "and prove it on SentiBench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Third-party chatter drowns the progress bars.
    for noisy in ("httpx", "urllib3", "datasets", "transformers.modeling_utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command("config")
def config_command(
    example: bool = typer.Option(False, "--example", help="Print a commented example config."),
    validate: Path | None = typer.Option(None, "--validate", help="Validate a config file and print its hash."),
    schema: bool = typer.Option(False, "--schema", help="Print the JSON schema of the config."),
    reference: bool = typer.Option(False, "--reference", help="Print the Markdown config reference, generated "
                                   "from the JSON schema: sentidistill config --reference > docs/config.md"),
) -> None:
    """Print an example pipeline config, its JSON schema or its Markdown reference, or validate a file.

    Example: sentidistill config --example > my_run.yaml && sentidistill config --validate my_run.yaml
    """
    import json

    from sentidistill.config import PipelineConfig, load_config

    if example:
        print(example_config_text())
    elif schema:
        print(json.dumps(PipelineConfig.model_json_schema(), indent=2))
    elif reference:
        import sys

        from sentidistill.config_docs import render_config_reference

        sys.stdout.write(render_config_reference())
    elif validate is not None:
        cfg = load_config(validate)
        print(f"ok: {validate} (config hash {cfg.config_hash()}, run dir {cfg.run_dir})")
    else:
        raise typer.BadParameter("give --example, --schema, --reference or --validate FILE")


def example_config_text() -> str:
    from importlib import resources

    return resources.files("sentidistill").joinpath("examples/quickstart.yaml").read_text(encoding="utf-8")


def _register_stage_commands() -> None:
    """Stage commands live beside their stage; a stage whose module is absent is skipped."""
    import importlib

    for module, names in [
        ("sentidistill.pipeline_cli", ["run", "quickstart"]),
        ("sentidistill.own_data_cli", ["distill", "export-hf"]),
        ("sentidistill.teacher.cli", ["teach"]),
        ("sentidistill.train.cli", ["train"]),
        ("sentidistill.bench_cli", ["bench", "report"]),
        ("sentidistill.serve.cli", ["serve", "predict", "export-onnx"]),
        ("sentidistill.finetune.cli", ["finetune-eval"]),
    ]:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("sentidistill"):
                continue
            raise
        mod.register(app)
        del names


_register_stage_commands()


def run() -> None:
    """Entry point: user errors print one clear message and exit 2, never a traceback."""
    run_cli(app)

"""Label-free distillation on a user's own texts: one call from a file (or a list) to a trained student.

:func:`distill_texts` (and ``sentidistill distill``) writes, into the run folder ``out``:

- ``task.yaml``: the user's data as a task (the unlabeled texts as the ``train`` split, the labeled test file,
  when given, as ``test``; per-split loader options, see :class:`sentidistill.bench.task.LoaderSpec`);
- ``distill.yaml``: the pipeline config it ran (``sentidistill run runs/NAME/distill.yaml`` repeats or resumes
  the run: every teacher answer is cached, every finished stage skipped);

then runs the label-free recipe through :func:`sentidistill.pipeline.run_pipeline` (soft labels from the
teacher's restricted scoring, batch calibration, curation with a teacher-labelled dev slice, the classifier
student) and writes ``distill_report.json`` / ``distill_report.md``: agreement with the teacher on the
held-out dev slice and, with a test file, every model's gold score with its 95% bootstrap interval.

The returned :class:`DistilledStudent` answers ``predict(texts) -> [label]`` and ``predict_proba(texts)``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_json, atomic_write_text

#: File suffix -> the task loader format that reads it (a table reader picks csv/tsv/jsonl/... by suffix).
SUFFIX_FORMATS = {".txt": "text", ".csv": "table", ".tsv": "table", ".jsonl": "table", ".ndjson": "table",
                  ".json": "table", ".parquet": "table"}
DEFAULT_TEACHER = "builtin:qwen2.5-coder-1.5b"
#: The classifier's Trainer settings (the quickstart's, measured there) unless the caller overrides them.
DEFAULT_TRAINING = {"epochs": 6, "learning_rate": 1.0e-4, "batch_size": 32, "warmup_ratio": 0.06,
                    "eval_steps": 20, "save_steps": 20, "logging_steps": 20}


def teacher_section(spec: str, *, base_url: str | None = None, api_key_env: str | None = None) -> dict[str, Any]:
    """The config's ``teacher`` section for a teacher spec: ``openai:MODEL`` (any OpenAI-compatible endpoint;
    ``base_url`` or ``$OPENAI_BASE_URL``, the key in ``$OPENAI_API_KEY`` or ``api_key_env``),
    ``builtin:qwen2.5-coder-1.5b`` / ``builtin:qwen2.5-coder-0.5b`` (GGUF, llama.cpp in-process) or
    ``llamacpp:PATH`` (a GGUF file). Raises :class:`InputError` for any other form."""
    kind, _, rest = spec.partition(":")
    if kind == "openai" and rest:
        out: dict[str, Any] = {"kind": "openai", "model": rest, "concurrency": 8, "max_retries": 3,
                               "repair_attempts": 0}
        if base_url:
            out["base_url"] = base_url
        if api_key_env:
            out["api_key_env"] = api_key_env
        return out
    if kind == "builtin" and rest:
        return {"kind": "llamacpp", "model": spec, "concurrency": 1, "n_ctx": 2048, "max_retries": 3,
                "repair_attempts": 0}
    if kind == "llamacpp" and rest:
        return {"kind": "llamacpp", "model": rest, "concurrency": 1, "n_ctx": 2048, "max_retries": 3,
                "repair_attempts": 0}
    raise InputError(f"unknown teacher '{spec}'", field="--teacher",
                     expected="openai:MODEL | builtin:qwen2.5-coder-1.5b | builtin:qwen2.5-coder-0.5b | llamacpp:PATH")


def _split_entry(source: str | Path | Sequence[Any], folder: Path, split: str, *, text_column: str,
                 label_column: str | None) -> tuple[str, dict[str, Any]]:
    """(absolute path, loader options) of one split; a list of texts (or of (text, label) pairs for the test
    split) is first written to ``folder/data/<split>.jsonl``."""
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise InputError("file not found", path=path, field="TEXTS" if split == "train" else "--test")
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InputError("unsupported file type", path=path, expected=", ".join(SUFFIX_FORMATS), got=path.suffix)
        opts: dict[str, Any] = {"format": fmt}
        if fmt == "table":
            opts["text_field"] = text_column
            if label_column:
                opts["label_field"] = label_column
        elif label_column:
            raise InputError("a plain text file has no label column", path=path, field="--test",
                             expected="a labeled .csv/.tsv/.jsonl/.json/.parquet file")
        return str(path), opts
    items = list(source)
    if not items:
        raise InputError("no texts given", field="texts" if split == "train" else "test", expected="a non-empty list")
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            rec = {"text": item}
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            rec = {"text": str(item[0]), "label": str(item[1])}
        elif isinstance(item, dict) and "text" in item:
            rec = dict(item)
        else:
            raise InputError("expected a text, a (text, label) pair or {text, label}", field=f"{split}[{i}]",
                             got=type(item).__name__)
        lines.append(json.dumps(rec, ensure_ascii=False))
    path = data / f"{split}.jsonl"
    atomic_write_text(path, "\n".join(lines) + "\n")
    opts = {"format": "table", "text_field": "text"}
    if label_column:
        opts["label_field"] = "label"
    return str(path), opts


def task_definition(name: str, labels: Sequence[str], train: tuple[str, dict[str, Any]],
                    test: tuple[str, dict[str, Any]] | None, instruction: str | None) -> dict[str, Any]:
    """The task YAML (as a dict) of a user's data: ``train`` = the unlabeled pool, ``test`` = the labeled file."""
    labels = [str(x).strip() for x in labels]
    if len(labels) < 2 or any(not x for x in labels) or len(set(map(str.lower, labels))) != len(labels):
        raise InputError("need at least two distinct, non-empty labels", field="--labels", got=list(labels),
                         expected="e.g. --labels negative,neutral,positive")
    splits = {"train": train[0]}
    split_options = {"train": train[1]}
    if test is not None:
        splits["test"] = test[0]
        split_options["test"] = test[1]
    return {
        "name": name, "description": "A user's own data (written by sentidistill distill).", "category": "own",
        "kind": "classification",
        "loader": {"format": train[1]["format"], "splits": splits, "split_options": split_options},
        "eval_split": "test" if test is not None else "train",
        "labels": [{"name": lab} for lab in labels],
        "instruction": instruction or f"Classify the text. Answer with one of: {', '.join(labels)}.",
        "prompt": {"input_template": "Sentence: {text}", "answer_prefix": "Label:"},
        "demos": {"split": "train", "k": 0, "selection": "random"},
        "metric": "macro_f1",
    }


def pipeline_config(run_dir: Path, task_yaml: Path, teacher: dict[str, Any], *, has_test: bool,
                    per_task: int | None, test_limit: int | None, encoder: str, pooling: str, max_chars: int,
                    max_length: int, seed: int, training: dict[str, Any] | None) -> dict[str, Any]:
    """The pipeline config (as a dict) that distils ``task_yaml``'s pool into a classifier student: soft
    labels (batch calibration, class weights, a 20% teacher-labelled dev slice), the classifier, and, with a
    test split, the bench of the raw and calibrated teacher and the student before/after on it."""
    return {
        "name": run_dir.name, "runs_dir": str(run_dir.parent.resolve()), "seed": seed,
        "teacher": teacher,
        "soft_labels": {"enabled": True, "tasks": [str(task_yaml)], "n_per_task": per_task, "max_chars": max_chars,
                        "calibration": "batch", "balance": "weight", "dev_fraction": 0.2},
        "classifier": {"enabled": True, "encoder": encoder, "pooling": pooling, "max_length": max_length,
                       "head_init": "label_embeddings", "patience": 4,
                       "training": {**DEFAULT_TRAINING, **(training or {})}},
        "knowdist": {"enabled": False}, "icldist": {"enabled": False},
        "bench": {"enabled": has_test, "tasks": [str(task_yaml)], "shots": 0, "seeds": [seed], "limit": test_limit,
                  "max_chars": max_chars, "scoring": "restricted", "include_teacher": True,
                  "include_student_before": True, "bootstrap": 1000},
    }


def _task_name(source: Any, name: str | None) -> str:
    if name:
        return name
    stem = Path(source).stem if isinstance(source, (str, Path)) else "texts"
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-") or "texts"
    return clean if clean[0].isalnum() else "t" + clean


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def prepare_run(
    texts: str | Path | Sequence[str], labels: Sequence[str], *, out: str | Path = "runs/distill",
    text_column: str = "text", instruction: str | None = None, test: str | Path | Sequence[Any] | None = None,
    label_column: str = "label", teacher: str = DEFAULT_TEACHER, base_url: str | None = None,
    api_key_env: str | None = None, per_task: int | None = None, test_limit: int | None = None,
    encoder: str = "builtin:minilm", pooling: str = "pooler", max_chars: int = 300, max_length: int = 128,
    seed: int = 42, training: dict[str, Any] | None = None, task_name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write ``out/task.yaml`` and ``out/distill.yaml`` (see the module doc); returns the config's path.
    ``overrides``: dotted config fields (``{"classifier.patience": 2}``) set last. Raises :class:`InputError`
    (bad labels, a missing file) or :class:`~sentidistill.errors.ConfigError` (an invalid config)."""
    from sentidistill.config import validate_config

    run_dir = Path(out).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    train = _split_entry(texts, run_dir, "train", text_column=text_column, label_column=None)
    test_entry = (_split_entry(test, run_dir, "test", text_column=text_column, label_column=label_column)
                  if test is not None else None)
    task = task_definition(_task_name(texts, task_name), labels, train, test_entry, instruction)
    task_yaml = run_dir / "task.yaml"
    atomic_write_text(task_yaml, yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    from sentidistill.bench import get_task

    loaded = get_task(str(task_yaml))  # the task and its files validate now, not in the middle of the run
    loaded.load("train", labeled=False)
    if test is not None:
        loaded.load("test")  # every gold label is one of `labels` (an error names the file and line)
    raw = pipeline_config(run_dir, task_yaml, teacher_section(teacher, base_url=base_url, api_key_env=api_key_env),
                          has_test=test is not None, per_task=per_task, test_limit=test_limit, encoder=encoder,
                          pooling=pooling, max_chars=max_chars, max_length=max_length, seed=seed, training=training)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    validate_config(raw, str(run_dir / "distill.yaml"))
    header = ("# Written by `sentidistill distill`; repeat or resume the run with:\n"
              f"#   sentidistill run {run_dir / 'distill.yaml'}\n")
    atomic_write_text(run_dir / "distill.yaml", header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return run_dir / "distill.yaml"


def run_distill(config_path: str | Path, *, on_stage: Any = None) -> DistilledStudent:
    """Run (or resume) a config written by :func:`prepare_run`, write the report, return the student."""
    from sentidistill.config import load_config
    from sentidistill.pipeline import run_pipeline

    cfg = load_config(config_path)
    t0 = time.perf_counter()
    result = run_pipeline(cfg, on_stage=on_stage)
    report = distill_report(result.run_dir, result.metrics, wall_s=time.perf_counter() - t0)
    return DistilledStudent(result.run_dir / "models" / "classifier" / "final", report=report)


def distill_texts(
    texts: str | Path | Sequence[str], labels: Sequence[str], *, out: str | Path = "runs/distill",
    **options: Any,
) -> DistilledStudent:
    """Distil a teacher into a classifier student on unlabeled ``texts`` (a file: .txt one text per line,
    .csv/.tsv/.jsonl/.json/.parquet with a ``text_column``; or a list of strings) over ``labels``.

    Options (all optional) as :func:`prepare_run`: ``text_column``, ``instruction``, ``test`` (a labeled file
    with ``label_column``, or a list of (text, label) pairs: gold scores with intervals), ``teacher``
    (``openai:MODEL`` | ``builtin:...`` | ``llamacpp:PATH``), ``base_url``, ``per_task`` (texts to label;
    default all), ``test_limit``, ``encoder``, ``pooling`` (``pooler``, exportable by ``export-hf``; or
    ``mean``), ``training`` (Trainer fields), ``overrides`` (dotted config fields). Writes the run folder
    ``out`` (module doc) and returns the trained :class:`DistilledStudent`; a second call with the same
    arguments resumes (no teacher call is paid twice). Raises :class:`InputError` for bad input."""
    return run_distill(prepare_run(texts, labels, out=out, **options))


def distill_report(run_dir: str | Path, metrics: dict[str, dict[str, Any]] | None = None, *,
                   wall_s: float | None = None) -> dict[str, Any]:
    """The report of a distill run from its files: dev agreement with the teacher (before/after training),
    the teacher's cost, and with a test split each model's score with its 95% interval (x100). Written to
    ``distill_report.json`` and ``distill_report.md`` in ``run_dir``; returned as a dict."""
    from sentidistill.pipeline import BENCH_ORDER
    from sentidistill.rundir import RunDir

    run = RunDir(run_dir)
    from sentidistill.train.methods import read_training_summary

    try:
        summary = read_training_summary(run.models_dir / "classifier")
    except FileNotFoundError:
        summary = {}
    dev_after = summary.get("best_teacher_agreement")
    dev_before = next((v for k, v in (summary.get("dev_before") or {}).items() if "agreement" in k), None)
    teach = run.stage_info("teach_soft")
    rows = []
    for name in BENCH_ORDER:
        m = (metrics or {}).get(name)
        f = run.bench_dir / name / "metrics.json"
        if m is None and f.is_file():
            m = json.loads(f.read_text(encoding="utf-8"))
        if not m:
            continue
        task = next(iter(m.get("tasks", {}).values()), {})
        rows.append({"model": m.get("model", {}).get("name", name), "key": name,
                     "score": task.get("score"), "ci_low": task.get("ci_low"), "ci_high": task.get("ci_high"),
                     "n": task.get("n") or task.get("items"), "items_per_s": m.get("items_per_s"),
                     "from_cache": bool(m.get("from_cache"))})
    report = {"run_dir": str(run.path), "student": str(run.models_dir / "classifier" / "final"),
              "dev_agreement_before": dev_before, "dev_agreement_after": dev_after,
              "dev_rows": summary.get("dev_rows"), "train_rows": summary.get("train_rows"),
              "teacher": teach.get("teacher", {}), "bench": rows,
              "wall_s": round(wall_s, 1) if wall_s is not None else None}
    atomic_write_json(run.path / "distill_report.json", report)
    atomic_write_text(run.path / "distill_report.md", report_markdown(report))
    return report


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}" if isinstance(x, (int, float)) else "-"


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: dev agreement, teacher cost, and the gold table with intervals."""
    t = report.get("teacher") or {}
    lines = [f"# Distillation report: {report['run_dir']}", "",
             f"- student: `{report['student']}`",
             f"- agreement with the teacher on the held-out teacher-labelled dev slice ({report.get('dev_rows')} "
             f"texts): {_pct(report.get('dev_agreement_before'))} before training -> "
             f"{_pct(report.get('dev_agreement_after'))} after",
             f"- teacher, soft labels: {int(t.get('sent', 0))} calls, {int(t.get('prompt_tokens', 0) + t.get('completion_tokens', 0))}"
             f" tokens, {int(t.get('cache_hits', 0))} cache hits"]
    if report.get("wall_s") is not None:
        lines.append(f"- wall time: {report['wall_s']:.0f} s")
    if report.get("bench"):
        lines += ["", "| model | macro-F1 x100 | 95% interval | items/s |", "| --- | ---: | --- | ---: |"]
        for r in report["bench"]:
            speed = "cache" if r.get("from_cache") else (f"{r['items_per_s']:.1f}" if r.get("items_per_s") else "-")
            lines.append(f"| {r['model']} | {_pct(r['score'])} | [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] | {speed} |")
    return "\n".join(lines) + "\n"


class DistilledStudent:
    """A trained classifier student of one task: ``predict(texts) -> [label]``, ``predict_proba(texts)``
    (``[N, K]`` float32, columns in :attr:`labels` order), ``export_hf(dir)``. ``report``: the run's report."""

    def __init__(self, path: str | Path, *, task: str | None = None, report: dict[str, Any] | None = None) -> None:
        from sentidistill.students.classifier import load_classifier

        self.path = Path(path)
        self.model, self.tokenizer = load_classifier(self.path)
        names = self.model.task_names
        if task is None and len(names) != 1:
            raise InputError("this student has several heads: say which", field="task", expected=" | ".join(names))
        self.task = task or names[0]
        self.labels: list[str] = list(self.model.config.tasks[self.model.task_index(self.task)]["labels"])
        self.report = report or {}

    def __repr__(self) -> str:
        return f"DistilledStudent({str(self.path)!r}, task={self.task!r}, labels={self.labels})"

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        """Class probabilities ``[N, K]`` (numpy), columns in :attr:`labels` order."""
        if isinstance(texts, (str, bytes)):
            raise InputError("texts must be a list of strings, not one string", field="texts")
        return self.model.predict_proba(self.tokenizer, self.task, [str(t) for t in texts], head=self.task,
                                        batch_size=batch_size)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[str]:
        """The most probable label of each text."""
        probs = self.predict_proba(texts, batch_size)
        return [self.labels[int(i)] for i in probs.argmax(axis=1)] if len(probs) else []

    def export_hf(self, out_dir: str | Path, **options: Any) -> Path:
        """A stock Hugging Face model folder (see :func:`sentidistill.students.hf_export.export_hf`)."""
        from sentidistill.students.hf_export import export_hf

        return export_hf(self.path, out_dir, task=self.task, **options)

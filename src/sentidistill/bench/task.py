"""A benchmark task: its YAML schema (pydantic) and the behaviour the rest of the package relies on.

A task file says where the data is (format + a path per split, relative to the data folder), which
labels exist and how they are shown to a model (verbalizers) and accepted back (synonyms), how the
prompt is laid out, how demonstrations are drawn, how answers are parsed and which metric decides.
See ``bench/tasks/sst2.yaml`` for a classification task and ``atsa_rest16.yaml`` for an extraction one.
"""

from __future__ import annotations

import logging
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentidistill.bench import metrics as M
from sentidistill.bench.parsers import LabelParser, parse_tuples
from sentidistill.data.loading import (
    FORMATS,
    check_options,
    load_records,
    reader_options,
    seeded_split,
    stratified_sample,
)
from sentidistill.data.tuple_corpus import format_tuples
from sentidistill.errors import InputError

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelSpec(_Strict):
    name: str = Field(description="Canonical label (what gold and predictions are compared on).")
    verbalizer: str | None = Field(None, description="Word shown to the model; default: the name.")
    synonyms: list[str] = Field(default_factory=list, description="Other answers the parser accepts for it.")

    @property
    def word(self) -> str:
        return self.verbalizer or self.name


class DeriveSplits(_Strict):
    source: str = Field("all", description="Which entry of loader.splits holds the single file to cut.")
    seed: int = 42
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})


class LoaderSpec(_Strict):
    format: str = Field(description=f"One of: {', '.join(FORMATS)}.")
    splits: dict[str, str] = Field(description="split name -> path (relative to the data folder) or hf:NAME[:CONFIG].")
    options: dict[str, Any] = Field(default_factory=dict, description="Reader options (label_names, text_field...).")
    split_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-split reader options merged over `options`, e.g. "
        "{train: {format: text}, test: {label_field: label}} (an unlabeled pool beside a labeled test file); "
        "`format` here overrides the loader's format for that split.")
    derive_splits: DeriveSplits | None = Field(None, description="Cut one file into seeded splits (e.g. MR 80/10/10).")
    skip_bad: bool = Field(False, description="Skip (and log the count of) rows that fail to parse, e.g. empty tweets.")

    @model_validator(mode="after")
    def _check(self) -> LoaderSpec:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format '{self.format}'; expected one of {', '.join(FORMATS)}")
        try:
            check_options(self.format, self.options)  # each reader declares the options it takes
        except InputError as exc:
            raise ValueError(str(exc)) from None
        if self.derive_splits and self.derive_splits.source not in self.splits:
            raise ValueError(f"derive_splits.source '{self.derive_splits.source}' is not a key of splits")
        unknown = sorted(set(self.split_options) - set(self.splits))
        if unknown:
            raise ValueError(f"split_options names splits {unknown} that are not keys of splits ({list(self.splits)})")
        for split, opts in self.split_options.items():
            if "format" in opts and opts["format"] not in FORMATS:
                raise ValueError(f"split_options.{split}.format: unknown format '{opts['format']}'; expected one of "
                                 f"{', '.join(FORMATS)}")
            own = {k: v for k, v in opts.items() if k != "format"}
            try:  # a split's own options must suit its reader
                check_options(opts.get("format", self.format), own)
            except InputError as exc:
                raise ValueError(f"split_options.{split}: {exc}") from None
        return self

    def options_for(self, split: str) -> dict[str, Any]:
        """The reader options of ``split``: ``options`` with ``split_options[split]`` merged over them. When the
        split has a ``format`` of its own, the loader's options are the other format's: only those its reader
        also takes carry over (a CSV's ``text_field`` does not reach a plain-text split)."""
        own = self.split_options.get(split, {})
        fmt = own.get("format", self.format)
        base = self.options if fmt == self.format else {
            k: v for k, v in self.options.items() if k in reader_options(fmt)}
        return {**base, **own}


AnswerSource = Literal["label", "aspect_term_pairs", "aspect_category_pairs", "quads", "aste_triplets", "opinions"]


class AnswerSpec(_Strict):
    source: AnswerSource = Field("label", description="How gold answers are built from a record.")
    fields: list[str] = Field(default_factory=list, description="Tuple fields in answer order (extraction).")
    dedupe: bool = Field(False, description="Treat gold tuples as a set (e.g. ACSA categories).")
    label_map: dict[str, str] = Field(default_factory=dict, description="Raw data label -> canonical label.")


class PromptSpec(_Strict):
    input_template: str = Field("Sentence: {text}", description="One input, with {text} and any record field.")
    answer_prefix: str = Field("Label:", description="Cue after which the answer follows.")
    demo_separator: str = Field("\n", description="Between demonstrations (and before the query).")
    instruction_separator: str = Field("\n\n", description="Between the instruction and the first demonstration.")


class DemoSpec(_Strict):
    split: str = Field("train", description="Pool the demonstrations are drawn from.")
    k: int = Field(4, ge=0, le=64)
    selection: Literal["random", "similar"] = "random"


class TaskSpec(_Strict):
    """The schema of one task YAML file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    suites: list[str] = Field(default_factory=list)
    order: int = Field(100, description="Position in listings (tables follow the paper's task order).")
    category: str = Field(description="basic | multifaceted | fine-grained | ... (for category means).")
    kind: Literal["classification", "extraction"]
    loader: LoaderSpec
    eval_split: str = Field("test", description="Split scored by the benchmark.")
    labels: list[LabelSpec] = Field(default_factory=list)
    answer: AnswerSpec = AnswerSpec()
    instruction: str
    prompt: PromptSpec = PromptSpec()
    demos: DemoSpec = DemoSpec()
    max_new_tokens: int = Field(150, ge=1, description="Generation length (extraction, or scoring=generate).")
    metric: Literal["macro_f1", "accuracy", "micro_f1", "graph_f1"]
    citation: str = ""

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.kind == "classification":
            if len(self.labels) < 2:
                raise ValueError("a classification task needs at least two labels")
            if self.answer.source != "label":
                raise ValueError("classification tasks use answer.source: label")
            if self.metric not in ("macro_f1", "accuracy"):
                raise ValueError("classification tasks use metric macro_f1 or accuracy")
            try:
                LabelParser({lab.name: [lab.word, *lab.synonyms] for lab in self.labels})
            except ValueError as exc:
                raise ValueError(f"labels: {exc}") from None
        else:
            if self.answer.source == "label" or not self.answer.fields:
                raise ValueError("extraction tasks need answer.source (not 'label') and answer.fields")
            if self.metric not in ("micro_f1", "graph_f1"):
                raise ValueError("extraction tasks use metric micro_f1 or graph_f1")
        if self.eval_split not in self._split_names():
            raise ValueError(f"eval_split '{self.eval_split}' is not a split of the loader ({self._split_names()})")
        if self.demos.k and self.demos.split not in self._split_names():
            raise ValueError(f"demos.split '{self.demos.split}' is not a split of the loader ({self._split_names()})")
        return self

    def _split_names(self) -> list[str]:
        if self.loader.derive_splits:
            return list(self.loader.derive_splits.fractions)
        return list(self.loader.splits)


_POLARITY = {
    "pos": "positive", "positive": "positive", "neg": "negative", "negative": "negative",
    "neu": "neutral", "neutral": "neutral", "conflict": "conflict", "mixed": "conflict",
}
_POLARITY_FIELDS = {"polarity", "sentiment"}


def _norm_field(name: str, value: str) -> str:
    """Comparison form of one tuple element: case, quotes and spacing do not matter; polarity synonyms
    (POS/pos/Positive) and category separators (FOOD#QUALITY = food quality) are unified."""
    v = re.sub(r"\s+", " ", str(value).strip().strip("'\"").strip()).lower()
    if name in _POLARITY_FIELDS:
        return _POLARITY.get(v, v)
    if name == "category":
        return re.sub(r"[#_\s]+", " ", v).strip()
    if v in {"null", "none", ""}:
        return "null"
    return v


class Task:
    """A loaded task definition. ``rows`` are dicts with ``text``, ``gold`` and extra fields."""

    def __init__(self, spec: TaskSpec, source: Path | None = None) -> None:
        self.spec = spec
        self.source = source
        self._cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

    # -- identity ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def category(self) -> str:
        return self.spec.category

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def suites(self) -> list[str]:
        return self.spec.suites

    @property
    def labels(self) -> list[str]:
        return [lab.name for lab in self.spec.labels]

    @property
    def verbalizers(self) -> dict[str, str]:
        return {lab.name: lab.word for lab in self.spec.labels}

    @property
    def metric(self) -> str:
        return self.spec.metric

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {self.kind}, {self.category})"

    # -- data ----------------------------------------------------------------------------------------
    def _records(self, split: str, data_dir: str | Path | None, labeled: bool = True) -> list[dict[str, Any]]:
        key = (split, str(data_dir)) if labeled else (split, str(data_dir), "unlabeled")
        if key in self._cache:
            return self._cache[key]
        ld = self.spec.loader
        if ld.derive_splits:
            ds = ld.derive_splits
            if split not in ds.fractions:
                raise InputError(f"task '{self.name}' has no split '{split}'", field="split",
                                 expected=" | ".join(ds.fractions))
            path = ld.splits[ds.source]
            recs = self._read(path, ds.source, data_dir, labeled)
            for name, part in seeded_split(recs, ds.fractions, ds.seed).items():
                self._cache[(name, *key[1:])] = [self._row(r, i, path, labeled) for i, r in enumerate(part)]
            return self._cache[key]
        if split not in ld.splits:
            raise InputError(f"task '{self.name}' has no split '{split}'", field="split",
                             expected=" | ".join(ld.splits))
        path = ld.splits[split]
        recs = self._read(path, split, data_dir, labeled)
        rows = [self._row(r, i, path, labeled) for i, r in enumerate(recs)]
        self._cache[key] = rows
        return rows

    def _read(self, path: str, split: str, data_dir: str | Path | None, labeled: bool = True) -> list[dict[str, Any]]:
        ld = self.spec.loader
        stats: dict[str, int] = {}
        options = ld.options_for(split)
        fmt = options.pop("format", ld.format)
        if not labeled:  # a soft-label pool: its labels (if any) are never read, so none are required
            options.pop("label_field", None)
        recs = load_records(fmt, path, split=split, data_dir=data_dir, skip_bad=ld.skip_bad, stats=stats,
                            **options)
        if stats.get("skipped"):
            log.warning("task %s, %s (%s): skipped %d unreadable rows (loader.skip_bad)",
                        self.name, split, path, stats["skipped"])
        return recs

    def load(
        self, split: str | None = None, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 42,
        *, labeled: bool = True,
    ) -> list[dict[str, Any]]:
        """Rows of ``split`` (default: the evaluation split); ``limit`` takes a stratified subsample
        (by label for classification, by number of gold tuples otherwise) with ``seed``.

        ``labeled=False`` (a classification task's unlabeled pool, e.g. for soft labels): rows need no label
        and carry ``gold=None`` (a label column is not read at all); ``limit`` is then a seeded random sample.
        With ``labeled=True`` a row without a label raises :class:`InputError` naming the file and line."""
        if not labeled and self.kind != "classification":
            raise InputError(f"task '{self.name}': only classification tasks have unlabeled pools", field="kind")
        rows = self._records(split or self.spec.eval_split, data_dir, labeled)
        if not labeled:
            if limit is not None and limit < len(rows):
                import random

                rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]
            return [dict(r) for r in rows]
        if limit is not None and limit < len(rows):
            key = (lambda r: r["gold"]) if self.kind == "classification" else (lambda r: min(len(r["gold"]), 3))
            rows = stratified_sample(rows, limit, key=key, seed=seed)
        return [dict(r) for r in rows]

    def _row(self, rec: dict[str, Any], index: int, path: str, labeled: bool = True) -> dict[str, Any]:
        row = {k: v for k, v in rec.items() if k not in {"label", "aspects", "quads", "opinions", "triplets"}}
        row.setdefault("id", f"{self.name}-{index}")
        row["gold"] = self._gold(rec, index, path) if labeled else None
        if self.spec.answer.source == "opinions":
            row["gold_spans"] = [
                {role: [list(s) for s in op[role]["spans"]] for role in ("Source", "Target", "Polar_expression")}
                | {"Polarity": op["Polarity"].lower()}
                for op in rec.get("opinions", [])
            ]
        return row

    def _gold(self, rec: dict[str, Any], index: int, path: str) -> Any:
        src = self.spec.answer.source
        where = f"{path} item/line {index + 1}"
        if src == "label":
            raw = rec.get("label")
            if raw is None:
                raise InputError(f"{where}: no label", field="label", expected=f"one of {self.labels}")
            lab = self.spec.answer.label_map.get(str(raw), str(raw))
            if lab not in self.labels:
                # Tolerate case differences between a data file and the task's label names.
                lowered = {x.lower(): x for x in self.labels}
                if lab.lower() not in lowered:
                    raise InputError(f"{where}: unknown label", field="label", expected=f"one of {self.labels}",
                                     got=raw)
                lab = lowered[lab.lower()]
            return lab
        if src in ("aspect_term_pairs", "aspect_category_pairs"):
            key = "target" if src == "aspect_term_pairs" else "category"
            if "aspects" not in rec:
                raise InputError(f"{where}: no aspects", field="aspects", expected="a list of aspects")
            tuples = [(a[key], a["polarity"]) for a in rec["aspects"] if a.get(key)]
        elif src == "quads":
            tuples = [(q["aspect"], q["category"], q["sentiment"], q["opinion"]) for q in rec.get("quads", [])]
        elif src == "aste_triplets":
            tuples = [(t["aspect"], t["opinion"], t["polarity"]) for t in rec.get("triplets", [])]
        else:  # opinions: (holder, target, expression, polarity); discontinuous spans joined with " ... "
            tuples = [
                (
                    " ... ".join(op["Source"]["texts"]) or "NULL",
                    " ... ".join(op["Target"]["texts"]) or "NULL",
                    " ... ".join(op["Polar_expression"]["texts"]),
                    op["Polarity"].lower(),
                )
                for op in rec.get("opinions", [])
            ]
        tuples = [tuple(str(x) for x in t) for t in tuples]
        if self.spec.answer.dedupe:
            tuples = list(dict.fromkeys(tuples))
        return tuples

    # -- prompting and answers ----------------------------------------------------------------------
    def answer_text(self, row: dict[str, Any]) -> str:
        """The gold answer as a model should write it: the verbalizer, or a Python list of tuples."""
        if self.kind == "classification":
            return self.verbalizers[row["gold"]]
        return format_tuples(row["gold"])

    def format_input(self, row: dict[str, Any]) -> str:
        try:
            return self.spec.prompt.input_template.format(**row)
        except KeyError as exc:
            raise InputError(f"task '{self.name}': the prompt needs field {exc} that the row lacks",
                             field="prompt.input_template", expected=f"fields of {sorted(row)}") from None

    def prompt(self, row: dict[str, Any], demos: list[dict[str, Any]] | None = None,
               style: Literal["plain", "chat"] = "plain") -> str | list[dict[str, str]]:
        """The prompt for ``row`` with ``demos`` (see :mod:`sentidistill.bench.prompting`)."""
        from sentidistill.bench.prompting import build_prompt

        return build_prompt(self, row, demos or [], style=style)

    @cached_property
    def _label_parser(self) -> LabelParser:
        return LabelParser({lab.name: [lab.word, *lab.synonyms] for lab in self.spec.labels})

    def parse(self, text: str | None) -> Any:
        """A canonical label, a list of normalised tuples, or None when the answer cannot be read."""
        if self.kind == "classification":
            return self._label_parser(text)
        fields = self.spec.answer.fields
        tuples = parse_tuples(text, len(fields), fields)
        if tuples is None:
            return None
        return [self.normalise_tuple(t) for t in tuples]

    def normalise_tuple(self, t: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        return tuple(_norm_field(f, v) for f, v in zip(self.spec.answer.fields, t, strict=True))

    def normalise_gold(self, gold: Any) -> Any:
        if self.kind == "classification":
            return gold
        return [self.normalise_tuple(t) for t in gold]

    def score(self, preds: list[Any], golds: list[Any], rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Metrics for parsed predictions against gold; ``score`` holds the task's main metric.

        The graph F1 of structured-sentiment tasks needs ``rows`` (sentence text and gold char spans).
        """
        if self.kind == "classification":
            out: dict[str, Any] = M.classification_metrics(preds, golds, self.labels)
        elif self.metric == "micro_f1":
            out = M.tuple_metrics(preds, [self.normalise_gold(g) for g in golds])
        else:
            if rows is None:
                raise ValueError(f"task '{self.name}': graph F1 needs the rows (text and gold spans)")
            out = M.sentiment_graph_f1(
                [self.graph_tuples(p, r["text"]) if p is not None else None for p, r in zip(preds, rows, strict=True)],
                [self.gold_graph(r) for r in rows],
            )
        out["score"] = out[self.metric]
        return out

    @staticmethod
    def graph_tuples(pred: list[tuple[str, ...]], text: str) -> list[M.SentTuple]:
        offsets = M.token_offsets(text)
        return [
            M.SentTuple(M.locate_tokens(h, text, offsets), M.locate_tokens(t, text, offsets),
                        M.locate_tokens(e, text, offsets), _norm_field("polarity", p))
            for h, t, e, p in pred
        ]

    @staticmethod
    def gold_graph(row: dict[str, Any]) -> list[M.SentTuple]:
        offsets = M.token_offsets(row["text"])
        return [
            M.SentTuple(
                M.spans_to_tokens(map(tuple, op["Source"]), offsets),
                M.spans_to_tokens(map(tuple, op["Target"]), offsets),
                M.spans_to_tokens(map(tuple, op["Polar_expression"]), offsets),
                _norm_field("polarity", op["Polarity"]),
            )
            for op in row.get("gold_spans", [])
        ]


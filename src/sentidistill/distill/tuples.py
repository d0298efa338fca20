"""Fine-grained teaching from unlabeled text: the teacher writes the tuples.

For each fine-grained (extraction) task — aspect-term sentiment (ATSA), aspect-category sentiment (ACSA),
quadruples (ASQP), structured opinions (OpeNER) — the teacher reads unlabeled sentences (the task's train
split with its gold tuples dropped on read, or a user's own texts) in the task's k-shot prompt (the
demonstrations come from the task's train split with their answers, as in SentiBench's 4-shot protocol) and
writes the answer: a Python-style list of tuples. Each answer is validated by the teacher layer (an invalid
one is re-asked with a repair instruction) and then read by the *task's own parser*, the one the benchmark
scores with; unreadable answers are counted and dropped, never guessed.

Self-consistency (Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models"), optional: ``self_consistency = n > 1`` asks n sampled answers (temperature ``temperature``, seeds
``seed .. seed+n-1``: n distinct cache entries) and keeps the tuples that a strict majority of the n answers
contain (compared in the task's normalised form: case, quotes and polarity synonyms do not matter).

Every call goes through the teacher's cache, so a killed run resumes without repeating one. The result is a
Parquet file (:data:`sentidistill.data.tuple_corpus.TUPLE_CORPUS_SCHEMA`) plus ``<name>.stats.json`` with,
per task, the texts, the answers parsed / invalid / unreadable, the tuples kept and the self-consistency
agreement.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentidistill.data.tuple_corpus import format_tuples, write_tuple_corpus
from sentidistill.errors import BudgetExceeded, InputError
from sentidistill.utils.answers import split_reasoning
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

#: Part of every teacher cache key of this module: bump it when the prompt layout changes.
PROMPT_VERSION = "1"

#: Fields of a task row that carry its gold answer: dropped the moment a row is read.
_GOLD_FIELDS = ("gold", "gold_spans")


@dataclass
class TupleCorpusStats:
    """What a tuple-teaching run did, per task (texts, answers, what was dropped and why, tuples kept)."""

    path: str
    rows: int = 0
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    self_consistency: int = 1
    teacher: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def unlabeled_sentences(task: Any, cfg: Any, data_dir: str | Path | None, seed: int) -> list[dict[str, Any]]:
    """``cfg.n_per_task`` unlabeled rows for ``task`` (seeded; duplicates by normalised text removed; texts
    cut at ``cfg.max_chars``). From ``cfg.texts`` (a user's file, one text per line or a JSONL/CSV/Parquet
    file with a ``text`` column) when set, else the task's train split with the gold answers dropped.
    Raises InputError for an empty pool."""
    if cfg.texts is not None:
        texts = read_texts(cfg.texts, cfg.text_field)
        rows = [{"id": f"{task.name}-user-{i}", "text": t} for i, t in enumerate(texts)]
    else:
        rows = [{k: v for k, v in r.items() if k not in _GOLD_FIELDS} for r in task.load("train", data_dir=data_dir)]
    seen: set[str] = set()
    unique = []
    for r in rows:
        key = _norm(r["text"])
        if key and key not in seen:
            seen.add(key)
            unique.append(r)
    if not unique:
        raise InputError(f"task '{task.name}': no unlabeled texts to teach", field="finegrained.texts")
    rng = random.Random(f"{seed}:{task.name}:tuples")
    rng.shuffle(unique)
    picked = unique[: cfg.n_per_task] if cfg.n_per_task else unique
    return [{**r, "text": str(r["text"])[: cfg.max_chars]} for r in picked]


def read_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """A user's unlabeled texts: ``.txt`` one per line (blank lines skipped), else a JSONL/JSON/CSV/TSV/Parquet
    file read by :func:`sentidistill.data.readers.read_table` with ``text_field`` as the text. Raises
    InputError (file, line, field) for a file that cannot be read."""
    from sentidistill.data.readers import read_text_file

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, field="finegrained.texts", expected="a file of texts")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
    from sentidistill.data.readers import read_table

    recs = read_table(path, text_field=text_field, keep_fields=False)
    return [str(r["text"]).strip() for r in recs if str(r["text"]).strip()]


def majority_tuples(answers: list[list[tuple[str, ...]] | None], task: Any) -> tuple[list[tuple[str, ...]], float]:
    """Self-consistency vote: the tuples that more than half of ``answers`` (parsed answers of one text; None
    = unreadable, counted as an answer that contains nothing) contain, in the order of their first
    appearance, each in the first raw form it was written in; and the mean share of answers agreeing with
    each kept tuple (1.0 when every answer agrees; 1.0 for an agreed empty answer). Tuples are compared in
    the task's normalised form (:meth:`Task.normalise_tuple`)."""
    n = len(answers)
    counts: Counter[tuple[str, ...]] = Counter()
    first_form: dict[tuple[str, ...], tuple[str, ...]] = {}
    for ans in answers:
        if ans is None:
            continue
        seen = set()
        for t in ans:
            key = task.normalise_tuple(t)
            if key in seen:
                continue
            seen.add(key)
            counts[key] += 1
            first_form.setdefault(key, tuple(t))
    kept = [first_form[k] for k in first_form if counts[k] * 2 > n]
    if not kept:
        empty_votes = sum(1 for a in answers if a is not None and not a)
        return [], (empty_votes / n if n else 0.0)
    return kept, sum(counts[task.normalise_tuple(t)] for t in kept) / (n * len(kept))


def _raw_tuples(task: Any, text: str) -> list[tuple[str, ...]] | None:
    """The answer's tuples as written (not normalised), or None when the task's parser cannot read it."""
    from sentidistill.bench.parsers import parse_tuples

    fields = task.spec.answer.fields
    return parse_tuples(text, len(fields), fields)


def tuple_requests(task: Any, rows: list[dict[str, Any]], cfg: Any, data_dir: str | Path | None,
                   seed: int) -> list[Any]:
    """The teacher requests for ``rows``: per row, ``cfg.self_consistency`` requests of the task's k-shot chat
    prompt (``cfg.shots`` demonstrations from the train split, drawn per text with ``seed``, never the text
    itself), greedy for n = 1, else sampled at ``cfg.temperature`` with seeds ``seed .. seed+n-1``."""
    from sentidistill.bench.prompting import random_demos
    from sentidistill.core.records import AnswerFormat, SamplingParams, TeacherRequest

    pool = task.load(task.spec.demos.split, data_dir=data_dir) if cfg.shots else []
    n = cfg.self_consistency
    fmt = AnswerFormat(kind="tuples", tuple_arity=len(task.spec.answer.fields))
    max_tokens = cfg.max_tokens or task.spec.max_new_tokens
    reqs = []
    for r in rows:
        demos = [d for d in random_demos(task.name, r, pool, cfg.shots + 1, seed) if _norm(d["text"]) != _norm(r["text"])]
        messages = task.prompt(r, demos[: cfg.shots], style="chat")
        for i in range(n):
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0 if n == 1 else cfg.temperature,
                                    seed=seed + i, logprobs=n == 1 and cfg.top_logprobs > 0,
                                    top_logprobs=cfg.top_logprobs if n == 1 else 0)
            reqs.append(TeacherRequest(messages=messages, params=params, prompt_id=f"tuples.{task.name}",
                                       prompt_version=PROMPT_VERSION, answer_format=fmt,
                                       metadata={"task": task.name, "id": r["id"], "sample": i}))
    return reqs


def build_tuple_corpus(cfg: Any, teacher: Any, out_path: str | Path, data_dir: str | Path | None = None,
                       seed: int = 42) -> TupleCorpusStats:
    """Ask the teacher for the tuples of unlabeled sentences of every task in ``cfg.tasks`` (a
    :class:`sentidistill.config.FineGrainedConfig`) and write the tuple corpus at ``out_path`` (Parquet) and
    its ``.stats.json``. Raises InputError for a task that is not an extraction task or when nothing usable
    came back; a teacher budget that runs out keeps what was answered (counted as ``unanswered``)."""
    from sentidistill.bench import get_task

    out_path = Path(out_path)
    stats = TupleCorpusStats(path=str(out_path), self_consistency=cfg.self_consistency)
    out_rows: list[dict[str, Any]] = []
    for name in cfg.tasks:
        task = get_task(name)
        if task.kind != "extraction":
            raise InputError(f"task '{name}' is a {task.kind} task; the teacher writes tuples for extraction tasks "
                             "(classification tasks are taught by soft_labels)", field="finegrained.tasks",
                             expected="atsa_rest16, acsa_rest16, asqp_rest16, opener, ...")
        rows = unlabeled_sentences(task, cfg, data_dir, seed)
        reqs = tuple_requests(task, rows, cfg, data_dir, seed)
        try:
            responses = teacher.generate(reqs, on_budget="return")
        except BudgetExceeded as exc:
            responses = list(getattr(exc, "responses", None) or [])
            log.warning("teacher budget exhausted: %s", exc)
        responses = list(responses) + [None] * (len(reqs) - len(responses))
        task_rows, tstats = _collect(task, rows, responses, cfg, seed)
        out_rows += task_rows
        stats.tasks[task.name] = tstats
        log.info("tuples %s: %d of %d texts kept (%s)", task.name, tstats["kept"], len(rows),
                 ", ".join(f"{k} {v}" for k, v in tstats["dropped"].items()) or "none dropped")
    stats.teacher = dict(getattr(teacher, "stats", {}) or {})
    if not out_rows:
        raise InputError("the tuple corpus would be empty: no teacher answer could be read",
                         path=out_path, field="finegrained", expected="a teacher that answers with a list of tuples")
    write_tuple_corpus(out_rows, out_path)
    stats.rows = len(out_rows)
    atomic_write_json(out_path.with_suffix(".stats.json"), stats.to_dict())
    return stats


def _collect(task: Any, rows: list[dict[str, Any]], responses: list[Any], cfg: Any,
             seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Corpus rows and per-task stats from the teacher's answers (``self_consistency`` answers per row, in
    order; None = unanswered)."""
    n = cfg.self_consistency
    status_counts: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    agreements: list[float] = []
    n_tuples = 0
    empty = 0
    for i, r in enumerate(rows):
        group = responses[i * n: (i + 1) * n]
        parsed: list[list[tuple[str, ...]] | None] = []
        first = None
        for resp in group:
            if resp is None:
                status_counts["unanswered"] += 1
                parsed.append(None)
                continue
            status_counts[resp.status] += 1
            _, answer = split_reasoning(resp.text or "")
            ok = resp.status in ("valid", "repaired", "unchecked")
            parsed.append(_raw_tuples(task, answer) if ok and answer else None)
            first = first or resp
        n_parsed = sum(p is not None for p in parsed)
        if n_parsed == 0:
            reasons = {s.status for s in group if s is not None}
            dropped["unanswered" if not reasons else "truncated" if reasons == {"truncated"} else
                    "error" if reasons <= {"error", "missing"} else "unreadable"] += 1
            continue
        if n == 1:
            tuples, agreement = list(parsed[0] or []), 1.0
        else:
            tuples, agreement = majority_tuples(parsed, task)
            if n_parsed * 2 <= n:  # most samples unreadable: no majority can be trusted
                dropped["no_majority"] += 1
                continue
        target = format_tuples(tuples)
        logprobs = None
        if n == 1 and first is not None and first.logprobs and target == (first.text or "").strip():
            logprobs = json.dumps([t.model_dump(mode="json") for t in first.logprobs], ensure_ascii=False)
        out.append({
            "task": task.name, "id": str(r["id"]), "text": r["text"], "target": target,
            "tuples": [list(t) for t in tuples], "n_samples": n, "n_parsed": n_parsed, "agreement": agreement,
            "status": "voted" if n > 1 else (first.status if first is not None else "valid"),
            "teacher_logprobs": logprobs,
        })
        agreements.append(agreement)
        n_tuples += len(tuples)
        empty += not tuples
    # The teacher-labelled dev slice (seeded, per task): early stopping on agreement with the teacher.
    rng = random.Random(f"{seed}:{task.name}:dev")
    order = list(range(len(out)))
    rng.shuffle(order)
    n_dev = round(cfg.dev_fraction * len(out)) if len(out) >= 4 else 0
    dev = set(order[:n_dev])
    for j, row in enumerate(out):
        row["split"] = "dev" if j in dev else "train"
    return out, {
        "texts": len(rows), "requests": len(rows) * n, "answers": dict(status_counts), "kept": len(out),
        "dev": n_dev, "dropped": dict(dropped), "tuples": n_tuples, "empty_answers": empty,
        "tuples_per_text": round(n_tuples / len(out), 3) if out else 0.0,
        "mean_agreement": round(sum(agreements) / len(agreements), 4) if agreements else None,
    }

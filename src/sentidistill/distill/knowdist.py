"""KnowDist corpus: the teacher examines and interprets reviews; the student learns (tagged review -> analysis).

Each review is asked several ways (``cfg.prompt_types``: templates ``knowdist.<type>`` in
``sentidistill.prompts``). The student's input is a short tag for the prompt type plus the review
(``"analyse aspects: <review>"``), so one student learns every kind of analysis and can be asked for
any of them. Teacher answers are cached as they arrive (rerunning resumes). ``cfg.replay_path`` uses a
released corpus instead (e.g. paper 2's ``mixtral_yelp_500.jsonl``: ``Text`` -> ``mixtral_response``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sentidistill.config import KnowDistConfig
from sentidistill.distill.corpus import CorpusStats, write_corpus
from sentidistill.errors import BudgetExceeded, InputError
from sentidistill.utils.answers import split_reasoning
from sentidistill.utils.io import stable_hash

log = logging.getLogger(__name__)

# The student-side tag of each prompt type (unknown types get "analyse <type>").
PROMPT_TAGS = {
    "overall": "analyse sentiment",
    "aspects": "analyse aspects",
    "emotions": "analyse emotions",
    "implicit": "analyse implicit sentiment",
    "rewrite": "rewrite review",
    "replay": "interpret sentiment",
}
_NO_ANSWER = {"error", "missing"}


def student_source(prompt_type: str, review: str) -> str:
    """What the student reads: ``"<tag>: <review>"``."""
    return f"{PROMPT_TAGS.get(prompt_type, 'analyse ' + prompt_type.replace('_', ' '))}: {review}"


def _review_id(text: str) -> str:
    return stable_hash(text, 12)


def build_knowdist_corpus(
    cfg: KnowDistConfig, teacher: Any, out_path: str | Path, data_dir: str | Path | None = None, seed: int = 42
) -> CorpusStats:
    """Build the KnowDist corpus at ``out_path`` (Parquet) and return what happened.

    ``teacher``: a ``CachedTeacher`` (``sentidistill.teacher.build_teacher``); unused (may be None) in
    replay mode. Answers that fail validation are not written (counted in ``dropped['invalid']``), nor
    are requests that got no answer (``dropped['error']``: a rerun asks again, the rest come from cache).
    """
    if cfg.replay_path is not None:
        return _from_replay(cfg, out_path)
    if teacher is None:
        raise InputError("KnowDist needs a teacher (or knowdist.replay_path)", field="knowdist.replay_path")
    from sentidistill.bench.registry import task_texts
    from sentidistill.core.records import SamplingParams
    from sentidistill.data import load_reviews
    from sentidistill.prompts import get_template

    rc = cfg.reviews
    reviews = load_reviews(rc.source, text_field=rc.text_field, limit=rc.limit, min_chars=rc.min_chars,
                           max_chars=rc.max_chars, split=rc.split, data_dir=data_dir, task_texts=task_texts)
    stats = CorpusStats(path=str(out_path), inputs={"source": rc.source, "reviews": len(reviews),
                                                    "read": reviews.read, "dropped": dict(reviews.dropped)})
    if not len(reviews):
        raise InputError("no reviews left after de-duplication and the length filter", path=rc.source,
                         expected=f"reviews of {rc.min_chars}-{rc.max_chars} characters")
    templates = {t: get_template(f"knowdist.{t}") for t in cfg.prompt_types}
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=0.0, seed=seed)
    requests, meta = [], []
    for review in reviews.texts:
        for ptype, tpl in templates.items():
            requests.append(tpl.request(params=params, metadata={"prompt_type": ptype}, text=review))
            meta.append((ptype, review))
    stats.requests = len(requests)
    try:
        responses = teacher.generate(requests, on_budget="return")
    except BudgetExceeded as exc:  # a teacher without on_budget support: keep what was answered
        responses = getattr(exc, "responses", None) or []
        log.warning("teacher budget exhausted: %s", exc)
    rows: list[dict[str, Any]] = []
    for (ptype, review), req, resp in zip(meta, requests, responses, strict=False):
        stats.count(stats.by_status, resp.status)
        if resp.status in _NO_ANSWER:
            stats.count(stats.dropped, "error")
            continue
        # The student learns the analysis, not a reasoning teacher's thinking (kept in its own column).
        reasoning, answer = split_reasoning(resp.text)
        reasoning = resp.reasoning if resp.reasoning is not None else reasoning
        if resp.status == "truncated":
            stats.count(stats.dropped, "truncated")
            continue
        if resp.status == "invalid" or not answer:
            stats.count(stats.dropped, "invalid")
            continue
        stats.with_reasoning += reasoning is not None
        rows.append({
            "source": student_source(ptype, review), "target": answer, "task": f"knowdist.{ptype}",
            "prompt_id": req.prompt_id, "prompt_version": req.prompt_version, "status": resp.status,
            "teacher_logprobs": None, "gold": None, "example_id": f"{_review_id(review)}:{ptype}",
            "reasoning": reasoning,
        })
        stats.count(stats.by_task, f"knowdist.{ptype}")
    if len(responses) < len(requests):
        stats.count(stats.dropped, "unanswered", len(requests) - len(responses))
    stats.teacher = dict(getattr(teacher, "stats", {}) or {})
    _finish(rows, out_path, stats)
    return stats


def _from_replay(cfg: KnowDistConfig, out_path: str | Path) -> CorpusStats:
    """Rows from a released teacher corpus (``{ID, Text, Overall, mixtral_response}`` JSON lines)."""
    from sentidistill.data import normalise_text, read_teacher_sample

    path = Path(cfg.replay_path)  # type: ignore[arg-type]
    records = read_teacher_sample(path)
    rc = cfg.reviews
    stats = CorpusStats(path=str(out_path), inputs={"source": str(path), "read": len(records)})
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for rec in records:
        text = rec["text"].strip()
        reasoning, analysis = split_reasoning(rec.get("analysis") or "")
        key = normalise_text(text)
        if key in seen:
            stats.count(stats.dropped, "duplicates")
            continue
        seen.add(key)
        if not analysis:
            stats.count(stats.dropped, "no_answer")
        elif len(text) < rc.min_chars:
            stats.count(stats.dropped, "too_short")
        elif len(text) > rc.max_chars:
            stats.count(stats.dropped, "too_long")
        elif rc.limit is not None and len(rows) >= rc.limit:
            stats.count(stats.dropped, "over_limit")
        else:
            rows.append({
                "source": student_source("replay", text), "target": analysis, "task": "knowdist.replay",
                "prompt_id": f"replay:{path.name}", "prompt_version": "1", "status": "unchecked",
                "teacher_logprobs": None, "gold": rec.get("label"), "example_id": rec.get("id") or _review_id(text),
                "reasoning": reasoning,
            })
    stats.requests = 0
    stats.count(stats.by_status, "unchecked", len(rows))
    stats.count(stats.by_task, "knowdist.replay", len(rows))
    _finish(rows, out_path, stats)
    return stats


def _finish(rows: list[dict[str, Any]], out_path: str | Path, stats: CorpusStats) -> None:
    if not rows:
        raise InputError(f"the KnowDist corpus would be empty (dropped: {stats.dropped})", path=out_path)
    write_corpus(rows, out_path)
    stats.rows = len(rows)
    log.info("KnowDist corpus: %d rows -> %s (dropped %s)", len(rows), out_path, stats.dropped or "none")

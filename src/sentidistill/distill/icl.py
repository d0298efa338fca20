"""ICLDist corpus: in-context prompts over the tasks' training splits, answered by the teacher.

Each prompt = an instruction (the task's own, or one of a few versioned paraphrases) + k demonstrations
(k uniform in [min_shots, max_shots]) + the query, in one of two layouts (``plain``: the SentiBench
"Sentence: ... / Label: ..." block; ``chat``: demonstrations as user/assistant turns). Tasks are mixed
round-robin in a seeded order. The query is never among its own demonstrations (by index and by text, since
train splits contain duplicate sentences). The teacher answers with ``top_logprobs`` for token-level KD;
the answer format is the task's label set (or its tuple arity), so the teacher layer repairs or flags
invalid answers.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sentidistill.config import ICLDistConfig
from sentidistill.distill.corpus import CorpusStats, write_corpus
from sentidistill.errors import BudgetExceeded, InputError
from sentidistill.prompts import Template
from sentidistill.utils.answers import split_reasoning

log = logging.getLogger(__name__)

PromptFormat = Literal["plain", "chat"]
FORMATS: tuple[PromptFormat, ...] = ("plain", "chat")

# Instruction paraphrases, versioned like every prompt (the version is part of the teacher cache key).
# Variables: instruction (the task's own), labels ("a, b or c"), kind ("classification"|"extraction").
INSTRUCTION_TEMPLATES: tuple[Template, ...] = (
    Template(id="icl.instruction.task", version="1", description="The task's own instruction.",
             user="{{ instruction }}"),
    Template(id="icl.instruction.choose", version="1", description="Name the label set explicitly.",
             user="{% if kind == 'classification' %}Read each input and answer with exactly one of: {{ labels }}."
                  "{% else %}{{ instruction }} Answer with a Python list of tuples only.{% endif %}"),
    Template(id="icl.instruction.expert", version="1", description="Expert persona, then the task.",
             user="You are an expert in sentiment analysis. {{ instruction }}"),
    Template(id="icl.instruction.examples", version="1", description="Points at the examples.",
             user="{{ instruction }} Follow the format of the examples and give only the answer."),
)


@dataclass
class ICLPrompt:
    """One ICL prompt: which task, instruction and layout, the demonstrations and the query."""

    task: str
    instruction_id: str
    instruction_version: str
    format: PromptFormat
    query: dict[str, Any]
    demos: list[dict[str, Any]]
    source: str | list[dict[str, str]]  # plain text, or chat messages
    gold_answer: str
    answer_format: dict[str, Any] = field(default_factory=dict)
    example_id: str = ""

    @property
    def k(self) -> int:
        return len(self.demos)

    def messages(self) -> list[dict[str, str]]:
        """What the teacher is sent."""
        return self.source if isinstance(self.source, list) else [{"role": "user", "content": self.source}]

    def source_text(self) -> str:
        """The corpus ``source`` cell: plain text, or the messages as JSON."""
        return self.source if isinstance(self.source, str) else json.dumps(self.source, ensure_ascii=False)


def labels_text(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _answer_format(task: Any) -> dict[str, Any]:
    if task.kind == "classification":
        return {"kind": "label", "labels": tuple(task.verbalizers[lab] for lab in task.labels)}
    return {"kind": "tuples", "tuple_arity": len(task.spec.answer.fields)}


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def build_icl_prompts(cfg: ICLDistConfig, data_dir: str | Path | None = None, seed: int = 42) -> list[ICLPrompt]:
    """``cfg.n_prompts`` ICL prompts over the training splits of ``cfg.tasks`` (seeded, deterministic)."""
    from sentidistill.bench import get_task
    from sentidistill.bench.prompting import build_prompt

    if not cfg.tasks:
        raise InputError("icldist.tasks is empty", field="icldist.tasks", expected="at least one task name")
    rng = random.Random(seed)
    tasks = [get_task(name) for name in cfg.tasks]
    pools: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        pool = task.load("train", data_dir=data_dir)
        if not pool:
            raise InputError(f"task '{task.name}' has an empty train split", field="icldist.tasks")
        pools[task.name] = pool
    # Round-robin over a shuffled task order; queries drawn without replacement per task (cycling when spent).
    order = [tasks[i % len(tasks)] for i in range(cfg.n_prompts)]
    rng.shuffle(order)
    query_orders = {t.name: rng.sample(range(len(pools[t.name])), len(pools[t.name])) for t in tasks}
    cursor = dict.fromkeys(pools, 0)
    prompts: list[ICLPrompt] = []
    for n, task in enumerate(order):
        pool = pools[task.name]
        qi = query_orders[task.name][cursor[task.name] % len(pool)]
        cursor[task.name] += 1
        query = pool[qi]
        qtext = _norm(query["text"])
        candidates = [i for i in range(len(pool)) if i != qi and _norm(pool[i]["text"]) != qtext]
        k = rng.randint(cfg.min_shots, cfg.max_shots)
        if k > len(candidates):
            raise InputError(f"task '{task.name}' has {len(candidates)} usable demonstrations, "
                             f"fewer than max_shots={cfg.max_shots}", field="icldist.max_shots")
        demos = [pool[i] for i in rng.sample(candidates, k)]
        tpl = rng.choice(INSTRUCTION_TEMPLATES)
        words = [task.verbalizers[lab] for lab in task.labels] if task.kind == "classification" else []
        instruction = tpl.render(instruction=task.spec.instruction, labels=labels_text(words) if words else "",
                                 kind=task.kind)[-1]["content"]
        fmt = rng.choice(FORMATS)
        prompts.append(ICLPrompt(
            task=task.name, instruction_id=tpl.id, instruction_version=tpl.version, format=fmt, query=query,
            demos=demos, source=build_prompt(task, query, demos, fmt, instruction=instruction), gold_answer=task.answer_text(query),
            answer_format=_answer_format(task), example_id=f"{task.name}:{query.get('id', qi)}:{n}",
        ))
    return prompts


def build_icl_corpus(
    cfg: ICLDistConfig, teacher: Any, out_path: str | Path, data_dir: str | Path | None = None, seed: int = 42
) -> CorpusStats:
    """Ask the teacher every ICL prompt and write the ICLDist corpus (Parquet) at ``out_path``.

    A ``gold_ratio`` share of the examples (seeded) use the gold answer instead (status ``gold``, no teacher
    call). With ``filter_invalid``, answers that failed validation even after repair are not written.
    """
    from sentidistill.core.records import AnswerFormat, SamplingParams, TeacherRequest

    prompts = build_icl_prompts(cfg, data_dir, seed)
    rng = random.Random(seed + 1)
    use_gold = [rng.random() < cfg.gold_ratio for _ in prompts]
    stats = CorpusStats(path=str(out_path), inputs={"prompts": len(prompts), "tasks": list(cfg.tasks)})
    requests: list[TeacherRequest] = []
    for p, gold in zip(prompts, use_gold, strict=True):
        if gold:
            continue
        from sentidistill.bench import get_task

        params = SamplingParams(
            max_tokens=get_task(p.task).spec.max_new_tokens, temperature=0.0, seed=seed,
            logprobs=cfg.top_logprobs > 0, top_logprobs=cfg.top_logprobs,
        )
        requests.append(TeacherRequest(
            messages=p.messages(), params=params, prompt_id=f"{p.instruction_id}.{p.format}",
            prompt_version=p.instruction_version, answer_format=AnswerFormat(**p.answer_format),
            metadata={"task": p.task, "example_id": p.example_id},
        ))
    stats.requests = len(requests)
    responses: list[Any] = []
    if requests:
        if teacher is None:
            raise InputError("ICLDist needs a teacher unless gold_ratio is 1", field="icldist.gold_ratio")
        try:
            responses = teacher.generate(requests, on_budget="return")
        except BudgetExceeded as exc:
            responses = getattr(exc, "responses", None) or []
            log.warning("teacher budget exhausted: %s", exc)
    answers = iter(zip(requests, responses, strict=False))
    rows: list[dict[str, Any]] = []
    for p, gold in zip(prompts, use_gold, strict=True):
        base = {"source": p.source_text(), "task": p.task, "gold": p.gold_answer, "example_id": p.example_id,
                "prompt_id": f"{p.instruction_id}.{p.format}", "prompt_version": p.instruction_version}
        if gold:
            rows.append({**base, "target": p.gold_answer, "status": "gold", "teacher_logprobs": None})
            stats.count(stats.by_status, "gold")
            stats.count(stats.by_task, p.task)
            continue
        pair = next(answers, None)
        if pair is None:
            stats.count(stats.dropped, "unanswered")
            continue
        _, resp = pair
        stats.count(stats.by_status, resp.status)
        # A reasoning teacher's thinking is split off: the student learns the answer, the corpus keeps both.
        reasoning, answer = split_reasoning(resp.text)
        reasoning = resp.reasoning if resp.reasoning is not None else reasoning
        if resp.status in ("error", "missing", "truncated") or not answer:
            stats.count(stats.dropped, "truncated" if resp.status == "truncated" else "error")
            continue
        if resp.status == "invalid" and cfg.filter_invalid:
            stats.count(stats.dropped, "invalid")
            continue
        stats.with_reasoning += reasoning is not None
        target = answer
        if isinstance(resp.parsed, str) and resp.status in ("valid", "repaired"):
            # Chat teachers wrap labels in prose ("The sentiment is positive."): the student learns the
            # canonical label word, as the bench scores it.
            target = resp.parsed
        logprobs = None
        # The log-probs cover the whole reply (a thinking block included): they describe the target only
        # when the reply is exactly the target.
        if resp.logprobs and target == resp.text.strip():
            # Python-mode dump: -inf/NaN stay floats and json writes them as -Infinity/NaN, which the reader
            # (train.align, through core.records.parse_logprob) reads back; mode="json" would make them null.
            logprobs = json.dumps([t.model_dump() for t in resp.logprobs], ensure_ascii=False)
        elif resp.logprobs:
            # The log-probs describe the prose, not the label we train on: sequence-level KD only.
            stats.logprobs_dropped += 1
        rows.append({**base, "target": target, "status": resp.status, "teacher_logprobs": logprobs,
                     "reasoning": reasoning})
        stats.count(stats.by_task, p.task)
    stats.teacher = dict(getattr(teacher, "stats", {}) or {})
    if not rows:
        raise InputError(f"the ICL corpus would be empty (dropped: {stats.dropped})", path=out_path)
    write_corpus(rows, out_path)
    stats.rows = len(rows)
    log.info("ICL corpus: %d rows -> %s (dropped %s)", len(rows), out_path, stats.dropped or "none")
    return stats

"""SentiBench through a teacher endpoint: ``TeacherAdapter(build_teacher(...))`` against a live
``sentidistill serve`` (uvicorn on 127.0.0.1) over a tiny LM trained to answer sst2 chat prompts.

The expected restricted picks are recomputed here from a separate request made with the openai client
itself, so the adapter's reading of the teacher's ``TokenLogprob.top`` is checked against the wire.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench_teacher_lm import VERBOSE, sentiment_lm, write_sst2_folder
from sentidistill.bench import get_task
from sentidistill.bench.models import TeacherAdapter, label_scores_from_logprobs
from sentidistill.bench.runner import run_bench
from sentidistill.config import TeacherConfig
from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer
from sentidistill.teacher import TokenLogprob, build_teacher

N_TEST = 8


@pytest.fixture(scope="module")
def server(tiny_causal_dir: Path):
    with BackgroundServer(create_app(str(sentiment_lm(tiny_causal_dir)), served_model_name="tiny",
                                     device="cpu")) as srv:
        yield srv


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sst2_folder(tmp_path_factory.mktemp("data"), n_test=N_TEST)


def adapter_for(server, cache: Path, top_logprobs: int = 5) -> TeacherAdapter:
    # repair_attempts stays at its default (2): the adapter must switch repairs off for its own requests.
    cfg = TeacherConfig(kind="openai", model="tiny", base_url=server.base_url + "/v1", concurrency=4)
    return TeacherAdapter(build_teacher(cfg, cache, progress=False), top_logprobs=top_logprobs)


def served_requests(base_url: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(base_url + "/metrics").text):
        for s in fam.samples:
            if s.name == "sentidistill_requests_total" and s.labels.get("endpoint") == "/v1/chat/completions":
                total += s.value
    return total


def read_predictions(out: Path) -> list[dict]:
    lines = (out / "predictions" / "sst2.seed42.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def hand_macro_f1(rows: list[dict], labels: list[str]) -> float:
    """Macro-F1 over ``labels`` from (parsed, gold) pairs; an unparseable answer is wrong for every label."""
    f1s = []
    for lab in labels:
        tp = sum(r["parsed"] == lab and r["gold"] == lab for r in rows)
        fp = sum(r["parsed"] == lab and r["gold"] != lab for r in rows)
        fn = sum(r["parsed"] != lab and r["gold"] == lab for r in rows)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)


def check_metrics(out: Path, scoring: str) -> dict:
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    entry = metrics["tasks"]["sst2"]
    assert entry["n"] == N_TEST and entry["scoring"] == scoring and entry["metric"] == "macro_f1"
    # The score and the unparseable rate are what the predictions file says, recomputed by hand here.
    rows = read_predictions(out)
    assert entry["score"] == pytest.approx(hand_macro_f1(rows, get_task("sst2").labels), abs=1e-9)
    assert entry["unparseable_rate"] == pytest.approx(sum(r["parsed"] is None for r in rows) / len(rows))
    assert metrics["sentibench_score"] == entry["score"] and metrics["items"] == N_TEST
    assert metrics["model"]["name"] == "tiny" and metrics["model"]["kind"] == "teacher"
    return metrics


def expected_pick(top: list[tuple[str, float]], text: str, words: list[str], task) -> str | None:
    """The restricted rule, written out independently: best label whose word the alternative starts
    (after stripping and lower-casing), unambiguous prefixes only; else the parsed text."""
    best: dict[str, float] = {}
    for tok, lp in top:
        t = tok.strip().lower()
        owners = [w for w in words if t and w.lower().startswith(t)]
        if len(owners) == 1 and lp > best.get(owners[0], float("-inf")):
            best[owners[0]] = lp
    if best:
        return task.parse(max(best, key=best.__getitem__))
    return task.parse(text)


@pytest.mark.parametrize("k", [5, 1])
def test_restricted_pick_is_argmax_of_first_token_topk(server, data_dir: Path, tmp_path: Path, k: int) -> None:
    task = get_task("sst2")
    words = [task.verbalizers[lab] for lab in task.labels]
    adapter = adapter_for(server, tmp_path / "cache.sqlite", top_logprobs=k)
    try:
        run_bench(adapter, ["sst2"], shots=0, scoring="restricted", out_dir=tmp_path / "out", data_dir=data_dir)
        stats = adapter.teacher.stats
    finally:
        adapter.close()
    assert stats["sent"] == N_TEST and stats["repaired"] == 0 and adapter.errors == 0, stats
    check_metrics(tmp_path / "out", "restricted")
    rows = read_predictions(tmp_path / "out")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
    vias = set()
    for row in rows:
        assert {"prompt", "raw", "parsed", "gold", "correct", "via", "response"} <= set(row)
        assert isinstance(row["prompt"], list) and row["prompt"][-1]["content"] == f"Sentence: {row['text']}"
        assert row["correct"] == (row["parsed"] == row["gold"])
        wire = client.chat.completions.create(model="tiny", messages=row["prompt"], max_tokens=16, temperature=0,
                                              logprobs=True, top_logprobs=k).choices[0]
        top = [(a.token, a.logprob) for a in wire.logprobs.content[0].top_logprobs]
        assert row["response"] == wire.message.content
        assert row["parsed"] == expected_pick(top, wire.message.content, words, task)
        vias.add(row["via"])
        if row["via"] == "logprobs":
            assert [t for t, _ in row["top"]] == [t for t, _ in top]
            assert [v for _, v in row["top"]] == pytest.approx([v for _, v in top], abs=1e-4)
            scored = {lab: v for lab, v in row["label_scores"].items() if v is not None}
            assert row["parsed"] == max(scored, key=scored.__getitem__)
    if k == 1:
        # "The sentiment is positive": the only alternative is "The", so the text decides ...
        verbose = [r for r in rows if r["text"].endswith(VERBOSE)]
        assert verbose and all(r["via"] == "text" and r["response"].startswith("The sentiment is") for r in verbose)
        assert all(r["parsed"] == task.parse(r["response"]) is not None for r in verbose)
        # ... while a bare answer ("positive", or "ne"+"gative") is read from its first token.
        assert "logprobs" in vias
    else:
        assert vias == {"logprobs"}  # with 5 alternatives a label token is always among them


def test_generate_scores_the_greedy_text(server, data_dir: Path, tmp_path: Path) -> None:
    task = get_task("sst2")
    adapter = adapter_for(server, tmp_path / "cache.sqlite")
    try:
        run_bench(adapter, ["sst2"], shots=0, scoring="generate", out_dir=tmp_path / "out", data_dir=data_dir)
    finally:
        adapter.close()
    check_metrics(tmp_path / "out", "generate")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
    rows = read_predictions(tmp_path / "out")
    for row in rows:
        wire = client.chat.completions.create(model="tiny", messages=row["prompt"], temperature=0,
                                              max_tokens=task.spec.max_new_tokens).choices[0].message.content
        assert row["raw"] == wire and row["parsed"] == task.parse(wire)
    verbose = [r for r in rows if r["text"].endswith(VERBOSE)]
    assert verbose and all(r["raw"].startswith("The sentiment is") and r["parsed"] is not None for r in verbose)


def test_rerun_and_half_finished_task_cost_no_requests(server, data_dir: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache.sqlite"
    adapter = adapter_for(server, cache)
    try:
        first = run_bench(adapter, ["sst2"], shots=0, out_dir=out, data_dir=data_dir)
    finally:
        adapter.close()
    preds = read_predictions(out)

    # Finished: the adapter is not even asked.
    before = served_requests(server.base_url)
    adapter = adapter_for(server, cache)
    try:
        again = run_bench(adapter, ["sst2"], shots=0, out_dir=out, data_dir=data_dir)
        assert adapter.teacher.stats["requested"] == 0
    finally:
        adapter.close()
    assert again["tasks"]["sst2"]["resumed_seeds"] == [42] and again["sentibench_score"] == first["sentibench_score"]

    # Killed after the teacher answered but before the task was recorded: the teacher cache answers it.
    shutil.rmtree(out / "progress")
    adapter = adapter_for(server, cache)
    try:
        redo = run_bench(adapter, ["sst2"], shots=0, out_dir=out, data_dir=data_dir)
        stats = adapter.teacher.stats
    finally:
        adapter.close()
    assert stats["cache_hits"] == N_TEST and stats["sent"] == 0, stats
    assert served_requests(server.base_url) == before
    assert redo["tasks"]["sst2"]["resumed_seeds"] == [] and redo["sentibench_score"] == first["sentibench_score"]
    assert read_predictions(out) == preds


def test_label_scores_look_through_leading_whitespace() -> None:
    words = ["negative", "positive"]
    nl = TokenLogprob(token="\n", logprob=-0.1, top=[("\n", -0.1), ("The", -3.0)])
    label = TokenLogprob(token="ne", logprob=-0.2, top=[("ne", -0.2), (" Positive", -1.9), ("n", -4.0)])
    # The path "\n" + "ne" (cut off) starts only "negative": -0.1 + -0.2; the alternative "n" adds
    # -0.1 + -4.0 (another token sequence); " Positive" at the second position: -0.1 + -1.9.
    scores, top = label_scores_from_logprobs([nl, label], words)
    assert scores == pytest.approx([math.log(math.exp(-0.3) + math.exp(-4.1)), -2.0]) and top == label.top
    # The first real token ends the search: "The sentiment is positive" has no label alternatives up front.
    the = TokenLogprob(token="The", logprob=-0.1, top=[("The", -0.1), ("A", -3.0)])
    assert label_scores_from_logprobs([the, label], words) == ([None, None], the.top)
    assert label_scores_from_logprobs([], words) == ([None, None], [])


def test_bench_switches_teacher_repairs_off_and_back_on(tiny_causal_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    # The untrained tiny model answers only newlines: "empty" to the teacher's validator, which would re-ask.
    cfg = TeacherConfig(kind="transformers", model=str(tiny_causal_dir), repair_attempts=2, extra={"device": "cpu"})
    adapter = TeacherAdapter(build_teacher(cfg, None, progress=False))
    try:
        run_bench(adapter, ["sst2"], shots=0, scoring="generate", out_dir=tmp_path / "out", data_dir=data_dir)
        stats = adapter.teacher.stats
        assert adapter.teacher.cfg.repair_attempts == 2  # a shared teacher keeps its own policy
    finally:
        adapter.close()
    assert stats["sent"] == N_TEST and stats["repaired"] == 0 and stats["invalid"] == N_TEST, stats
    rows = read_predictions(tmp_path / "out")
    assert all(not r["raw"].strip() and r["parsed"] is None for r in rows)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["tasks"]["sst2"]["unparseable_rate"] == 1.0

"""Non-finite log-probs from an endpoint (issue 24, field report 1), on every path that reads them.

OpenAI-compatible servers (aphrodite, lmdeploy, mlx) report an alternative at ``logprob: -inf`` at low
temperature; some write NaN, a JSON string ``"-Infinity"`` or ``null``. ``-inf`` is probability 0 (a real
answer: the text is kept); NaN/``null`` is "unknown" (the row falls back to the generated text, and the
stats say so). The end-to-end cases go through a real HTTP teacher on 127.0.0.1 (tests/teacher_server.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentidistill.core.records import TeacherResponse, TokenLogprob, parse_logprob
from sentidistill.distill.calibration import softmax_logprobs
from sentidistill.teacher.label_scores import label_logprobs_from_top_logprobs
from sentidistill.teacher.restricted import response_label_logprobs, usable_scores
from teacher_server import running_server, server_stats
from toy_task import write_toy_task

INF = math.inf
WORDS3 = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(("raw", "want"), [
    (-1.5, -1.5), ("-1.5", -1.5), (-INF, -INF), ("-Infinity", -INF), ("-inf", -INF), (" -Infinity ", -INF),
    (0, 0.0), (1e-7, 0.0), (math.nan, math.nan), ("NaN", math.nan), (None, math.nan), (INF, math.nan),
    ("Infinity", math.nan), ("abc", math.nan), (True, math.nan), ([], math.nan),
])
def test_parse_logprob_reads_every_spelling(raw, want):
    got = parse_logprob(raw)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def _pos(token, lp, top):
    return TokenLogprob(token=token, logprob=lp, top=top)


def test_minus_inf_alternative_is_probability_zero_not_nan():
    # The issue's case, one text: "positive" generated, "negative" an alternative at -inf.
    scores = label_logprobs_from_top_logprobs([_pos("positive", -0.1, [("positive", -0.1), ("negative", -INF)])],
                                              ["negative", "positive"])
    assert scores == [-INF, -0.1]
    assert usable_scores(scores)
    np.testing.assert_allclose(softmax_logprobs(np.array([scores])), [[0.0, 1.0]])


def test_string_and_json_spellings_reach_the_same_scores():
    # What the openai client hands over when the server wrote "-Infinity" as a string, or null.
    tl = TokenLogprob.model_validate({"token": "neutral", "logprob": "-0.2",
                                      "top": [["neutral", "-0.2"], ["positive", "-Infinity"], ["negative", None]]})
    assert tl.logprob == -0.2 and tl.top[1] == ("positive", -INF) and math.isnan(tl.top[2][1])
    scores = label_logprobs_from_top_logprobs([tl], WORDS3)
    assert math.isnan(scores[0]) and scores[1] == -0.2 and scores[2] == -INF  # null: unknown, not 0
    assert not usable_scores(scores)


def test_all_labels_minus_inf_is_minus_inf_and_falls_back_to_the_text():
    # Several readings of one label at -inf (log-sum-exp of only -inf) must stay -inf, never NaN.
    tl = _pos("Positive", -INF, [("Positive", -INF), ("positive", -INF), ("negative", -INF), ("neutral", -INF)])
    scores = label_logprobs_from_top_logprobs([tl], WORDS3)
    assert scores == [-INF, -INF, -INF]
    assert np.isnan(softmax_logprobs(np.array([scores]))).all()  # says nothing: never a uniform guess
    resp = TeacherResponse(text="Positive", logprobs=[tl])
    row, how = response_label_logprobs(resp, WORDS3, parse=lambda t: 2 if "ositive" in t else None)
    assert (row, how) == ([-INF, -INF, 0.0], "text")
    row, how = response_label_logprobs(resp, WORDS3, parse=lambda t: None)
    assert how == "none" and all(math.isnan(x) for x in row)


def test_nan_generated_token_makes_its_label_unknown():
    # Greedy wrote "positive" (probability unknown), "negative" is an alternative at -2: reading the row as
    # "negative" would flip the answer. The label is unknown, the row falls back to the text.
    tl = _pos("positive", math.nan, [("positive", math.nan), ("negative", -2.0)])
    scores = label_logprobs_from_top_logprobs([tl], ["negative", "positive"])
    assert scores[0] == -2.0 and math.isnan(scores[1])
    row, how = response_label_logprobs(TeacherResponse(text="positive", logprobs=[tl]), ["negative", "positive"],
                                       parse=lambda t: 1 if t == "positive" else None)
    assert (row, how) == ([-INF, 0.0], "text")


def test_exact_scores_with_minus_inf_and_nan():
    words = ["negative", "positive"]  # case variants: negative, Negative, positive, Positive
    resp = TeacherResponse(text="", label_logprobs=[-INF, -INF, -0.5, "-Infinity"])
    row, how = response_label_logprobs(resp, words)
    assert how == "exact" and row == [-INF, -0.5]
    resp = TeacherResponse(text="", label_logprobs=[-INF, -INF, -INF, -INF])
    assert response_label_logprobs(resp, words)[1] == "none"  # all -inf: nothing to read, no text to parse
    resp = TeacherResponse(text="positive", label_logprobs=[-1.0, -1.0, math.nan, -0.5])
    row, how = response_label_logprobs(resp, words, parse=lambda t: 1)
    assert how == "text"


def test_cached_response_round_trips_minus_inf_and_nan():
    resp = TeacherResponse(text="x", label_logprobs=[-INF, -0.5],
                           logprobs=[_pos("x", -0.1, [("x", -0.1), ("y", -INF), ("z", math.nan)])])
    back = TeacherResponse.model_validate_json(resp.model_dump_json())
    assert back.label_logprobs == [-INF, -0.5]
    assert back.logprobs[0].top[1] == ("y", -INF) and math.isnan(back.logprobs[0].top[2][1])


def test_token_level_kd_entries_drop_nonfinite_alternatives():
    from sentidistill.train.align import _entry_fields, parse_teacher_logprobs

    # A corpus cell as distill.icl writes it (json.dumps of the python dump: -Infinity / NaN constants).
    cell = json.dumps([TokenLogprob(token="pos", logprob=-0.1, top=[("pos", -0.1), ("neg", -INF), ("neu", math.nan),
                                                                      ("ok", -3.0)]).model_dump()])
    entries = parse_teacher_logprobs(cell)
    token, lp, top = _entry_fields(entries[0])
    assert (token, lp, top) == ("pos", -0.1, [("pos", -0.1), ("ok", -3.0)])
    token, lp, top = _entry_fields({"token": "pos", "logprob": None, "top": [["pos", "-Infinity"]]})
    assert math.isnan(lp) and top == []


# -- end to end, through a real HTTP teacher ----------------------------------------------------------

def _task(tmp_path, texts, labels=("negative", "positive")):
    return write_toy_task(tmp_path, [{"t": t, "y": labels[0]} for t in texts], labels=labels,
                          instruction="Classify the sentiment.")


def _soft_labels(tmp_path, url, task, cache):
    from sentidistill.config import SoftLabelsConfig, TeacherConfig
    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.distill.soft_labels import build_soft_label_corpus
    from sentidistill.teacher import build_teacher

    cfg = SoftLabelsConfig(enabled=True, tasks=[str(task)], n_per_task=None, calibration="none", dedupe=False,
                           balance="none", dev_fraction=0.0, top_logprobs=5)
    teacher = build_teacher(TeacherConfig(kind="openai", model="toy", base_url=url + "/v1", max_retries=0,
                                          repair_attempts=0), cache, progress=False)
    try:
        stats = build_soft_label_corpus(cfg, teacher, tmp_path / "soft.parquet", seed=0)
    finally:
        teacher.close()
    return stats, {r["text"]: r for r in read_soft_labels(tmp_path / "soft.parquet")}


def test_issue_case_six_texts_three_at_minus_inf_over_http(tmp_path):
    # 6 texts; the lexicon teacher answers "positive" with "negative" as an alternative, at -inf for 3 of them.
    texts = [f"a great film number {i}" + (" <<lp:negative=-inf>>" if i % 2 else "") for i in range(6)]
    task = _task(tmp_path, texts)
    with running_server() as url:
        stats, rows = _soft_labels(tmp_path, url, task, tmp_path / "cache.sqlite")
        sent = server_stats(url)["total"]
        # The same run again reads every answer from the cache (-inf survives the round trip) and agrees.
        (tmp_path / "soft.parquet").unlink()
        again, rows2 = _soft_labels(tmp_path, url, task, tmp_path / "cache.sqlite")
        assert server_stats(url)["total"] == sent == 6
    assert len(rows) == 6 and rows2 == rows
    assert stats.tasks["toy"]["scored"] == 6 and stats.tasks["toy"]["unusable"] == 0
    assert stats.tasks["toy"]["via"] == {"logprobs": 6} == again.tasks["toy"]["via"]
    for t, r in rows.items():
        if "<<lp:" in t:
            assert r["probs_raw"] == [0.0, 1.0] and r["teacher_logprobs"][0] == -INF
        else:
            assert 0.5 < r["probs_raw"][1] < 1.0  # the runner-up label at -1.5 nats: 0.82


@pytest.mark.parametrize(("directive", "want_via", "want_probs"), [
    # A string "-Infinity" on the wire reads as -inf.
    ("<<lp:negative=str:-Infinity>>", "logprobs", [0.0, 0.0, 1.0]),
    # The competing label named with NaN / null: unknown, so the row is read from the text, and says so.
    ("<<lp:negative=nan>>", "text", [0.0, 0.0, 1.0]),
    ("<<lp:neutral=null>>", "text", [0.0, 0.0, 1.0]),
    # Every label at -inf (the generated one too): the log-probs say nothing; the text decides.
    ("<<lp:positive=-inf,negative=-inf,neutral=-inf>>", "text", [0.0, 0.0, 1.0]),
    # The generated label at -inf, "neutral" at -2: the probability sits on neutral, read from log-probs.
    ("<<lp:positive=-inf,negative=-inf,neutral=-2>>", "logprobs", [0.0, 1.0, 0.0]),
])
def test_three_labels_with_nonfinite_wire_values_over_http(tmp_path, directive, want_via, want_probs):
    texts = ["a great day " + directive, "a great night", "a bad night"]
    task = _task(tmp_path, texts, labels=("negative", "neutral", "positive"))
    with running_server() as url:
        stats, rows = _soft_labels(tmp_path, url, task, None)
    assert len(rows) == 3 and stats.tasks["toy"]["unusable"] == 0
    r = rows[texts[0]]
    assert r["via"] == want_via and r["probs_raw"] == want_probs
    assert stats.tasks["toy"]["via"].get(want_via, 0) >= 1
    assert sum(stats.tasks["toy"]["via"].values()) == 3
    assert all(not any(math.isnan(p) for p in row["probs_raw"]) for row in rows.values())


def test_bench_teacher_adapter_reads_minus_inf_and_falls_back_on_nan(tmp_path):
    from sentidistill.bench.models import TeacherAdapter
    from sentidistill.config import TeacherConfig
    from sentidistill.teacher import build_teacher

    prompts = [
        [{"role": "user", "content": "<<reply:neutral>> <<lp:positive=-inf>>"}],  # read from log-probs
        [{"role": "user", "content": "<<reply:neutral>> <<lp:positive=-inf,negative=nan>>"}],  # unknown: text
        [{"role": "user", "content": "<<reply:neutral>> <<lp:neutral=-inf,positive=-inf,negative=-inf>>"}],
    ]
    with running_server() as url:
        adapter = TeacherAdapter(build_teacher(TeacherConfig(kind="openai", model="toy", base_url=url + "/v1",
                                                             max_retries=0), None, progress=False), top_logprobs=5)
        try:
            answers = adapter.choose(prompts, WORDS3, task="toy")
        finally:
            adapter.close()
    assert [a.text for a in answers] == ["neutral"] * 3
    assert [a.meta["via"] for a in answers] == ["logprobs", "text", "text"]
    assert answers[0].scores[2] == -INF and answers[0].scores[0] is None

"""Corpus builders: ICL prompts (no query leaks, k bounds), the ICL corpus from a real HTTP teacher, KnowDist replay."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sentidistill.config import ICLDistConfig, KnowDistConfig, TeacherConfig
from sentidistill.distill import build_icl_corpus, build_icl_prompts, build_knowdist_corpus, read_corpus
from teacher_server import running_server


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    """A data folder in the SentiBench layout: sst2 (with a duplicated sentence) and pstance train splits."""
    sst = [{"sentence": f"<<reply:positive>> movie number {i} was {'great' if i % 2 else 'dull'}",
            "label": "positive" if i % 2 else "negative"} for i in range(12)]
    sst.append(dict(sst[0]))  # the same sentence twice: it must not be its own demonstration either
    pst = [{"sentence": f"<<reply:positive>> tweet {i}", "target": "Trump", "label": "FAVOR" if i % 2 else "AGAINST"}
           for i in range(10)]
    for rel, rows in (("sentibench/sc/sst2/train.json", sst), ("sentibench/multifaced/pstance/train.json", pst)):
        p = tmp_path / "data" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rows), encoding="utf-8-sig")
    return tmp_path / "data"


def test_icl_prompts_never_leak_the_query_and_respect_k(tiny_data: Path) -> None:
    cfg = ICLDistConfig(tasks=["sst2", "pstance"], n_prompts=60, min_shots=1, max_shots=3)
    prompts = build_icl_prompts(cfg, tiny_data, seed=7)
    assert len(prompts) == 60
    assert {p.task for p in prompts} == {"sst2", "pstance"}
    assert {p.format for p in prompts} == {"plain", "chat"}
    assert len({p.instruction_id for p in prompts}) >= 3
    ks = [p.k for p in prompts]
    assert min(ks) >= 1 and max(ks) <= 3 and len(set(ks)) == 3
    for p in prompts:
        q = " ".join(p.query["text"].split()).casefold()
        assert all(" ".join(d["text"].split()).casefold() != q for d in p.demos)
        assert all(d["id"] != p.query["id"] for d in p.demos)
        # The query closes the prompt; every demonstration appears with its gold answer.
        if p.format == "plain":
            last_block = p.source.rsplit("Label: ", 1)[-1]  # after the last demonstration's answer
            assert p.source.endswith("Label:") and p.query["text"] in last_block
        else:
            assert p.source[-1]["role"] == "user" and p.query["text"] in p.source[-1]["content"]
            assert len(p.source) == 2 + 2 * p.k
    # Deterministic for a seed, different for another.
    again = build_icl_prompts(cfg, tiny_data, seed=7)
    assert [p.source for p in again] == [p.source for p in prompts]
    assert [p.source for p in build_icl_prompts(cfg, tiny_data, seed=8)] != [p.source for p in prompts]
    zero = build_icl_prompts(ICLDistConfig(tasks=["sst2"], n_prompts=5, min_shots=0, max_shots=0), tiny_data, 1)
    assert all(p.k == 0 for p in zero)


def test_icl_corpus_from_a_real_http_teacher(tiny_data: Path, tmp_path: Path) -> None:
    from sentidistill.teacher import build_teacher

    cfg = ICLDistConfig(tasks=["sst2", "pstance"], n_prompts=24, min_shots=0, max_shots=2, top_logprobs=3,
                        gold_ratio=0.25, filter_invalid=True)
    out = tmp_path / "icl.parquet"
    with running_server() as url:
        tcfg = TeacherConfig(kind="openai", base_url=url + "/v1", model="echo", max_retries=0, repair_attempts=1)
        with build_teacher(tcfg, tmp_path / "cache.sqlite", progress=False) as teacher:
            stats = build_icl_corpus(cfg, teacher, out, tiny_data, seed=3)
    rows = read_corpus(out)
    assert stats.rows == len(rows) > 0
    gold = [r for r in rows if r["status"] == "gold"]
    teacher_rows = [r for r in rows if r["status"] != "gold"]
    assert gold and all(r["teacher_logprobs"] is None and r["target"] == r["gold"] for r in gold)
    # The server always answers "positive": valid for sst2, invalid for pstance (favor/against) -> filtered, counted.
    assert {r["task"] for r in teacher_rows} == {"sst2"}
    assert stats.dropped.get("invalid", 0) == stats.by_status.get("invalid", 0) > 0
    assert stats.rows + stats.dropped["invalid"] == cfg.n_prompts
    for r in teacher_rows:
        assert r["target"] == "positive" and r["status"] in ("valid", "repaired")
        lp = json.loads(r["teacher_logprobs"])
        assert [e["token"] for e in lp] == ["positive"] and len(lp[0]["top"]) == 3
        if r["source"].startswith("[{"):
            assert json.loads(r["source"])[-1]["role"] == "user"


def test_knowdist_corpus_from_a_real_http_teacher(tiny_data: Path, tmp_path: Path) -> None:
    from sentidistill.config import ReviewsConfig
    from sentidistill.teacher import build_teacher

    reviews = tmp_path / "reviews.jsonl"
    texts = ["The pizza was cold but the staff were lovely.", "Great battery, awful screen.", "ok",
             "The pizza was cold but the staff were lovely."]
    reviews.write_text("\n".join(json.dumps({"review": t}) for t in texts), encoding="utf-8")
    cfg = KnowDistConfig(reviews=ReviewsConfig(source=str(reviews), text_field="review", min_chars=5, limit=None),
                         prompt_types=["overall", "aspects"], max_tokens=64)
    out = tmp_path / "kd.parquet"
    with running_server() as url:
        tcfg = TeacherConfig(kind="openai", base_url=url + "/v1", model="echo", max_retries=0, repair_attempts=0)
        with build_teacher(tcfg, tmp_path / "cache.sqlite", progress=False) as teacher:
            stats = build_knowdist_corpus(cfg, teacher, out, seed=1)
    rows = read_corpus(out)
    # 2 reviews kept (one duplicate, one too short) x 2 prompt types = 4 requests; the echo answer is free
    # text (valid for "overall") but not a list of tuples (invalid for "aspects": dropped and counted).
    assert stats.inputs["reviews"] == 2 and stats.requests == 4
    assert stats.dropped == {"invalid": 2} and stats.rows == 2 == len(rows)
    assert all(r["source"].startswith("analyse sentiment: ") and r["task"] == "knowdist.overall" for r in rows)
    assert all(r["target"].startswith("echo: ") and r["prompt_version"] for r in rows)


def test_knowdist_corpus_from_the_released_replay_file(shared_data_dir: Path, tmp_path: Path) -> None:
    replay = shared_data_dir / "fsa" / "teacher_sample" / "mixtral_yelp_500.jsonl"
    if not replay.exists():
        pytest.skip(f"{replay} not present")
    from sentidistill.config import ReviewsConfig

    cfg = KnowDistConfig(replay_path=replay, reviews=ReviewsConfig(limit=50))
    stats = build_knowdist_corpus(cfg, None, tmp_path / "kd.parquet")
    rows = read_corpus(tmp_path / "kd.parquet")
    assert stats.rows == len(rows) == 50 and stats.requests == 0
    assert sum(stats.dropped.values()) + 50 == stats.inputs["read"] == 500
    first = json.loads(replay.read_text(encoding="utf-8-sig").splitlines()[0])
    assert rows[0]["source"].endswith(first["Text"].strip()) and rows[0]["target"] == first["mixtral_response"].strip()
    assert {r["status"] for r in rows} == {"unchecked"} and all(r["gold"] in "12345" for r in rows)

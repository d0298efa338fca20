"""Replay backend (released Mixtral corpus, cache exports) and the prompt templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.config import TeacherConfig
from sentidistill.errors import InputError
from sentidistill.prompts import get_template, list_templates
from sentidistill.teacher import ResponseCache, SamplingParams, TeacherRequest, TeacherResponse, build_teacher


def test_knowdist_templates_render() -> None:
    ids = list_templates("knowdist.")
    assert ids == ["knowdist.aspects", "knowdist.emotions", "knowdist.implicit", "knowdist.overall", "knowdist.rewrite"]
    t = get_template("knowdist.aspects")
    req = t.request(params=SamplingParams(max_tokens=64), text="The pizza was cold but the staff were lovely.")
    assert req.prompt_id == "knowdist.aspects" and req.prompt_version == t.version
    assert req.answer_format.kind == "tuples" and req.answer_format.tuple_arity == 4
    assert [m["role"] for m in req.messages] == ["system", "user"]
    assert "The pizza was cold but the staff were lovely." in req.messages[1]["content"]
    assert "{{" not in req.messages[1]["content"] and req.metadata["text"].startswith("The pizza")
    with pytest.raises(InputError, match="needs \\['text'\\]"):
        t.render()
    with pytest.raises(InputError, match="unknown prompt template"):
        get_template("knowdist.nope")
    # Different templates and versions never share a cache key.
    keys = {get_template(i).request(text="x").cache_key("m") for i in ids}
    assert len(keys) == len(ids)


def test_replay_mixtral_sample(shared_data_dir: Path, tmp_path: Path) -> None:
    path = shared_data_dir / "fsa" / "teacher_sample" / "mixtral_yelp_500.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
    t = get_template("knowdist.rewrite")
    reqs = [t.request(text=r["Text"]) for r in rows[:20]]
    reqs.append(t.request(text="A review nobody recorded."))
    cfg = TeacherConfig(kind="replay", replay_path=path)
    with build_teacher(cfg, tmp_path / "c.sqlite", progress=False) as teacher:
        out = teacher.generate(reqs)
        s = teacher.stats
    assert [r.text for r in out[:20]] == [r["mixtral_response"].strip() for r in rows[:20]]
    assert out[20].status == "missing" and "no recorded answer" in out[20].error
    assert (s["missing"], s["unchecked"], s["errors"]) == (1, 20, 0)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert len(cache) == 20  # missing answers are not cached


def test_replay_of_a_cache_export(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "orig.sqlite")
    reqs = [TeacherRequest(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    for i, r in enumerate(reqs[:2]):
        cache.put(r.cache_key("gpt-x"), r, TeacherResponse(text=f"a{i}", model="gpt-x", usage={"prompt_tokens": 3}))
    cache.export(tmp_path / "export.jsonl")
    cache.close()
    with build_teacher(TeacherConfig(kind="replay", replay_path=tmp_path / "export.jsonl"), None, progress=False) as t:
        assert t.model_id == "gpt-x"
        out = t.generate(reqs)
    assert [r.text for r in out] == ["a0", "a1", ""] and out[2].status == "missing"


def test_replay_by_prompt_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"prompt": "Is it good?", "answer": "yes"}\n')
    with build_teacher(TeacherConfig(kind="replay", replay_path=p), None, progress=False) as t:
        out = t.generate([TeacherRequest(messages=[{"role": "user", "content": " Is it  good?"}])])
    assert out[0].text == "yes"
    p.write_text('{"prompt": "Is it good?", "answer": "yes"}\n{"answer": "no prompt"}\n')
    with pytest.raises(InputError, match="line 2, field 'prompt'"):
        build_teacher(TeacherConfig(kind="replay", replay_path=p), None)

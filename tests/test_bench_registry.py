"""The task registry, the task schema's errors, a user's own YAML task, prompts and demonstrations."""

from __future__ import annotations

import json

import pytest
import yaml

from sentidistill.bench import get_task, list_suites, list_tasks
from sentidistill.bench.prompting import random_demos, select_demos
from sentidistill.errors import InputError

SENTIBENCH = ["imdb", "yelp2", "sst2", "twitter", "irony18", "emotion", "pstance", "intimacy",
              "atsa_rest16", "acsa_rest16", "asqp_rest16", "opener"]


def test_suites_and_order():
    assert set(list_suites()) >= {"sentibench", "sentibench-cls", "fsa", "extra"}
    assert list_tasks("sentibench") == SENTIBENCH
    assert list_tasks("sentibench-cls") == SENTIBENCH[:8]
    fsa = list_tasks("fsa")
    assert {"fsa_atsa_rest14", "fsa_atsa_rest14_hard", "fsa_acsa_laptop16_hard", "aste_16res"} <= set(fsa)
    assert get_task("fsa_acsa_rest16_hard").spec.eval_split == "hard_test"
    assert {"sst5", "mr", "tweeteval_hate", "stance_hillary", "yelp5"} <= set(list_tasks("extra"))
    cats = {get_task(n).category for n in SENTIBENCH}
    assert cats == {"basic", "multifaceted", "fine-grained"}
    with pytest.raises(InputError, match="unknown suite"):
        list_tasks("nope")
    with pytest.raises(InputError, match="did you mean"):
        get_task("sst")


def _write_user_task(tmp_path, **overrides):
    data = tmp_path / "mydata"
    data.mkdir(exist_ok=True)
    rows = [{"review": f"the soup was great number {i}", "y": "good"} for i in range(12)]
    rows += [{"review": f"cold soup and rude staff {i}", "y": "bad"} for i in range(6)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (data / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[::3]) + "\n")
    spec = {
        "name": "my_soup",
        "category": "basic",
        "kind": "classification",
        "loader": {"format": "jsonl", "splits": {"train": "train.jsonl", "test": "test.jsonl"},
                   "options": {"text_field": "review", "label_field": "y"}},
        "labels": [{"name": "good", "verbalizer": "positive"}, {"name": "bad", "verbalizer": "negative"}],
        "instruction": "Is the soup review positive or negative?",
        "prompt": {"input_template": "Review: {text}", "answer_prefix": "Answer:"},
        "demos": {"k": 2},
        "metric": "macro_f1",
    }
    spec.update(overrides)
    path = tmp_path / "my_task.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, data


def test_user_yaml_task_on_own_data(tmp_path):
    path, data = _write_user_task(tmp_path)
    task = get_task(str(path))
    test = task.load(data_dir=data)
    assert len(test) == 6 and {r["gold"] for r in test} == {"good", "bad"}
    small = task.load(data_dir=data, limit=3, seed=0)
    assert len(small) == 3 and {r["gold"] for r in small} == {"good", "bad"}  # stratified keeps both
    pool = task.load("train", data_dir=data)
    demos = random_demos(task.name, test[0], pool, 2, seed=42)
    prompt = task.prompt(test[0], demos)
    lines = prompt.split("\n")
    assert lines[0] == "Is the soup review positive or negative?" and lines[1] == ""
    assert lines[2].startswith("Review: ") and lines[3] in {"Answer: positive", "Answer: negative"}
    assert lines[-2] == f"Review: {test[0]['text']}" and lines[-1] == "Answer:"
    assert task.parse("Answer: Positive") == "good"
    assert task.score(["good", "bad"], ["good", "good"])["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"kind": "regression"}, "kind"),
        ({"metric": "micro_f1"}, "(top level)"),
        ({"labels": [{"name": "good", "synonyms": ["ok"]}, {"name": "bad", "synonyms": ["ok"]}]}, "(top level)"),
        ({"loader": {"format": "xlsx", "splits": {"test": "a"}}}, "loader"),
        ({"demos": {"k": 2, "split": "dev"}}, "(top level)"),
        ({"instructions": "typo"}, "instructions"),
    ],
)
def test_invalid_task_file_names_field(tmp_path, override, field):
    path, _ = _write_user_task(tmp_path, **override)
    with pytest.raises(InputError) as exc:
        get_task(str(path))
    assert "my_task.yaml" in str(exc.value) and f"field '{field}" in str(exc.value)


def test_unknown_label_in_data_names_file(tmp_path):
    path, data = _write_user_task(tmp_path)
    (data / "test.jsonl").write_text('{"review": "fine soup", "y": "meh"}\n')
    with pytest.raises(InputError) as exc:
        get_task(str(path)).load(data_dir=data)
    assert "test.jsonl" in str(exc.value) and "'label'" in str(exc.value) and "meh" in str(exc.value)


def test_demos_are_stable_per_item_and_exclude_query(tmp_path):
    path, data = _write_user_task(tmp_path)
    task = get_task(str(path))
    pool = task.load("train", data_dir=data)
    row = pool[0]
    d1 = random_demos(task.name, row, pool, 4, seed=42)
    assert d1 == random_demos(task.name, row, pool, 4, seed=42)
    assert d1 != random_demos(task.name, row, pool, 4, seed=43)
    assert len(d1) == 4 and all(d["text"] != row["text"] for d in d1)
    assert random_demos(task.name, row, pool, 0, seed=42) == []
    assert task.prompt(row, []).startswith("Is the soup review positive or negative?\n\nReview:")
    chat = task.prompt(row, d1[:1], style="chat")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]


def test_similar_demos_with_minilm(tmp_path):
    path, data = _write_user_task(tmp_path)
    task = get_task(str(path))
    pool = task.load("train", data_dir=data)
    query = {"text": "the staff was rude and the soup cold", "gold": "bad"}
    demos = select_demos(task, [query], pool, 2, seed=42, selection="similar")[0]
    assert len(demos) == 2 and all(d["gold"] == "bad" for d in demos)


def test_shared_sentibench_rows(shared_data_dir):
    p = get_task("pstance")
    rows = p.load(data_dir=shared_data_dir, limit=10)
    assert all(r["target"] for r in rows)
    assert "Target: " in p.prompt(rows[0], p.load("train", data_dir=shared_data_dir)[:2])
    atsa = get_task("atsa_rest16").load(data_dir=shared_data_dir)
    assert len(atsa) == 676 and not any(t[0] in (None, "NULL") for r in atsa for t in r["gold"])
    acsa = get_task("acsa_rest16").load(data_dir=shared_data_dir)
    assert all(len(r["gold"]) == len(set(r["gold"])) for r in acsa)
    opener = get_task("opener").load(data_dir=shared_data_dir)
    assert len(opener) == 499 and sum(len(r["gold_spans"]) for r in opener) > 0
    assert len(get_task("mr").load(data_dir=shared_data_dir)) == 1066

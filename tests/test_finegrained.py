"""Fine-grained teaching from unlabeled sentences (the teacher writes the tuples) and the multi-task generative
student that learns them: a real OpenAI-compatible teacher server on 127.0.0.1, tiny models built in-process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sentidistill.config import FineGrainedConfig, TrainingConfig
from sentidistill.data.tuple_corpus import format_tuples, read_tuple_corpus, read_tuple_corpus_stats
from teacher_server import running_server, server_stats

ASPECTS = ["pizza", "service", "food", "staff", "wine", "dessert"]
POS = ["great", "wonderful", "delightful", "good"]
NEG = ["terrible", "dull", "bad", "boring"]


def _sentence(rng: random.Random) -> tuple[str, list[dict]]:
    """One review sentence with one or two aspect terms; gold aspects deliberately include 'neutral' ones the
    lexicon teacher cannot see (so teacher != gold on some rows)."""
    a = rng.sample(ASPECTS, rng.choice([1, 2]))
    parts, aspects = [], []
    for term in a:
        pos = rng.random() < 0.5
        parts.append(f"the {term} was {rng.choice(POS if pos else NEG)}")
        aspects.append({"target": term, "polarity": "positive" if pos else "negative"})
    return " but ".join(parts), aspects


def _write_tuple_task(tmp: Path, n_train: int = 60, n_test: int = 30, name: str = "toy_atsa", seed: int = 0,
                      extra: list[str] | None = None) -> Path:
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        with (tmp / f"{name}.{split}.jsonl").open("w", encoding="utf-8") as f:
            for i in range(n):
                text, aspects = _sentence(rng)
                f.write(json.dumps({"text": f"{text} {i}", "aspects": aspects}) + "\n")
            if split == "train":
                for t in extra or []:
                    f.write(json.dumps({"text": t, "aspects": [{"target": "gold-only", "polarity": "neutral"}]}) + "\n")
    task = tmp / f"{name}.yaml"
    task.write_text(f"""
name: {name}
category: fine-grained
kind: extraction
loader:
  format: jsonl
  splits: {{train: {tmp / (name + '.train.jsonl')}, test: {tmp / (name + '.test.jsonl')}}}
answer: {{source: aspect_term_pairs, fields: [target, polarity]}}
instruction: Extract every aspect term with its sentiment polarity. Answer with a Python list of tuples (aspect term, polarity), e.g. [('pizza', 'positive')]; answer [] if there is none.
demos: {{split: train, k: 2}}
max_new_tokens: 40
metric: micro_f1
""", encoding="utf-8")
    return task


def _teacher_cfg(url: str):
    from sentidistill.teacher import TeacherConfig

    return TeacherConfig.model_validate({"kind": "openai", "model": "toy", "base_url": url + "/v1",
                                         "api_key_env": "TOY_TEACHER_KEY", "concurrency": 4, "max_retries": 1,
                                         "repair_attempts": 1})


def test_format_tuples_is_the_tasks_answer_text():
    from sentidistill.bench.parsers import parse_tuples

    tuples = [("pizza", "positive"), ("it's \"ok\"", "neutral")]
    text = format_tuples(tuples)
    assert text == "[('pizza', 'positive'), ('it\\'s \"ok\"', 'neutral')]"
    assert parse_tuples(text, 2) == tuples  # what is written reads back
    assert format_tuples([]) == "[]"


def test_majority_vote_keeps_what_most_answers_contain(tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.distill.tuples import majority_tuples

    task = get_task(str(_write_tuple_task(tmp_path)))
    answers = [
        [("Pizza", "Positive"), ("wine", "negative")],
        [("pizza", "pos"), ("staff", "neutral")],  # same pizza tuple in other spelling
        [("pizza", "positive"), ("wine", "negative"), ("wine", "negative")],  # a repeat counts once
        None,  # unreadable: an answer that contains nothing
        [],
    ]
    kept, agreement = majority_tuples(answers, task)
    # pizza: 3 of 5 (> half) kept in its first written form; wine: 2 of 5 dropped; staff 1 of 5 dropped.
    assert kept == [("Pizza", "Positive")]
    assert agreement == pytest.approx(3 / 5)
    kept, agreement = majority_tuples([[], [], [("wine", "negative")]], task)
    assert kept == [] and agreement == pytest.approx(2 / 3)
    # Exactly half is not a majority.
    assert majority_tuples([[("wine", "negative")], []], task)[0] == []


def test_teacher_writes_tuples_for_unlabeled_sentences(tmp_path, monkeypatch):
    from sentidistill.distill.tuples import build_tuple_corpus
    from sentidistill.teacher import build_teacher

    bad = ["the pizza was odd <<reply:I cannot answer that>> <<repair:still no list>>",
           "the wine was fine <<reply:(a, b, c>> <<repair:sorry>>"]
    task = _write_tuple_task(tmp_path, extra=bad)
    monkeypatch.setenv("TOY_TEACHER_KEY", "sk-test")
    cfg = FineGrainedConfig(enabled=True, tasks=[str(task)], n_per_task=None, shots=2, dev_fraction=0.25)
    out = tmp_path / "tuples.parquet"
    with running_server() as url:
        with build_teacher(_teacher_cfg(url), tmp_path / "cache.sqlite") as teacher:
            stats = build_tuple_corpus(cfg, teacher, out, seed=3)
        sent = server_stats(url)["total"]
        rows = read_tuple_corpus(out)
        # 62 texts, 60 readable; the two bad ones asked once and repaired once each, then dropped and counted.
        assert sent == 62 + 2
        t = stats.tasks["toy_atsa"]
        assert t["texts"] == 62 and t["kept"] == 60 and t["dropped"] == {"unreadable": 2}
        assert t["answers"] == {"valid": 60, "invalid": 2}
        assert len(rows) == 60 and {r["split"] for r in rows} == {"train", "dev"}
        assert sum(r["split"] == "dev" for r in rows) == t["dev"] == 15
        assert read_tuple_corpus_stats(out)["tasks"]["toy_atsa"]["kept"] == 60
        # The teacher's tuples, not the gold ones: the lexicon answers every aspect; gold never reaches a row.
        for r in rows:
            assert r["target"] == format_tuples([tuple(x) for x in r["tuples"]])
            assert "gold-only" not in r["target"]
            words = r["text"].split()
            assert [x[0] for x in r["tuples"]] == [w for w in words if w in ASPECTS]
        # The k-shot prompts: 2 demonstrations with their answers, never the query itself.
        # A rerun with the same cache asks nothing again.
        with build_teacher(_teacher_cfg(url), tmp_path / "cache.sqlite") as teacher:
            build_tuple_corpus(cfg, teacher, tmp_path / "again.parquet", seed=3)
        assert server_stats(url)["total"] == sent
    assert read_tuple_corpus(tmp_path / "again.parquet") == rows


def test_self_consistency_votes_over_sampled_answers(tmp_path, monkeypatch):
    from sentidistill.distill.tuples import build_tuple_corpus
    from sentidistill.teacher import build_teacher

    task = _write_tuple_task(tmp_path, n_train=6, extra=[
        "the pizza was great <<samples:[('pizza', 'positive')]|[('Pizza', 'positive'), ('wine', 'negative')]|"
        "[('pizza', 'positive'), ('wine', 'negative')]|[('pizza', 'negative')]|[]>>",
        "the food was bad <<samples:no list|not one|[('food', 'negative')]|none|nothing>>",
    ])
    monkeypatch.setenv("TOY_TEACHER_KEY", "sk-test")
    cfg = FineGrainedConfig(enabled=True, tasks=[str(task)], n_per_task=None, shots=0, self_consistency=5,
                            dev_fraction=0.0)
    with running_server() as url:
        with build_teacher(_teacher_cfg(url).model_copy(update={"repair_attempts": 0}),
                           tmp_path / "c.sqlite") as teacher:
            stats = build_tuple_corpus(cfg, teacher, tmp_path / "sc.parquet", seed=0)
        assert server_stats(url)["total"] == 8 * 5  # five sampled answers per text, seeds 0..4
    rows = {r["text"].split(" <<")[0]: r for r in read_tuple_corpus(tmp_path / "sc.parquet")}
    voted = rows["the pizza was great"]
    # pizza positive in 3 of 5 (the 'Pizza' spelling counts), wine negative in 2 of 5: only pizza kept.
    assert voted["tuples"] == [["pizza", "positive"]] and voted["agreement"] == pytest.approx(0.6)
    assert voted["n_samples"] == 5 and voted["n_parsed"] == 5 and voted["status"] == "voted"
    # 4 of 5 answers unreadable: no majority can be trusted, dropped and counted.
    assert "the food was bad" not in rows
    assert stats.tasks["toy_atsa"]["dropped"] == {"no_majority": 1}


def test_tuple_teaching_refuses_classification_tasks(tmp_path):
    from sentidistill.distill.tuples import build_tuple_corpus
    from sentidistill.errors import InputError

    cfg = FineGrainedConfig(enabled=True, tasks=["sst2"])
    with pytest.raises(InputError, match="extraction"):
        build_tuple_corpus(cfg, None, tmp_path / "x.parquet")


def test_user_texts_replace_the_train_split(tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.distill.tuples import unlabeled_sentences

    task = get_task(str(_write_tuple_task(tmp_path)))
    (tmp_path / "mine.txt").write_text("the pizza was great\n\n  the staff was dull  \nthe pizza was great\n",
                                       encoding="utf-8")
    cfg = FineGrainedConfig(tasks=[str(tmp_path / "x.yaml")], texts=tmp_path / "mine.txt", n_per_task=None)
    rows = unlabeled_sentences(task, cfg, None, seed=0)
    assert sorted(r["text"] for r in rows) == ["the pizza was great", "the staff was dull"]  # deduped, stripped
    assert all("gold" not in r for r in rows)
    default = unlabeled_sentences(task, cfg.model_copy(update={"texts": None, "n_per_task": 7}), None, seed=0)
    assert len(default) == 7 and all("gold" not in r and "gold_spans" not in r for r in default)


# -- the multi-task generative student ------------------------------------------------------------------------

def _toy_tuple_corpus(tmp_path: Path, task: Path, n: int, seed: int = 0) -> Path:
    """A tuple corpus as the teacher would write it for ``task`` (the lexicon teacher's answers)."""
    import ast

    from sentidistill.data.tuple_corpus import write_tuple_corpus
    from teacher_server import lexicon_tuples

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text, _ = _sentence(rng)
        tuples = ast.literal_eval(lexicon_tuples(text))
        rows.append({"task": "toy_atsa", "id": str(i), "text": text, "target": format_tuples(tuples),
                     "tuples": [list(t) for t in tuples], "n_samples": 1, "n_parsed": 1, "agreement": 1.0,
                     "split": "dev" if i % 5 == 0 else "train", "status": "valid"})
    return write_tuple_corpus(rows, tmp_path / "tuples.parquet")


@pytest.mark.slow  # ~1 min on 2 cores
def test_tiny_causal_student_learns_a_tuple_task(tmp_path):
    """The same code path as SmolLM2: a tiny causal LM trained with the multi-task trainer on teacher tuples
    writes better tuples afterwards (dev micro-F1 against the teacher rises well above its start)."""
    from sentidistill.testing import build_tiny_causal_lm
    from sentidistill.train.multitask_lm import MultiTaskSettings, train_multitask_generative

    task = _write_tuple_task(tmp_path, name="toy_atsa")
    corpus = _toy_tuple_corpus(tmp_path, task, 200)
    model = build_tiny_causal_lm(tmp_path / "tiny", hidden=96, layers=2)
    settings = MultiTaskSettings(icl_fraction=0.25, icl_shots=1, patience=20, dev_generate=40, max_length=256)
    training = TrainingConfig(epochs=25, learning_rate=3e-3, batch_size=16, eval_steps=50, save_steps=50,
                              logging_steps=1000, warmup_ratio=0.0)
    final = train_multitask_generative(str(model), tmp_path / "gen", training, settings, tuple_corpus=corpus,
                                       kind="causal", seed=0, task_specs={"toy_atsa": str(task)})
    summary = json.loads((final / "training_summary.json").read_text(encoding="utf-8"))
    before = summary["dev_before"]["eval_teacher_agreement"]
    after = summary["dev_after"]["eval_teacher_agreement"]
    assert before < 0.1  # a random-init model writes no valid tuple
    assert after >= before + 0.5, summary
    assert (final / "model.safetensors").is_file() and summary["tuple_rows"] == 160 and summary["icl_rows"] > 0

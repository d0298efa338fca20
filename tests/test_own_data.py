"""A user's own data end to end: an unlabeled CSV pool and a labeled test CSV through `sentidistill distill`
(a real OpenAI-compatible teacher server on 127.0.0.1, a tiny encoder built in-process), the run repeated from
the config it wrote, the student exported with `export-hf` and loaded by `transformers.pipeline` in a process
that never imports sentidistill, and `predict` with no `--model`."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sentidistill
from teacher_server import running_server, server_stats

CLI = [sys.executable, "-c", "from sentidistill.cli import run; run()"]
POS = ["wonderful", "great", "loved", "delightful", "charming"]
NEG = ["terrible", "boring", "dull", "tedious", "painful"]
FILL = ["the film", "our dinner", "this book", "the show", "that hotel", "the plot", "my stay"]
LABELS = ["negative", "neutral", "positive"]
# Third-party output that must not reach the console by default.
NOISE = re.compile(r"\{'loss'|\{'eval_|'train_runtime'|Writing model shards|Loading weights|LOAD REPORT|"
                   r"\[transformers\]|were not sharded|it/s\]", re.IGNORECASE)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS")}
    src = str(Path(sentidistill.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def _text(rng: random.Random, i: int) -> tuple[str, str]:
    kind = rng.choice(["positive", "negative", "neutral"])
    if kind == "neutral":
        return f"{rng.choice(FILL)} happened on day {i}", kind
    return f"{rng.choice(FILL)} was {rng.choice(POS if kind == 'positive' else NEG)} {i}", kind


def _write_data(tmp: Path) -> tuple[Path, Path]:
    rng = random.Random(0)
    pool = tmp / "tweets.csv"  # unlabeled: one `tweet` column, no label at all
    with pool.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tweet"])
        for i in range(120):
            w.writerow([_text(rng, i)[0]])
    test = tmp / "test.csv"
    with test.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tweet", "gold"])
        for i in range(1000, 1045):
            w.writerow(_text(rng, i))
    return pool, test


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """`sentidistill distill` on the unlabeled pool, as a user runs it (subprocess, output captured)."""
    from sentidistill.testing import build_tiny_encoder

    tmp = tmp_path_factory.mktemp("own")
    encoder = build_tiny_encoder(tmp / "encoder")
    pool, test = _write_data(tmp)
    env = _env(OPENAI_API_KEY="sk-own-secret-42", SENTIDISTILL_PROGRESS="1", COLUMNS="200")
    with running_server() as url:
        proc = _run([*CLI, "distill", str(pool), "--text-column", "tweet", "--labels", ",".join(LABELS),
                     "--test", str(test), "--label-column", "gold", "--teacher", "openai:toy",
                     "--base-url", url + "/v1", "--out", "runs/mine", "--encoder", str(encoder),
                     "--set", "classifier.max_length=32", "--set", "classifier.patience=4",
                     "--set", "classifier.training.epochs=20", "--set", "classifier.training.learning_rate=5e-3",
                     "--set", "classifier.training.batch_size=16", "--set", "classifier.training.eval_steps=5",
                     "--set", "classifier.training.save_steps=5", "--set", "classifier.training.logging_steps=1",
                     "--set", "bench.bootstrap=200"], tmp, env)
        sent = server_stats(url)["total"]
        # Repeat from the config it wrote: every stage is done, nothing is asked again.
        again = _run([*CLI, "run", str(tmp / "runs" / "mine" / "distill.yaml")], tmp, env)
        sent_again = server_stats(url)["total"]
    return {"tmp": tmp, "proc": proc, "sent": sent, "again": again, "sent_again": sent_again,
            "run": tmp / "runs" / "mine", "env": env}


def test_distill_unlabeled_pool_end_to_end(distilled):
    proc, run = distilled["proc"], distilled["run"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The task and config it used are in the run folder; the pool split has no label column.
    task = yaml.safe_load((run / "task.yaml").read_text())
    assert task["loader"]["split_options"]["train"] == {"format": "table", "text_field": "tweet"}
    assert task["loader"]["split_options"]["test"]["label_field"] == "gold"
    assert [lab["name"] for lab in task["labels"]] == LABELS
    cfg = yaml.safe_load((run / "distill.yaml").read_text())
    assert cfg["soft_labels"]["tasks"] == [str(run / "task.yaml")] and cfg["classifier"]["pooling"] == "pooler"
    assert cfg["classifier"]["training"]["eval_steps"] == 5  # --set reached the config
    # The teacher labelled the whole pool once, then the test items once (the calibrated row is cache hits).
    assert distilled["sent"] == 120 + 45
    report = json.loads((run / "distill_report.json").read_text())
    assert report["dev_rows"] == 24 and report["dev_agreement_after"] >= 0.5
    rows = {r["key"]: r for r in report["bench"]}
    assert set(rows) == {"teacher", "teacher_calibrated", "classifier_before", "classifier_after"}
    for r in rows.values():
        assert r["n"] == 45 and r["ci_low"] <= r["score"] <= r["ci_high"]
    assert rows["teacher_calibrated"]["from_cache"] and not rows["teacher"]["from_cache"]
    assert rows["classifier_after"]["score"] > rows["classifier_before"]["score"]
    # The key reached the server, never a file of the run.
    for f in run.rglob("*"):
        if f.is_file():
            assert b"sk-own-secret-42" not in f.read_bytes(), f
    # Repeat/resume from the written config: all done, no teacher request.
    assert distilled["again"].returncode == 0, distilled["again"].stderr[-2000:]
    assert distilled["sent_again"] == distilled["sent"]


def test_distill_console_shows_progress_and_no_third_party_noise(distilled):
    out = distilled["proc"].stdout + distilled["proc"].stderr
    # A teacher progress bar per teacher stage, with what it costs.
    assert re.search(r"teacher soft_labels\.tweets\.v0 .*120/120.*calls \d+ tokens \d+ .*cache hits 0", out), out[-3000:]
    assert re.search(r"teacher bench\.tweets .*45/45.*cache hits", out), out[-3000:]
    # One line per evaluation instead of the Trainer's dicts.
    assert re.search(r"dev agreement with the teacher \d\.\d{3} \(best", out), out[-3000:]
    assert [line for line in out.splitlines() if NOISE.search(line)] == []
    # The final table: intervals, and "cache" for the cache-only calibrated teacher.
    assert re.search(r"teacher \(calibrated\).*\[\s*\d+\.\d, \d+\.\d\].*cache", out), out[-3000:]


def test_export_hf_matches_predict_in_a_process_without_sentidistill(distilled, tmp_path):
    run, env, cwd = distilled["run"], distilled["env"], distilled["tmp"]
    out = tmp_path / "hf"
    proc = _run([*CLI, "export-hf", str(run), "--out", str(out)], cwd, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "text-classification" and meta["model-index"][0]["results"][0]["metrics"]
    assert "openai:toy" in card and "batch" in card and "Limitations" in card
    rng = random.Random(7)
    texts = [_text(rng, i)[0] for i in range(300)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    pred = _run([*CLI, "predict", "--file", str(tmp_path / "texts.txt"), "--model",
                 str(run / "models" / "classifier" / "final")], cwd, env)
    assert pred.returncode == 0, pred.stderr[-2000:]
    ours = [json.loads(line) for line in pred.stdout.splitlines()]
    script = f"""
import json, sys
from transformers import pipeline
clf = pipeline("text-classification", model={str(out)!r}, top_k=None, truncation=True)
texts = json.load(open({str(tmp_path / 'texts.json')!r}))
res = clf(texts)
assert "sentidistill" not in sys.modules, "sentidistill was imported"
print(json.dumps([{{d["label"]: d["score"] for d in r}} for r in res]))
"""
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    plain_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    hf = _run([sys.executable, "-c", script], tmp_path, plain_env)
    assert hf.returncode == 0, hf.stderr[-2000:]
    theirs = json.loads(hf.stdout.strip().splitlines()[-1])
    assert len(ours) == len(theirs) == 300
    labels_seen = set()
    for a, b in zip(ours, theirs, strict=True):
        assert max(b, key=b.get) == a["prediction"]
        assert set(b) == set(LABELS)
        assert max(abs(a["probabilities"][k] - b[k]) for k in LABELS) < 1e-5
        labels_seen.add(a["prediction"])
    assert len(labels_seen) >= 2  # a trained student, not a constant one
    # The ONNX graph has the names onnxruntime users and Optimum expect.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in sess.get_inputs()][:2] == ["input_ids", "attention_mask"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]


def test_predict_without_model_uses_the_newest_student_or_says_what_to_run(distilled, tmp_path):
    env = distilled["env"]
    empty = _run([*CLI, "predict", "I loved it"], tmp_path, env, timeout=300)
    assert empty.returncode == 2
    assert "no distilled student under runs/" in empty.stderr and "sentidistill distill" in empty.stderr
    assert "Traceback" not in empty.stderr and empty.stdout == ""
    found = _run([*CLI, "predict", "was wonderful"], distilled["tmp"], env, timeout=300)
    assert found.returncode == 0, found.stderr[-2000:]
    assert "using the newest distilled student: runs/mine/models/classifier/final" in found.stderr
    row = json.loads(found.stdout)
    assert row["task"] == "tweets" and set(row["probabilities"]) == set(LABELS)


def test_serve_answers_the_users_own_task_by_its_head_name(distilled):
    """A distilled student of a user's task is served: /v1/analyze takes the head's name ("tweets", not in
    the registry) and answers as predict() does, length-sorted batching keeping each text's answer;
    an unknown task is a 400 that lists the head."""
    import httpx

    from sentidistill.serve import create_app
    from sentidistill.serve.background import BackgroundServer
    from sentidistill.serve.predict import predict

    model = distilled["run"] / "models" / "classifier" / "final"
    texts = ["that hotel was wonderful 7", "x", "the plot was tedious and painful, sadly, 12345 " * 3, "my stay"]
    expected = predict(texts, task="tweets", model=str(model))
    with BackgroundServer(create_app(str(model), max_batch_size=2)) as srv:
        r = httpx.post(srv.base_url + "/v1/analyze", json={"task": "tweets", "texts": texts}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["task"] == "tweets"
        assert [x["text"] for x in body["results"]] == texts
        assert [x["prediction"] for x in body["results"]] == [x["prediction"] for x in expected]
        for got, want in zip(body["results"], expected, strict=True):
            assert set(got["probabilities"]) == set(LABELS)
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
        bad = httpx.post(srv.base_url + "/v1/analyze", json={"task": "tweetz", "texts": ["a"]}, timeout=60)
        assert bad.status_code == 400 and "tweets" in bad.text and bad.json()["error"]["param"] == "task"


# -- the data layer: unlabeled pools, per-split options, plain text files (fast) ---------------------------------

def _task_file(tmp: Path, split_options: dict | None = None, train: str = "pool.txt") -> Path:
    spec = {
        "name": "mine", "category": "own", "kind": "classification",
        "loader": {"format": "table", "splits": {"train": str(tmp / train), "test": str(tmp / "test.csv")},
                   "options": {"text_field": "tweet", "label_field": "gold"}},
        "labels": [{"name": n} for n in LABELS], "instruction": "Classify.", "metric": "macro_f1",
        "demos": {"split": "train", "k": 0},
    }
    if split_options is not None:
        spec["loader"]["split_options"] = split_options
    path = tmp / "mine.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_text_format_unlabeled_pool_and_labeled_test_in_one_task(tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.errors import InputError

    (tmp_path / "pool.txt").write_bytes("first tweet\r\n\nsecond \u2028 still one\nthird\n".encode())
    (tmp_path / "test.csv").write_text("tweet,gold\ngood day,positive\nbad day,NEGATIVE\nso so,neutral\n")
    task = get_task(str(_task_file(tmp_path, {"train": {"format": "text"}})))
    pool = task.load("train", labeled=False)
    assert [r["text"] for r in pool] == ["first tweet", "second \u2028 still one", "third"]
    assert all(r["gold"] is None for r in pool)
    assert [r["gold"] for r in task.load("test")] == ["positive", "negative", "neutral"]
    with pytest.raises(InputError, match=r"pool\.txt.*no label"):
        task.load("train")  # scored against gold, a split needs its labels
    assert len(task.load("train", labeled=False, limit=2, seed=3)) == 2


def test_split_options_merge_over_options_and_a_pool_needs_no_label_column(tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.errors import InputError

    (tmp_path / "pool.csv").write_text("tweet,other\nfirst,x\nsecond,y\n")
    (tmp_path / "test.csv").write_text("tweet,gold\ngood day,positive\nbad day,negative\n")
    # The shared options name a label column the pool lacks: reading the pool as a pool ignores it.
    task = get_task(str(_task_file(tmp_path, None, train="pool.csv")))
    assert [r["text"] for r in task.load("train", labeled=False)] == ["first", "second"]
    # Per-split options override the shared ones for that split only.
    (tmp_path / "pool.csv").write_text("body,gold\nfirst,positive\nsecond,negative\n")
    task = get_task(str(_task_file(tmp_path, {"train": {"text_field": "body"}}, train="pool.csv")))
    assert [r["gold"] for r in task.load("train")] == ["positive", "negative"]
    assert [r["text"] for r in task.load("test")] == ["good day", "bad day"]
    with pytest.raises(InputError, match="split_options names splits \\['dev'\\]"):
        get_task(str(_task_file(tmp_path, {"dev": {"text_field": "body"}}, train="pool.csv")))
    with pytest.raises(InputError, match=re.escape("split_options.train.format: unknown format 'txt'")):
        get_task(str(_task_file(tmp_path, {"train": {"format": "txt"}}, train="pool.csv")))


def test_soft_labels_read_a_pool_without_labels(tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.distill.soft_labels import unlabeled_texts

    (tmp_path / "pool.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "test.csv").write_text("tweet,gold\ngood day,positive\nbad day,negative\n")
    task = get_task(str(_task_file(tmp_path, {"train": {"format": "text"}})))
    rows = unlabeled_texts(task, None, data_dir=None, seed=1, max_chars=4)
    assert [r["text"] for r in rows] == ["one", "two", "thre"] and all("gold" not in r for r in rows)


def test_export_hf_refuses_a_mean_pooled_student_with_what_to_do(tmp_path):
    from sentidistill.errors import InputError
    from sentidistill.students.hf_export import export_hf
    from sentidistill.testing import build_tiny_classifier

    student = build_tiny_classifier(tmp_path / "clf")  # the default pooling: mean + L2 norm
    with pytest.raises(InputError, match=re.escape("classifier.pooling: pooler")):
        export_hf(student, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_readme_own_data_example_runs(tmp_path, monkeypatch):
    """The README's "Your own data" Python example, run as written against the tiny teacher server (its
    teacher spec pointed at it through the openai client's own $OPENAI_BASE_URL) and a tiny encoder."""
    import functools

    from sentidistill import own_data
    from sentidistill.testing import build_tiny_encoder

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.+?)```", section, flags=re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    encoder = build_tiny_encoder(tmp_path / "encoder")
    small = functools.partial(own_data.distill_texts, encoder=str(encoder), overrides={
        "classifier.max_length": 32, "classifier.training.eval_steps": 5, "classifier.training.save_steps": 5,
        "classifier.training.epochs": 3})
    monkeypatch.setattr(own_data, "distill_texts", small)
    monkeypatch.chdir(tmp_path)
    rng = random.Random(3)
    (tmp_path / "my_texts.txt").write_text("\n".join(_text(rng, i)[0] for i in range(60)) + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
    with running_server() as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
    student = namespace["student"]
    assert student.labels == ["negative", "neutral", "positive"]
    assert set(student.predict(["I loved it", "never again"])) <= set(student.labels)
    assert (tmp_path / "runs" / "my_texts" / "distill.yaml").is_file()
    assert (tmp_path / "my-texts-hf" / "config.json").is_file()

"""Adapters and the runner with real tiny models; replay; the CLI; the whole suite on the shared data."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from sentidistill.bench import get_task, list_tasks
from sentidistill.bench.models import HFModelAdapter, ReplayAdapter, first_token_label_scores
from sentidistill.bench.runner import run_bench


@pytest.fixture(scope="module")
def causal(tiny_causal_dir):
    return HFModelAdapter(str(tiny_causal_dir), device="cpu", batch_size=4, prompt_style="plain")


def test_prompt_style_auto_follows_the_training_format(tiny_causal_dir, tiny_seq2seq_dir):
    """Causal students are trained on chat-template renderings of the ICL corpus, so ``auto`` scores them on
    the same rendering; seq2seq students read plain text in training and in the bench."""
    from sentidistill.errors import InputError

    assert HFModelAdapter(str(tiny_causal_dir), device="cpu").prompt_style == "chat"
    assert HFModelAdapter(str(tiny_seq2seq_dir), device="cpu").prompt_style == "plain"
    with pytest.raises(InputError, match="prompt style"):
        HFModelAdapter(str(tiny_causal_dir), device="cpu", prompt_style="markdown")  # type: ignore[arg-type]


@pytest.fixture()
def user_task(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"text": f"great soup {i}", "label": "pos"} for i in range(8)] + [
        {"text": f"awful soup {i}", "label": "neg"} for i in range(8)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (data / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[::2]))
    spec = {
        "name": "soup", "category": "basic", "kind": "classification",
        "loader": {"format": "jsonl", "splits": {"train": "train.jsonl", "test": "test.jsonl"},
                   "options": {"label_field": "label"}},
        "labels": [{"name": "neg", "verbalizer": "negative"}, {"name": "pos", "verbalizer": "positive"}],
        "instruction": "Sentiment?", "demos": {"k": 2}, "metric": "macro_f1",
    }
    path = tmp_path / "soup.yaml"
    path.write_text(yaml.safe_dump(spec))
    return get_task(str(path)), data


def _manual_ll(adapter, prompt: str, cont: str) -> float:
    tok, model = adapter.tok, adapter.model
    ctx = tok(prompt)["input_ids"]
    c = tok(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(c))


def test_causal_loglikelihood_matches_unbatched_forward(causal):
    prompts = ["Sentence: the food was great\nLabel:", "Hi\nLabel:", "Sentence: awful, boring plot and bad acting\nLabel:"]
    conts = [" positive", " negative", " neutral conflict"]
    got = causal.loglikelihood(prompts, conts)  # one left-padded batch
    for p, c, g in zip(prompts, conts, got, strict=True):
        assert g == pytest.approx(_manual_ll(causal, p, c), abs=1e-3)
    first = HFModelAdapter(causal.lm, first_token=True).loglikelihood(prompts[:1], [" neutral conflict"])[0]
    # The paper's first-token variant: the log-prob of the continuation's first token only, not the sum.
    tok = causal.tok
    c_ids = tok(" neutral conflict", add_special_tokens=False)["input_ids"]
    assert len(c_ids) >= 2  # else "first token" and "sum" would coincide
    ctx = tok(prompts[0])["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(causal.model(input_ids=torch.tensor([ctx])).logits[0, -1].float(), -1)
    assert first == pytest.approx(float(logp[c_ids[0]]), abs=1e-3)
    assert first != pytest.approx(_manual_ll(causal, prompts[0], " neutral conflict"), abs=1e-3)
    ans = causal.choose(prompts[:2], ["negative", "positive"])
    for a, p in zip(ans, prompts[:2], strict=True):
        manual = [_manual_ll(causal, p, " negative"), _manual_ll(causal, p, " positive")]
        assert a.text == ["negative", "positive"][manual.index(max(manual))]


def test_seq2seq_loglikelihood_and_generate(tiny_seq2seq_dir):
    a = HFModelAdapter(str(tiny_seq2seq_dir), device="cpu")
    ll = a.loglikelihood(["Label:", "Label:"], ["positive", "negative conflict"])
    assert all(x < 0 for x in ll) and ll[0] != ll[1]
    out = a.generate(["Sentence: good\nLabel:"], max_new_tokens=5)
    assert len(out) == 1 and isinstance(out[0], str)


def test_first_token_label_scores():
    top = [("Pos", -0.2), (" negative", -1.5), ("non", -3.0), ("", -0.1)]
    assert first_token_label_scores(top, ["negative", "positive"]) == [-1.5, -0.2]
    # "n" starts both words: it identifies neither.
    assert first_token_label_scores([("n", -0.1)], ["negative", "neutral"]) == [None, None]
    assert first_token_label_scores([("non", -0.5), ("irony", -2.0)], ["irony", "non-irony"]) == [-2.0, -0.5]


def test_run_bench_writes_predictions_and_replays(causal, user_task, tmp_path):
    task, data = user_task
    out = tmp_path / "run"
    m = run_bench(causal, [task], shots=2, seeds=[42, 43], data_dir=data, out_dir=out, model_name="tiny")
    entry = m["tasks"]["soup"]
    assert set(entry["seeds"]) == {"42", "43"} and entry["n"] == 8
    assert 0 <= entry["score"] <= 1 and entry["unparseable_rate"] == 0.0  # restricted scoring always parses
    assert m["sentibench_score"] == pytest.approx(entry["score"])
    assert m["model"]["params"] == sum(p.numel() for p in causal.model.parameters())
    preds = [json.loads(line) for line in (out / "predictions" / "soup.seed42.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(p["raw"] in {"negative", "positive"} for p in preds)
    assert preds[0]["prompt"].startswith("Sentiment?\n\nSentence: ")
    acc = sum(p["correct"] for p in preds) / len(preds)
    assert acc == pytest.approx(entry["seeds"]["42"]["accuracy"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tasks"]["soup"]["score"] == pytest.approx(entry["score"])

    replay = ReplayAdapter(out / "predictions")
    assert replay.name == "tiny" and replay.n_params == m["model"]["params"]
    m2 = run_bench(replay, [task], shots=2, seeds=[42, 43], data_dir=data)
    assert m2["tasks"]["soup"]["score"] == pytest.approx(entry["score"])
    from sentidistill.errors import InputError

    with pytest.raises(InputError, match="no recorded answer"):
        run_bench(replay, [task], shots=1, seeds=[42], data_dir=data)


def test_generate_scoring_zero_shot(causal, user_task):
    task, data = user_task
    m = run_bench(causal, [task], shots=0, seeds=[42, 43], scoring="generate", data_dir=data, max_new_tokens=4)
    e = m["tasks"]["soup"]
    assert list(e["seeds"]) == ["42"]  # zero-shot prompts do not depend on the seed
    assert e["scoring"] == "generate" and 0 <= e["unparseable_rate"] <= 1


def test_cli_bench_and_report(tiny_causal_dir, user_task, tmp_path):
    from sentidistill.cli import app

    task, data = user_task
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["bench", "--model", str(tiny_causal_dir), "--tasks", str(task.source), "--shots", "1",
                              "--seeds", "42", "--out", str(out), "--data-dir", str(data), "--name", "tiny"])
    assert res.exit_code == 0, res.output
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    res = runner.invoke(app, ["bench", "--model", f"replay:{out / 'predictions'}", "--tasks", str(task.source),
                              "--shots", "1", "--out", str(tmp_path / "replayed"), "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    a = json.loads((out / "metrics.json").read_text())["sentibench_score"]
    b = json.loads((tmp_path / "replayed" / "metrics.json").read_text())["sentibench_score"]
    assert a == pytest.approx(b)
    res = runner.invoke(app, ["report", str(out / "metrics.json"), str(tmp_path / "replayed"), "--out",
                              str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "tiny" in (tmp_path / "rep" / "report.md").read_text()
    res = runner.invoke(app, ["bench", "--list"])
    assert res.exit_code == 0 and "sentibench-cls" in res.output


def test_whole_sentibench_suite_tiny(causal, shared_data_dir, tmp_path):
    """All 12 tasks at limit=20 (k=1, short generations) and the report's shape."""
    from sentidistill.report import write_report

    out = tmp_path / "sb"
    m = run_bench(causal, list_tasks("sentibench"), shots=1, seeds=[42], limit=20, data_dir=shared_data_dir,
                  out_dir=out, max_new_tokens=12, suite="sentibench")
    assert list(m["tasks"]) == list_tasks("sentibench")
    assert all(e["n"] == 20 for e in m["tasks"].values())
    assert set(m["categories"]) == {"basic", "multifaceted", "fine-grained"}
    assert m["sentibench_score"] == pytest.approx(sum(e["score"] for e in m["tasks"].values()) / 12)
    assert not math.isnan(m["sentibench_score"]) and m["items"] == 240
    assert len(list((out / "predictions").glob("*.jsonl"))) == 12
    paths = write_report([out / "metrics.json"], out, title="tiny")
    md = paths["markdown"].read_text()
    results = md.split("## Results", 1)[1].split("## Runs", 1)[0]
    table = [line for line in results.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 12 + 3 + 1  # header, tasks, category means, score
    assert "data:image/png;base64," in paths["html"].read_text()


def test_cli_max_chars_cuts_test_texts_and_classification_demonstrations(tiny_causal_dir, user_task, tmp_path):
    """``--max-chars`` reaches run_task: every query and every demonstration of a classification prompt is cut
    (a 4-shot prompt of long reviews is otherwise mostly demonstrations)."""
    from sentidistill.cli import app

    task, data = user_task
    out = tmp_path / "cut"
    res = CliRunner().invoke(app, ["bench", "--model", str(tiny_causal_dir), "--tasks", str(task.source), "--shots",
                                   "2", "--out", str(out), "--data-dir", str(data), "--max-chars", "5",
                                   "--no-report", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "predictions" / "soup.seed42.jsonl").read_text().splitlines()]
    assert rows and all(r["text"] in ("great", "awful") for r in rows)
    prompts = [json.dumps(r["prompt"]) for r in rows]
    assert all("soup" not in p for p in prompts), prompts[0]  # neither the query nor a demonstration kept it
    # The query and at least one demonstration in each (a demonstration identical to the query is left out).
    assert all(p.count("great") + p.count("awful") >= 2 for p in prompts), prompts[0]

"""Issue 14: the classifier student predicts, serves on /v1/analyze and exports to ONNX (fp32 and int8).

The student is a tiny BERT encoder (built in-process) with an ``sst2`` and an ``emotion`` head, trained for a
few hundred steps so that its answers depend on the text (a keyword decides the label): comparisons between
backends are over varied answers, not one constant label. Real MiniLM on SST-2 sentences is the slow test.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from sentidistill.errors import InputError
from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer
from sentidistill.serve.classifier_onnx import classifier_agreement, export_classifier_onnx
from sentidistill.serve.predict import predict
from sentidistill.students.classifier import build_classifier, load_classifier, save_classifier
from sentidistill.testing import build_tiny_encoder

TASKS = [{"name": "sst2", "labels": ["negative", "positive"]},
         {"name": "emotion", "labels": ["anger", "joy", "optimism", "sadness"]}]
WORDS = {"sst2": {"negative": ["awful", "terrible", "bad"], "positive": ["great", "lovely", "good"]},
         "emotion": {"anger": ["furious", "rage"], "joy": ["happy", "delight"], "optimism": ["hopeful", "hope"],
                     "sadness": ["tears", "grief"]}}
FILLER = ["the food", "our visit", "this phone", "the staff", "that movie", "my week", "the hotel", "her song"]
README_TEXT = "Great food, rude staff."


def keyword_rows(n: int, seed: int) -> list[tuple[str, int, int]]:
    """(text, task index, label index): a filler sentence around one label keyword of a random task."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.randrange(len(TASKS))
        k = rng.randrange(len(TASKS[t]["labels"]))
        word = rng.choice(WORDS[TASKS[t]["name"]][TASKS[t]["labels"][k]])
        out.append((f"{rng.choice(FILLER)} was {word} {rng.choice(FILLER)}", t, k))
    return out


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory) -> Path:
    """A trained tiny classifier checkpoint (CE on keyword labels, 200 Adam steps)."""
    root = tmp_path_factory.mktemp("clf")
    enc = build_tiny_encoder(root / "bert")
    model, tok = build_classifier(str(enc), TASKS, head_init="random", max_length=32, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rows = keyword_rows(640, seed=0)
    model.train()
    torch.manual_seed(0)
    for step in range(200):
        batch = [rows[(step * 32 + i) % len(rows)] for i in range(32)]
        enc_b = tok([b[0] for b in batch], padding=True, return_tensors="pt")
        out = model(enc_b["input_ids"], enc_b["attention_mask"], task_ids=torch.tensor([b[1] for b in batch]))
        # Padding label positions hold a -1e4 logit: cross-entropy over [B, K_max] is the per-task CE.
        loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([b[2] for b in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return save_classifier(model, tok, root / "student")


@pytest.fixture(scope="module")
def onnx_dir(clf_dir, tmp_path_factory) -> Path:
    return export_classifier_onnx(clf_dir, tmp_path_factory.mktemp("onnx") / "export", int8=True)


def test_predict_answers_from_class_probabilities(clf_dir):
    held_out = [r for r in keyword_rows(80, seed=7) if r[1] == 0]
    texts = [r[0] for r in held_out]
    res = predict(texts, task="sentiment", model=str(clf_dir))
    assert [r["task"] for r in res] == ["sst2"] * len(texts)
    assert all(r["valid"] and r["head"] == "sst2" and set(r["probabilities"]) == {"negative", "positive"}
               for r in res)
    for r in res:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert r["prediction"] == max(r["probabilities"], key=r["probabilities"].get)
    # The model learned the keywords: answers vary with the text and are mostly right.
    labels = [r["prediction"] for r in res]
    assert set(labels) == {"negative", "positive"}
    assert np.mean([lab == TASKS[0]["labels"][k] for lab, (_, _, k) in zip(labels, held_out, strict=True)]) >= 0.9
    # The same numbers as the PyTorch model's own predict_proba.
    model, tok = load_classifier(clf_dir)
    ref = model.predict_proba(tok, "sst2", texts)
    got = np.array([[r["probabilities"]["negative"], r["probabilities"]["positive"]] for r in res])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # MR has no head of its own: the sst2 head (same label set) answers it, with the same labels.
    mr = predict(texts, task="mr", model=str(clf_dir))
    assert [r["prediction"] for r in mr] == labels and {r["head"] for r in mr} == {"sst2"}
    emo = predict(["our visit was furious the staff", "my week was hopeful the food"], task="emotion",
                  model=str(clf_dir))
    assert [r["prediction"] for r in emo] == ["anger", "optimism"]
    assert list(emo[0]["probabilities"]) == ["anger", "joy", "optimism", "sadness"]


def test_predict_refuses_what_a_classifier_cannot_answer(clf_dir):
    with pytest.raises(InputError, match="classification tasks only"):
        predict(["The pasta was cold."], task="aspects", model=str(clf_dir))
    with pytest.raises(InputError, match=r"no head of this classifier answers task 'irony18'.*sst2"):
        predict(["Oh great, another Monday."], task="irony", model=str(clf_dir))
    with pytest.raises(InputError, match="no shots"):
        predict(["good"], task="sentiment", model=str(clf_dir), shots=[{"text": "bad", "gold": "negative"}])


def test_predict_cli_prints_the_same_answers(clf_dir):
    from typer.testing import CliRunner

    from sentidistill.cli import app

    texts = ["the staff was lovely the food", "that movie was terrible my week"]
    # --verbose: leave this process's warning filters alone (the default quiets them process-wide).
    out = CliRunner().invoke(app, ["predict", *texts, "--task", "sentiment", "--model", str(clf_dir), "--verbose"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    api = predict(texts, task="sentiment", model=str(clf_dir))
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in api] == ["positive", "negative"]
    assert rows[0]["probabilities"] == pytest.approx(api[0]["probabilities"])
    bad = CliRunner().invoke(app, ["predict", "x", "--task", "triplets", "--model", str(clf_dir), "--verbose"])
    assert isinstance(bad.exception, InputError) and "classification tasks only" in str(bad.exception)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_serve_analyze_matches_predict_and_refuses_generation(clf_dir, onnx_dir, backend):
    spec = str(clf_dir if backend == "torch" else onnx_dir)
    texts = [README_TEXT, *[r[0] for r in keyword_rows(40, seed=11) if r[1] == 0][:7]]
    expected = predict(texts, task="sentiment", model=str(clf_dir))
    app = create_app(spec, served_model_name="clf", max_batch_size=16, batch_wait_ms=50, max_texts=16)
    with BackgroundServer(app) as srv:
        url = srv.base_url
        r = httpx.post(url + "/v1/analyze", json={"task": "sentiment", "texts": [README_TEXT]}, timeout=60)
        assert r.status_code == 200, r.text
        one = r.json()["results"][0]
        assert one["prediction"] in ("negative", "positive") and set(one["probabilities"]) == {"negative", "positive"}
        r = httpx.post(url + "/v1/analyze", json={"task": "sentiment", "texts": texts}, timeout=60)
        body = r.json()
        assert r.status_code == 200 and body["task"] == "sst2" and body["model"] == "clf"
        assert [x["prediction"] for x in body["results"]] == [x["prediction"] for x in expected]
        for got, want in zip(body["results"], expected, strict=True):
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-4)
        assert body["usage"]["completion_tokens"] == 0 and body["usage"]["prompt_tokens"] > len(texts)
        # Dynamic batching: the 8 texts of one request ran as one batch; concurrent requests share batches.
        metrics = httpx.get(url + "/metrics", timeout=30).text
        assert "sentidistill_batch_size_count 2.0" in metrics and "sentidistill_batch_size_sum 9.0" in metrics
        results: list[httpx.Response] = []
        posts = [threading.Thread(target=lambda t=t: results.append(httpx.post(
            url + "/v1/analyze", json={"task": "sentiment", "texts": [t]}, timeout=60))) for t in texts]
        for p in posts:
            p.start()
        for p in posts:
            p.join()
        assert sorted(x.json()["results"][0]["prediction"] for x in results) == sorted(
            x["prediction"] for x in expected)
        metrics = httpx.get(url + "/metrics", timeout=30).text
        n_batches = float(next(line.split()[1] for line in metrics.splitlines()
                               if line.startswith("sentidistill_batch_size_count")))
        assert n_batches < 2 + len(texts)  # at least two of the concurrent requests shared a batch

        for route, payload in [("/v1/chat/completions", {"model": "clf", "messages": [{"role": "user", "content": "hi"}]}),
                               ("/v1/completions", {"model": "clf", "prompt": "hi"})]:
            r = httpx.post(url + route, json=payload, timeout=30)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "model_does_not_generate" and "/v1/analyze" in err["message"]
            assert "does not generate" in err["message"]
        assert httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"] == "clf"
        assert httpx.get(url + "/health", timeout=30).json()["kind"] == "classifier"
        r = httpx.post(url + "/v1/analyze", json={"task": "aspects", "texts": ["The pasta was cold."]}, timeout=30)
        assert r.status_code == 400 and "classification tasks only" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/analyze", json={"task": "sentiment", "texts": ["ok"],
                                                  "shots": [{"text": "bad", "gold": "negative"}]}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "shots"


def test_onnx_fp32_agrees_exactly_and_int8_closely(clf_dir, onnx_dir):
    texts = [r[0] for r in keyword_rows(200, seed=21)]
    model, tok = load_classifier(clf_dir)
    # Non-vacuous: the PyTorch answers vary over these texts on both heads.
    assert len(set(model.predict_proba(tok, "sst2", texts).argmax(1).tolist())) == 2
    assert len(set(model.predict_proba(tok, "emotion", texts).argmax(1).tolist())) >= 3
    fp32 = classifier_agreement(clf_dir, onnx_dir, texts)
    assert fp32["n"] == 2 * len(texts)
    assert fp32["rate"] == 1.0, fp32["mismatches"]
    assert fp32["max_abs_prob_diff"] < 1e-4
    int8 = classifier_agreement(clf_dir, onnx_dir, texts, int8=True)
    assert int8["rate"] >= 0.97, int8  # measured 0.9925 (sst2 head 1.0, emotion 0.985)
    # predict() on the export folder (the meta file selects onnx) gives PyTorch's labels; int8 too, mostly.
    sst = [r[0] for r in keyword_rows(60, seed=5)]
    ref = [r["prediction"] for r in predict(sst, task="sentiment", model=str(clf_dir))]
    assert [r["prediction"] for r in predict(sst, task="sentiment", model=str(onnx_dir))] == ref
    q = [r["prediction"] for r in predict(sst, task="sentiment", model=str(onnx_dir), backend="onnx", int8=True)]
    assert np.mean([a == b for a, b in zip(q, ref, strict=True)]) >= 0.9
    meta = json.loads((onnx_dir / "sentidistill_onnx.json").read_text())
    assert meta["kind"] == "classifier" and meta["head_offsets"] == [0, 2, 6] and meta["int8"] is True
    with pytest.raises(InputError, match="not an ONNX export"):
        predict(["good"], task="sentiment", model=str(clf_dir), backend="onnx")


def test_export_onnx_cli_checks_agreement(clf_dir, tmp_path):
    from typer.testing import CliRunner

    from sentidistill.cli import app

    out = CliRunner().invoke(app, ["export-onnx", str(clf_dir), "--out", str(tmp_path / "x"), "--check", "8"])
    assert out.exit_code == 0, out.output
    assert "fp32: ONNX and PyTorch pick the same label on 16/16 (text, head) pairs" in out.stdout
    assert (tmp_path / "x" / "model.onnx").is_file() and not (tmp_path / "x" / "model_int8.onnx").exists()


@pytest.mark.slow
@pytest.mark.shared
def test_minilm_int8_agrees_on_sst2_sentences(shared_data_dir, tmp_path):
    """Real MiniLM (label-embedding heads, the untrained student) on 200 SST-2 test sentences:
    fp32 ONNX gives PyTorch's arg-max on every one; int8 on at least 95%."""
    path = shared_data_dir / "sst_mr" / "stsa.binary.test"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    texts = [line.split(" ", 1)[1].strip() for line in path.read_text(encoding="utf-8").splitlines()[:200]]
    model, tok = build_classifier("builtin:minilm", [{"name": "sst2", "labels": ["negative", "positive"]}])
    ckpt = save_classifier(model, tok, tmp_path / "minilm")
    assert len(set(model.predict_proba(tok, "sst2", texts).argmax(1).tolist())) == 2
    onnx = export_classifier_onnx(ckpt, tmp_path / "onnx", int8=True)
    fp32 = classifier_agreement(ckpt, onnx, texts)
    assert fp32["rate"] == 1.0 and fp32["max_abs_prob_diff"] < 1e-3, fp32
    int8 = classifier_agreement(ckpt, onnx, texts, int8=True)
    print(f"MiniLM int8 agreement on {int8['n']} SST-2 sentences: {int8['rate']:.3f} "
          f"(largest probability difference {int8['max_abs_prob_diff']:.3f})")
    assert int8["rate"] >= 0.95, int8

"""The generation engine (dynamic batching, logprobs, stops), ONNX export/decoding, and predict()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sentidistill.errors import InputError
from sentidistill.modeling import load_model
from sentidistill.serve.engine import GenerationEngine, GenParams

PROMPTS = [
    "The food was great and the service was friendly.",
    "Terrible movie",
    "I love this phone, the battery lasts all day. The screen is awful.",
    "ok",
]


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def model_dir(request, tiny_causal_dir: Path, tiny_seq2seq_dir: Path) -> Path:
    return tiny_causal_dir if request.param == "causal" else tiny_seq2seq_dir


def test_batched_equals_one_at_a_time(model_dir: Path) -> None:
    calls: list[int] = []
    with GenerationEngine(load_model(str(model_dir)), max_batch_size=8, batch_wait_ms=200,
                          on_batch=lambda n, s: calls.append(n)) as eng:
        batched = eng.generate(PROMPTS, GenParams(max_tokens=6))
        assert calls == [len(PROMPTS)]  # all four went through one generate() call
        single = [eng.generate([p], GenParams(max_tokens=6))[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_first_token_logprob_matches_a_forward_pass(model_dir: Path) -> None:
    lm = load_model(str(model_dir))
    with GenerationEngine(lm) as eng:
        ids = eng.encode_prompt(PROMPTS[0])
        g = eng.generate([PROMPTS[0]], GenParams(max_tokens=3, logprobs=True, top_logprobs=4))[0]
    x = torch.tensor([ids])
    with torch.no_grad():
        if lm.kind == "seq2seq":
            start = lm.model.generation_config.decoder_start_token_id
            logits = lm.model(input_ids=x, decoder_input_ids=torch.tensor([[start]])).logits[0, -1]
        else:
            logits = lm.model(input_ids=x).logits[0, -1]
    lp = torch.log_softmax(logits, -1)
    first = g.logprobs[0]
    assert g.token_ids[0] == int(lp.argmax())
    assert abs(first.logprob - float(lp.max())) < 1e-4
    assert [round(v, 4) for _, v in first.top] == [round(float(v), 4) for v in lp.topk(4).values]


def test_per_row_limits_in_one_batch(tiny_causal_dir: Path) -> None:
    with GenerationEngine.from_spec(str(tiny_causal_dir), max_batch_size=8, batch_wait_ms=200) as eng:
        futs = [eng.submit("The food", GenParams(max_tokens=2)), eng.submit("The food", GenParams(max_tokens=7))]
        short, long = (f.result(timeout=60) for f in futs)
    assert short.completion_tokens <= 2 and long.completion_tokens <= 7
    assert long.text.startswith(short.text)
    if long.finish_reason == "length":
        assert long.completion_tokens == 7


def test_stop_string_truncates(tiny_causal_dir: Path) -> None:
    with GenerationEngine.from_spec(str(tiny_causal_dir)) as eng:
        full = eng.generate(["The food"], GenParams(max_tokens=10))[0].text
        stop = full[3:6]
        cut = eng.generate(["The food"], GenParams(max_tokens=10, stop=(stop,), logprobs=True))[0]
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"
    assert len(cut.logprobs) == cut.completion_tokens


def test_bad_params_raise_input_error(tiny_causal_dir: Path) -> None:
    with GenerationEngine.from_spec(str(tiny_causal_dir)) as eng:
        with pytest.raises(InputError, match="max_tokens"):
            eng.submit("x", GenParams(max_tokens=0))
        with pytest.raises(InputError, match="context"):
            eng.submit("x", GenParams(max_tokens=5000))


# -- ONNX ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_dir(model_dir: Path, tmp_path_factory) -> Path:
    from sentidistill.serve.onnx import export_onnx

    return export_onnx(model_dir, tmp_path_factory.mktemp("onnx") / model_dir.name, int8=True)


def test_onnx_agrees_with_torch(model_dir: Path, onnx_dir: Path) -> None:
    from sentidistill.bench import get_task
    from sentidistill.serve.onnx import agreement

    chat = [{"role": "user", "content": "The screen is awful."}]
    fp32 = agreement(str(model_dir), onnx_dir, [*PROMPTS, chat], max_tokens=8)
    assert fp32["n"] == 5 and fp32["rate"] == 1.0, fp32["mismatches"]
    int8 = agreement(str(model_dir), onnx_dir, PROMPTS, int8=True, max_tokens=8, task=get_task("sst2"))
    assert int8["n"] == 4 and 0.0 <= int8["rate"] <= 1.0


def test_onnx_logprobs_match_torch(model_dir: Path, onnx_dir: Path) -> None:
    from sentidistill.serve.onnx import OnnxGenerationEngine

    p = GenParams(max_tokens=4, logprobs=True, top_logprobs=3)
    with GenerationEngine.from_spec(str(model_dir)) as pt, OnnxGenerationEngine(onnx_dir) as ox:
        a, b = pt.generate(PROMPTS[:2], p), ox.generate(PROMPTS[:2], p)
    for x, y in zip(a, b, strict=True):
        assert [t.token for t in x.logprobs] == [t.token for t in y.logprobs]
        assert max(abs(s.logprob - t.logprob) for s, t in zip(x.logprobs, y.logprobs, strict=True)) < 1e-3


def test_onnx_folder_is_checked(tmp_path: Path) -> None:
    from sentidistill.serve.onnx import OnnxGenerationEngine

    with pytest.raises(InputError, match="export"):
        OnnxGenerationEngine(tmp_path)


# -- predict ------------------------------------------------------------------------------------------

def test_predict_structured_and_backends_agree(tiny_seq2seq_dir: Path, tmp_path: Path) -> None:
    import sentidistill
    from sentidistill.bench import get_task
    from sentidistill.serve.onnx import export_onnx

    rows = sentidistill.predict(["I loved it", {"text": "Awful."}], task="sentiment", model=str(tiny_seq2seq_dir),
                                max_tokens=4)
    assert [r["text"] for r in rows] == ["I loved it", "Awful."]
    task = get_task("sst2")
    for r in rows:
        assert r["task"] == "sst2" and r["prediction"] == task.parse(r["raw"]) and r["valid"] == (r["prediction"] is not None)
    onnx = export_onnx(tiny_seq2seq_dir, tmp_path / "onnx")
    again = sentidistill.predict(["I loved it", "Awful."], task="sentiment", model=str(onnx), backend="onnx",
                                 max_tokens=4)
    assert [r["raw"] for r in again] == [r["raw"] for r in rows]


def test_predict_rejects_bad_input(tiny_causal_dir: Path) -> None:
    from sentidistill.serve.predict import predict

    with pytest.raises(InputError, match="unknown task"):
        predict(["x"], task="nope", model=str(tiny_causal_dir))
    with pytest.raises(InputError, match="list"):
        predict("just one string", model=str(tiny_causal_dir))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="empty"):
        predict(["ok", ""], model=str(tiny_causal_dir))
    with pytest.raises(InputError, match="target"):
        predict(["no target here"], task="stance", model=str(tiny_causal_dir))


def test_cli_predict_jsonl_and_stdin(tiny_causal_dir: Path, tmp_path: Path) -> None:
    from sentidistill.cli import app

    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "Go Bernie", "target": "Bernie Sanders"}\n{"text": "No way", "target": "Joe Biden"}\n')
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "--file", str(f), "--task", "stance", "--model", str(tiny_causal_dir)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [x["target"] for x in lines] == ["Bernie Sanders", "Joe Biden"] and lines[0]["task"] == "pstance"
    res = runner.invoke(app, ["predict", "-", "--task", "irony", "--model", str(tiny_causal_dir)],
                        input="great, another Monday\n\nlovely weather\n")
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["text"] for x in res.stdout.splitlines() if x.startswith("{")] == \
        ["great, another Monday", "lovely weather"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    res = runner.invoke(app, ["predict", "--file", str(bad), "--model", str(tiny_causal_dir)])
    assert res.exit_code != 0 and "line 2" in str(res.exception)

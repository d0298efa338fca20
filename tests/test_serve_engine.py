"""The generation engine (dynamic batching, logprobs, stops), ONNX export/decoding, and predict().

The comparisons run on tiny models trained to list their prompt's words (``tests/tiny_trained.py``), so every
answer is several tokens long and differs from prompt to prompt: a padding, masking or batching bug
changes answers, and :func:`check_answers_differ` fails the test if the model ever stops answering.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sentidistill.errors import InputError
from sentidistill.serve.engine import GenerationEngine, GenParams
from sentidistill.students import load_student
from tiny_trained import check_answers_differ, copy_prompt, sample_prompts

# Four prompts of 2 to 5 words: a batch of them is padded, so padding bugs show.
PROMPTS = sample_prompts(4, seed=3)


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def model_dir(request, copy_causal_dir: Path, copy_seq2seq_dir: Path) -> Path:
    return copy_causal_dir if request.param == "causal" else copy_seq2seq_dir


def test_trained_models_answer(model_dir: Path) -> None:
    """The fixture itself: the model lists its prompt's words (often; far above chance) and always answers."""
    from tiny_trained import answer

    prompts = sample_prompts(16, seed=11)
    with GenerationEngine(load_student(str(model_dir))) as eng:
        got = [g.text for g in eng.generate(prompts, GenParams(max_tokens=12))]
    want = [answer(p.removesuffix(" =").split()) for p in prompts]
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 4, list(zip(got, want, strict=True))
    assert len(set(got)) >= 12


def test_batched_equals_one_at_a_time(model_dir: Path) -> None:
    calls: list[int] = []
    with GenerationEngine(load_student(str(model_dir)), max_batch_size=8, batch_wait_ms=200,
                          on_batch=lambda n, s: calls.append(n)) as eng:
        batched = eng.generate(PROMPTS, GenParams(max_tokens=8))
        assert calls == [len(PROMPTS)]  # all four went through one generate() call
        single = [eng.generate([p], GenParams(max_tokens=8))[0] for p in PROMPTS]
        assert calls == [len(PROMPTS), 1, 1, 1, 1]
    check_answers_differ([g.text for g in single])
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_padding_does_not_change_logprobs(model_dir: Path) -> None:
    """Inside a padded batch each prompt gets the log-probs it gets alone (1e-4 nats): the attention mask
    (and, for a causal LM, the positions it implies) hides the padding. Greedy answers alone would miss a
    broken mask (the trained word-lister ignores pads most of the time); the log-probs do not."""
    params = GenParams(max_tokens=6, logprobs=True, top_logprobs=3)
    with GenerationEngine(load_student(str(model_dir)), max_batch_size=8, batch_wait_ms=200) as eng:
        batched = eng.generate(PROMPTS, params)
        single = [eng.generate([p], params)[0] for p in PROMPTS]
    assert len({len(eng.encode_prompt(p)) for p in PROMPTS}) > 1  # the batch really is padded
    check_answers_differ([g.text for g in single])
    for b, s in zip(batched, single, strict=True):
        assert b.token_ids == s.token_ids
        got, want = [e.logprob for e in b.logprobs], [e.logprob for e in s.logprobs]
        assert got == pytest.approx(want, abs=1e-4)
        assert [v for e in b.logprobs for _, v in e.top] == pytest.approx(
            [v for e in s.logprobs for _, v in e.top], abs=1e-4)


def test_first_token_logprob_matches_a_forward_pass(model_dir: Path) -> None:
    lm = load_student(str(model_dir))
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


def test_per_row_limits_in_one_batch(copy_causal_dir: Path) -> None:
    prompt = copy_prompt(["screen", "plot", "food", "great"])
    with GenerationEngine.from_spec(str(copy_causal_dir), max_batch_size=8, batch_wait_ms=200) as eng:
        futs = [eng.submit(prompt, GenParams(max_tokens=2)), eng.submit(prompt, GenParams(max_tokens=9))]
        short, long = (f.result(timeout=60) for f in futs)
    assert (short.completion_tokens, short.finish_reason) == (2, "length")
    assert long.completion_tokens > 2 and long.text.startswith(short.text) and len(long.text) > len(short.text)


def test_stop_string_truncates(model_dir: Path) -> None:
    prompt = copy_prompt(["screen", "plot", "food", "great"])
    with GenerationEngine.from_spec(str(model_dir)) as eng:
        full = eng.generate([prompt], GenParams(max_tokens=10))[0]
        words = full.text.split()
        assert len(words) >= 3, full.text  # something to cut
        stop = " " + words[-1]
        cut = eng.generate([prompt], GenParams(max_tokens=10, stop=(stop,), logprobs=True))[0]
        both = eng.generate([prompt, PROMPTS[0]], GenParams(max_tokens=10, stop=(stop,)))
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.text.split() == words[: words.index(words[-1])] and cut.text.strip()
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens
    assert len(cut.logprobs) == cut.completion_tokens
    assert both[0].text == cut.text  # the stop applies inside a batch too


def test_bad_params_raise_input_error(copy_causal_dir: Path) -> None:
    with GenerationEngine.from_spec(str(copy_causal_dir)) as eng:
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
    from sentidistill.serve.onnx import agreement

    prompts = sample_prompts(12, seed=5)
    chat = [{"role": "user", "content": copy_prompt(["screen", "awful", "day"])}]
    with GenerationEngine.from_spec(str(model_dir)) as eng:
        check_answers_differ([g.text for g in eng.generate([*prompts, chat], GenParams(max_tokens=8))])
    fp32 = agreement(str(model_dir), onnx_dir, [*prompts, chat], max_tokens=8)
    assert fp32["n"] == 13 and fp32["rate"] == 1.0, fp32["mismatches"]
    # Dynamic int8 weights shift the logits a little; the trained copy model's margins are wide, so all but
    # at most one of the 12 whole answers must still be identical.
    int8 = agreement(str(model_dir), onnx_dir, prompts, int8=True, max_tokens=8)
    assert int8["n"] == 12 and int8["agree"] >= 11, int8["mismatches"]


def test_onnx_logprobs_match_torch(model_dir: Path, onnx_dir: Path) -> None:
    from sentidistill.serve.onnx import OnnxGenerationEngine

    p = GenParams(max_tokens=4, logprobs=True, top_logprobs=3)
    with GenerationEngine.from_spec(str(model_dir)) as pt, OnnxGenerationEngine(onnx_dir) as ox:
        a, b = pt.generate(PROMPTS[:2], p), ox.generate(PROMPTS[:2], p)
    check_answers_differ([g.text for g in a])
    # Multi-token answers, so positions after the first are compared too (the tiny model trained in the
    # session may end one answer after its first word; the other then runs longer).
    assert all(x.logprobs for x in a) and max(len(x.logprobs) for x in a) >= 2
    for x, y in zip(a, b, strict=True):
        assert [t.token for t in x.logprobs] == [t.token for t in y.logprobs]
        assert max(abs(s.logprob - t.logprob) for s, t in zip(x.logprobs, y.logprobs, strict=True)) < 1e-3
        for s, t in zip(x.logprobs, y.logprobs, strict=True):
            assert [tok for tok, _ in s.top] == [tok for tok, _ in t.top]


def test_export_onnx_cli_int8_agrees_on_real_inputs(copy_seq2seq_dir: Path, tmp_path: Path) -> None:
    """The README's `sentidistill export-onnx MODEL --out DIR --int8`, then the int8 graphs on the model's inputs."""
    import re

    from sentidistill.cli import app
    from sentidistill.serve.onnx import agreement

    out = tmp_path / "student-onnx"
    res = CliRunner().invoke(app, ["export-onnx", str(copy_seq2seq_dir), "--out", str(out), "--int8"])
    assert res.exit_code == 0, res.output
    reported = dict(re.findall(r"(fp32|int8): ONNX and PyTorch agree on (\d+/\d+) generations", res.output))
    assert set(reported) == {"fp32", "int8"}, res.output
    assert reported["fp32"].split("/")[0] == reported["fp32"].split("/")[1]  # fp32 must agree on all of them
    prompts = sample_prompts(16, seed=8)
    int8 = agreement(str(copy_seq2seq_dir), out, prompts, int8=True, max_tokens=8)
    # Stated rate: at least 14 of 16 whole answers identical to PyTorch's.
    assert int8["agree"] >= 14, int8["mismatches"]


def test_onnx_folder_is_checked(tmp_path: Path) -> None:
    from sentidistill.serve.onnx import OnnxGenerationEngine

    with pytest.raises(InputError, match="export"):
        OnnxGenerationEngine(tmp_path)


# -- predict ------------------------------------------------------------------------------------------

def test_predict_structured_and_backends_agree(copy_seq2seq_dir: Path, tmp_path: Path) -> None:
    import sentidistill
    from sentidistill.bench import get_task
    from sentidistill.serve.onnx import export_onnx

    texts = ["great food", "awful screen", "loved the film", "boring plot"]
    rows = sentidistill.predict([texts[0], {"text": texts[1]}, *texts[2:]], task="sentiment",
                                model=str(copy_seq2seq_dir), max_tokens=6)
    assert [r["text"] for r in rows] == texts
    check_answers_differ([r["raw"] for r in rows])  # the prompts reach the model: answers depend on the text
    task = get_task("sst2")
    for r in rows:
        assert r["task"] == "sst2" and r["prediction"] == task.parse(r["raw"]) and r["valid"] == (r["prediction"] is not None)
    onnx = export_onnx(copy_seq2seq_dir, tmp_path / "onnx")
    again = sentidistill.predict(texts, task="sentiment", model=str(onnx), backend="onnx", max_tokens=6)
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
    assert isinstance(res.exception, InputError), res.output
    assert f"{bad}, line 2, field 'text'" in str(res.exception)

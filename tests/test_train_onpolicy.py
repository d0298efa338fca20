"""``--method onpolicy``: on-policy distillation from a local causal teacher through trl's DistillationTrainer,
on tiny models sharing one tokenizer (CPU, a few steps): it trains, checkpoints, saves, resumes, and refuses
pairs it cannot distil with a clear error."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from sentidistill.config import OnPolicyConfig, StudentConfig, TrainingConfig
from sentidistill.errors import InputError
from sentidistill.testing import build_tiny_causal_lm, build_tiny_tokenizer
from sentidistill.train.engine import train_student

_ROWS = [("The food was great and the service was friendly.", "positive"),
         ("Terrible movie, boring plot and bad acting.", "negative"),
         ("I love this phone, the battery lasts all day.", "positive"),
         ("The screen is awful.", "negative")]
_OP = OnPolicyConfig(beta=0.5, max_completion_length=6)


def _corpus(path: Path) -> Path:
    rows = [{"source": json.dumps([{"role": "system", "content": "Answer positive or negative."},
                                   {"role": "user", "content": f"Sentence: {text}\nLabel:"}]),
             "target": label, "task": "tiny", "teacher_logprobs": None, "status": "valid"}
            for text, label in _ROWS]
    rows.append({"source": "x", "target": "y", "task": "tiny", "teacher_logprobs": None, "status": "error"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    # Wider and deeper than the student, other seed: only the tokenizer (and so the vocabulary) is shared.
    return build_tiny_causal_lm(tmp_path_factory.mktemp("onpolicy") / "teacher", seed=1, hidden=96, layers=3)


def _training(max_steps: int) -> TrainingConfig:
    return TrainingConfig(max_steps=max_steps, batch_size=2, learning_rate=1e-2, save_steps=2, logging_steps=1,
                          save_total_limit=5, eval_steps=1)


def _losses(out: Path, step: int) -> dict[int, float]:
    hist = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in hist if "loss" in h}


def test_onpolicy_trains_checkpoints_saves_and_resumes(tiny_causal_dir, teacher_dir, tmp_path) -> None:
    corpus = _corpus(tmp_path / "icl.parquet")
    out = tmp_path / "out"
    seen: list[int] = []

    def probe(model, tokenizer) -> dict[str, float]:  # the eval hook records which steps each call really trains
        seen.append(1)
        return {"probe": 1.0}

    def run() -> Path:
        return train_student(str(tiny_causal_dir), corpus, out, _training(4), method="onpolicy",
                             teacher_model=str(teacher_dir), onpolicy=_OP, eval_fn=probe,
                             student=StudentConfig(max_source_length=64))

    final = run()
    assert final == out / "final"
    names = {p.name for p in final.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_summary.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    info = json.loads((final / "training_summary.json").read_text())
    assert info["method"] == "onpolicy" and info["global_step"] == 4 and info["resumed_from"] is None
    assert info["corpus_rows"]["dropped_status"] == 1
    assert info["onpolicy"]["teacher_model"] == str(teacher_dir) and info["onpolicy"]["beta"] == 0.5
    assert len(seen) == 4

    # trl's loop ran: a finite positive divergence each step, on completions the student generated.
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-"))
    assert ckpts == ["checkpoint-2", "checkpoint-4"]
    assert (out / "checkpoints" / "checkpoint-2" / "model.safetensors").exists()
    uninterrupted = _losses(out, 4)
    assert sorted(uninterrupted) == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for v in uninterrupted.values()), uninterrupted
    history = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    # (trl drains its metrics into the next log call, here the eval hook's, so look in every entry)
    gen = [h for h in history if "completions/mean_length" in h]
    assert [h["step"] for h in gen] == [1, 2, 3, 4]
    assert all(1 <= h["completions/mean_length"] <= 6 and h["entropy"] > 0 for h in gen), gen

    # The student learnt (every tensor compared by name) and kept its architecture.
    before, after = load_file(tiny_causal_dir / "model.safetensors"), load_file(final / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before)

    # A crash after step 3: the last checkpoint and final/ are gone. The same call resumes from checkpoint-2,
    # trains steps 3 and 4 only, and (same data order, RNG restored, so the same samples) ends where the
    # uninterrupted run ended.
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    shutil.rmtree(final)
    seen.clear()
    run()
    info = json.loads((final / "training_summary.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") and info["global_step"] == 4
    assert [h["step"] for h in info["bench_history"]] == [3, 4] and len(seen) == 2
    resumed = _losses(out, 4)
    for step in (3, 4):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-4), (step, resumed, uninterrupted)
    again = load_file(final / "model.safetensors")
    assert all(torch.allclose(after[k], again[k], atol=1e-6) for k in after)


def test_seq2seq_student_or_other_tokenizer_is_a_clear_error(tiny_causal_dir, tiny_seq2seq_dir, teacher_dir,
                                                            tmp_path) -> None:
    corpus = _corpus(tmp_path / "icl.parquet")
    training = _training(1)
    with pytest.raises(InputError, match=r"field 'student'.*causal \(decoder-only\) student.*encoder-decoder"):
        train_student(str(tiny_seq2seq_dir), corpus, tmp_path / "a", training, method="onpolicy",
                      teacher_model=str(teacher_dir))
    with pytest.raises(InputError, match=r"field 'teacher'.*causal \(decoder-only\) teacher"):
        train_student(str(tiny_causal_dir), corpus, tmp_path / "b", training, method="onpolicy",
                      teacher_model=str(tiny_seq2seq_dir))
    with pytest.raises(InputError, match="needs a teacher model"):
        train_student(str(tiny_causal_dir), corpus, tmp_path / "c", training, method="onpolicy")

    # Same architecture, another tokenizer (smaller BPE vocabulary): ids would mean different text.
    other = build_tiny_causal_lm(tmp_path / "other", seed=2)
    build_tiny_tokenizer(vocab_size=400).save_pretrained(other)
    with pytest.raises(InputError, match=r"must share a tokenizer for on-policy distillation: vocabularies differ"):
        train_student(str(tiny_causal_dir), corpus, tmp_path / "d", training, method="onpolicy",
                      teacher_model=str(other))

    # Same tokenizer, output layer padded to another size (as Qwen2.5 0.5B vs 7B).
    from transformers import AutoModelForCausalLM

    padded = AutoModelForCausalLM.from_pretrained(teacher_dir)
    padded.resize_token_embeddings(padded.config.vocab_size + 64)
    padded.save_pretrained(tmp_path / "padded")
    build_tiny_tokenizer().save_pretrained(tmp_path / "padded")
    with pytest.raises(InputError, match=r"output layers differ in size"):
        train_student(str(tiny_causal_dir), corpus, tmp_path / "e", training, method="onpolicy",
                      teacher_model=str(tmp_path / "padded"))
    for name in "abcde":
        assert not (tmp_path / name / "final").exists()


def test_cli_method_onpolicy(tiny_causal_dir, teacher_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from sentidistill.cli import app

    corpus = _corpus(tmp_path / "icl.parquet")
    base = ["train", "--student", str(tiny_causal_dir), "--corpus", str(corpus), "--out", str(tmp_path / "out"),
            "--method", "onpolicy", "--max-steps", "1", "--batch-size", "2", "--save-steps", "1"]
    missing = CliRunner().invoke(app, base)
    assert isinstance(missing.exception, InputError) and "--teacher-model" in str(missing.exception)
    done = CliRunner().invoke(app, [*base, "--teacher-model", str(teacher_dir), "--beta", "0", "--temperature",
                                    "0.7", "--max-completion-length", "4"])
    assert done.exit_code == 0, (done.output, done.exception)
    info = json.loads((tmp_path / "out" / "final" / "training_summary.json").read_text())
    assert info["method"] == "onpolicy" and info["global_step"] == 1
    assert info["onpolicy"] == {"teacher_model": str(teacher_dir), "beta": 0.0, "max_completion_length": 4,
                                "temperature": 0.7}

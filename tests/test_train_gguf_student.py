"""GGUF students: a real tiny GGUF (written with the gguf package's writer) converts once, verified and cached."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from sentidistill.errors import InputError
from sentidistill.students import load_student, resolve_model_path
from sentidistill.students.gguf import (
    RECORD,
    convert_gguf_to_hf,
    is_current,
    is_gguf_spec,
    read_record,
    resolve_gguf_source,
)

gguf = pytest.importorskip("gguf")
from sentidistill.testing import write_gguf_from_hf  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gguf(tiny_causal_dir, tmp_path_factory) -> Path:
    return write_gguf_from_hf(tiny_causal_dir, tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf")


@pytest.fixture(scope="module")
def converted(tiny_gguf, tmp_path_factory) -> Path:
    return convert_gguf_to_hf(tiny_gguf, tmp_path_factory.mktemp("conv") / "student")


def test_conversion_is_exact_and_recorded(converted, tiny_gguf, tiny_causal_dir):
    from transformers import AutoModelForCausalLM

    rec = read_record(converted)
    assert rec["source_size"] == tiny_gguf.stat().st_size and len(rec["source_sha256"]) == 64
    assert rec["verified"] and rec["max_abs_logit_diff"] < 1e-4 and rec["model_type"] == "qwen2"
    assert sorted(p.name for p in converted.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(converted.glob("*.bin")) and "quantization_config" not in (converted / "config.json").read_text()
    # f32 GGUF -> safetensors is lossless: the student is the original tiny model, weight for weight.
    orig = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    conv = AutoModelForCausalLM.from_pretrained(converted)
    ids = torch.tensor([[5, 17, 42, 99, 300]])
    with torch.no_grad():
        assert torch.allclose(orig(ids).logits, conv(ids).logits, atol=1e-5)


def test_second_call_is_skipped_and_a_changed_source_reconverts(converted, tiny_gguf, tmp_path):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf_to_hf(tiny_gguf, converted) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # untouched

    # Same folder, a source with other bytes (a new key/value pair): the recorded hash no longer matches.
    src = shutil.copy(tiny_gguf, tmp_path / "tiny-qwen2.gguf")
    out = shutil.copytree(converted, tmp_path / "student")
    reader = gguf.GGUFReader(src)
    assert reader.fields  # a readable GGUF
    with open(src, "ab") as fh:  # trailing bytes change the sha256 but not what transformers reads
        fh.write(b"\0" * 32)
    old = read_record(out)["source_sha256"]
    assert not is_current(out, old, Path(src).stat().st_size)
    convert_gguf_to_hf(src, out)
    rec = read_record(out)
    assert rec["source_sha256"] != old and rec["source_size"] == Path(src).stat().st_size
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_torn_output_is_redone(converted, tiny_gguf, tmp_path):
    out = shutil.copytree(converted, tmp_path / "student")
    (out / "model.safetensors").unlink()  # e.g. a half-deleted cache folder
    assert not is_current(out, read_record(out)["source_sha256"], tiny_gguf.stat().st_size)
    convert_gguf_to_hf(tiny_gguf, out)
    assert (out / "model.safetensors").is_file()


def test_bad_sources_are_refused(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(InputError, match="bad magic"):
        convert_gguf_to_hf(fake, tmp_path / "out")
    with pytest.raises(InputError, match="not found"):
        resolve_gguf_source(tmp_path / "missing.gguf")
    with pytest.raises(InputError, match="unknown builtin"):
        resolve_gguf_source("gguf:builtin:no-such-model")
    assert not (tmp_path / "out").exists()


def test_an_unrelated_output_folder_is_never_replaced(tiny_gguf, tmp_path):
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a GGUF conversion"):
        convert_gguf_to_hf(tiny_gguf, mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_gguf_spec_loads_as_a_student(tiny_gguf, tmp_path):
    assert is_gguf_spec(tiny_gguf) and is_gguf_spec("gguf:builtin:qwen2.5-coder-0.5b") and not is_gguf_spec("gpt2")
    path = Path(resolve_model_path(f"gguf:{tiny_gguf}", cache_dir=tmp_path))
    assert path.parent == tmp_path / "gguf-hf" and (path / RECORD).is_file()
    lm = load_student(str(tiny_gguf), cache_dir=tmp_path)  # a bare .gguf path works too, same cached folder
    assert lm.kind == "causal" and lm.tokenizer.padding_side == "left"
    enc = lm.tokenizer(["Review: great"], return_tensors="pt")
    out = lm.model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3  # the prompt plus exactly three new tokens
    # The converted weights are the GGUF's: the first greedy token is the arg-max of a plain forward pass.
    with torch.no_grad():
        first = int(lm.model(**enc).logits[0, -1].argmax())
    assert int(out[0, enc["input_ids"].shape[1]]) == first
    assert len(list((tmp_path / "gguf-hf").iterdir())) == 1


@pytest.mark.slow
def test_builtin_qwen_student_converts_once():
    """The real 0.5B GGUF (de-quantised by transformers, ~1-2 min on 2 cores the first time)."""
    from sentidistill.students.gguf import gguf_student_dir

    out = gguf_student_dir("gguf:builtin:qwen2.5-coder-0.5b", os.environ.get("SENTIDISTILL_CACHE"))
    rec = read_record(out)
    assert rec["verified"] and rec["model_type"] == "qwen2" and rec["parameters"] > 400_000_000


def test_paper1_offline_example_is_a_valid_config():
    from sentidistill.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "paper1_offline.yaml")
    assert is_gguf_spec(cfg.student.model) and cfg.student.kind == "causal"
    assert cfg.teacher.kind == "llamacpp" and cfg.teacher.model == "builtin:qwen2.5-coder-1.5b"
    assert cfg.icldist.top_logprobs == 20 and (cfg.icldist.min_shots, cfg.icldist.max_shots) == (0, 4)
    assert not cfg.knowdist.enabled and cfg.bench.limit >= 60 and cfg.bench.include_teacher
    assert set(cfg.bench.tasks) == set(cfg.icldist.tasks)

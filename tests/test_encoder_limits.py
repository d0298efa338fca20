"""Inputs longer than the encoder (issue 24, field report 3): the classifier's length is the encoder's own.

A tiny BERT with 64 positions stands in for MiniLM's 512: ``classifier.max_length`` above it is cut to 64
(with a warning) when the student is built or loaded, and a text of several hundred tokens is truncated
wherever the classifier tokenises - training, predict/bench (``predict_proba``), the serve engine's torch and
ONNX backends. For an encoder known without loading it (``builtin:minilm``) the config refuses the value.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sentidistill.config import ClassifierConfig, load_config
from sentidistill.errors import ConfigError
from sentidistill.students.classifier import (
    build_classifier,
    encoder_position_limit,
    load_classifier,
    save_classifier,
)

POSITIONS = 64
LONG = " ".join(["the film was great but the plot was dull"] * 60)  # ~600 tokens, far past 64
TASKS = [{"name": "toy", "labels": ["negative", "neutral", "positive"]}]


@pytest.fixture(scope="module")
def short_encoder(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from sentidistill.testing import build_tiny_tokenizer

    out = tmp_path_factory.mktemp("enc64") / "bert"
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=POSITIONS, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def test_the_long_text_is_longer_than_the_encoder(short_encoder):
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(short_encoder)(LONG)["input_ids"]) > 5 * POSITIONS


def test_position_limit_of_bert_and_roberta_configs():
    assert encoder_position_limit({"model_type": "bert", "max_position_embeddings": 512}) == 512
    # RoBERTa: 514 position rows, positions start after pad_token_id (1): 512 tokens.
    assert encoder_position_limit({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}) == 512

    class Tok:
        model_max_length = 256

    assert encoder_position_limit({"model_type": "bert", "max_position_embeddings": 512}, Tok()) == 256
    assert encoder_position_limit({"model_type": "t5"}) is None


@pytest.mark.parametrize("max_length", [POSITIONS - 1, POSITIONS, POSITIONS + 1, 4096])
def test_build_clamps_to_the_encoder_and_predicts_long_text(short_encoder, max_length, caplog):
    with caplog.at_level(logging.WARNING, logger="sentidistill.students.classifier"):
        model, tok = build_classifier(str(short_encoder), TASKS, max_length=max_length)
    assert model.config.max_seq_length == min(max_length, POSITIONS)
    assert ("positions" in caplog.text) == (max_length > POSITIONS)  # warned exactly when cut
    p = model.predict_proba(tok, "toy", [LONG, "great"])
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1.0)


def test_a_tokenizer_limit_below_the_positions_is_obeyed(short_encoder, tmp_path):
    import shutil

    enc = tmp_path / "enc48"
    shutil.copytree(short_encoder, enc)
    tc = json.loads((enc / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["model_max_length"] = 48  # the tokenizer's own limit, below the encoder's 64 positions
    (enc / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    model, tok = build_classifier(str(enc), TASKS, max_length=4096)
    assert model.config.max_seq_length == 48
    assert model.predict_proba(tok, "toy", [LONG]).shape == (1, 3)


def test_checkpoint_saved_past_the_limit_loads_at_the_limit(short_encoder, tmp_path):
    model, tok = build_classifier(str(short_encoder), TASKS, max_length=32)
    folder = save_classifier(model, tok, tmp_path / "clf")
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg["max_seq_length"] = 1024  # as an older version saved it
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    loaded, tok2 = load_classifier(folder)
    assert loaded.config.max_seq_length == POSITIONS
    assert loaded.predict_proba(tok2, "toy", [LONG]).shape == (1, 3)


def test_serve_backends_and_onnx_export_truncate_long_text(short_encoder, tmp_path):
    from sentidistill.serve.classifier_backends import OnnxClassifierBackend, TorchClassifierBackend
    from sentidistill.serve.classifier_onnx import export_classifier_onnx

    model, tok = build_classifier(str(short_encoder), TASKS, max_length=4096)
    folder = save_classifier(model, tok, tmp_path / "clf")
    torch_logits, torch_lens = TorchClassifierBackend(folder, device="cpu").logits([LONG, "dull"])
    assert torch_lens[0] == POSITIONS
    onnx_dir = export_classifier_onnx(folder, tmp_path / "onnx")
    onnx_logits, onnx_lens = OnnxClassifierBackend(onnx_dir).logits([LONG, "dull"])
    assert onnx_lens == torch_lens
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


def test_training_tokenises_at_the_encoder_limit(short_encoder, tmp_path):
    from sentidistill.data.soft_label_corpus import write_soft_labels
    from sentidistill.train.classifier import train_classifier

    rows = []
    for i in range(8):
        p = [0.1, 0.1, 0.8] if i % 2 else [0.8, 0.1, 0.1]
        rows.append({"task": "toy", "id": f"r{i}", "text": LONG + f" {i}", "target": None,
                     "labels": TASKS[0]["labels"], "teacher_logprobs": [float(np.log(x)) for x in p],
                     "probs_raw": p, "probs": p, "via": "exact", "split": "dev" if i < 2 else "train"})
    from sentidistill.distill.curation import curate

    curated, _ = curate(rows, seed=0, dedupe=False, min_confidence=0.0, dev_fraction=0.25, balance="none")
    write_soft_labels(curated, tmp_path / "soft.parquet")
    cfg = ClassifierConfig(enabled=True, encoder=str(short_encoder), max_length=4096, patience=1,
                           training={"epochs": 1, "batch_size": 4, "eval_steps": 1, "save_steps": 1,
                                     "logging_steps": 100})
    final = train_classifier(tmp_path / "soft.parquet", tmp_path / "out", cfg, seed=0)
    model, _ = load_classifier(final)
    assert model.config.max_seq_length == POSITIONS


def test_known_encoder_refuses_a_length_past_its_positions(tmp_path):
    ClassifierConfig(encoder="builtin:minilm", max_length=512)  # exactly the limit: fine
    with pytest.raises(ValueError, match="512"):
        ClassifierConfig(encoder="builtin:minilm", max_length=513)
    path = tmp_path / "run.yaml"
    path.write_text("soft_labels: {enabled: true}\nclassifier: {enabled: true, max_length: 1024}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "classifier.max_length" in str(err.value) and "512" in str(err.value) and str(path) in str(err.value)

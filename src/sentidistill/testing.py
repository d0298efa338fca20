"""Tiny models and helpers for tests and benchmarks; production code never imports this module.

(An import-linter contract in pyproject.toml enforces that.) The builders need no hub access: the
tokenizer is trained on the fly and the weights are seeded random.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from sentidistill.students.base import PLAIN_CHAT_TEMPLATE

#: The tiny models' own chat template: it renders exactly as the stand-in PLAIN_CHAT_TEMPLATE (role lines),
#: but is the model's own, so a tiny causal student's default prompt style is ``chat`` like an instruct model's.
TINY_CHAT_TEMPLATE = "{#- the tiny test models' own chat template -#}" + PLAIN_CHAT_TEMPLATE

_TINY_CORPUS = [
    "The food was great and the service was friendly.",
    "Terrible movie, boring plot and bad acting.",
    "positive negative neutral conflict irony non-irony anger joy optimism sadness",
    "FAVOR AGAINST Not Intimate Moderately Intimate Highly Intimate",
    "Sentence: Label: Answer: Review: Aspect: Opinion: [('pizza', 'positive')]",
    "I love this phone, the battery lasts all day. The screen is awful.",
    "Analyse the sentiment of the review below. Overall polarity: positive.",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on the fly, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def build_tiny_causal_lm(out_dir: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A random-init Qwen2-shaped causal LM (~100k parameters) with its own tokenizer, saved to ``out_dir``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def build_tiny_seq2seq(out_dir: str | Path, seed: int = 0, d_model: int = 64, layers: int = 2) -> Path:
    """A random-init T5-shaped encoder-decoder with its own tokenizer, saved to ``out_dir``."""
    from transformers import T5Config, T5ForConditionalGeneration

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(tok), d_model=d_model, d_kv=16, d_ff=d_model * 2, num_layers=layers,
        num_decoder_layers=layers, num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def write_gguf_from_hf(hf_dir: Path, out: Path, *, chat_template: str | None = None) -> Path:
    """Write a Qwen2 HF checkpoint (f32) + its byte-level BPE tokenizer as a GGUF file, as llama.cpp lays it out.

    ``chat_template``: written as ``tokenizer.chat_template`` (the llama.cpp teacher refuses a GGUF without one)."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(out), "qwen2")
    n = cfg["num_hidden_layers"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base((cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    vocab = {**tj["model"]["vocab"], **{t["content"]: t["id"] for t in tj["added_tokens"]}}
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in tj["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])
    if chat_template is not None:
        w.add_chat_template(chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, n)
    for key, value in load_file(hf_dir / "model.safetensors").items():
        w.add_tensor(names.get_name(key, try_suffixes=(".weight", ".bias")), value.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def build_tiny_encoder(out_dir: str | Path, seed: int = 0) -> Path:
    """A random-init BERT-shaped encoder (hidden 32, 2 layers) with a tokenizer trained on the fly."""
    from transformers import BertConfig, BertModel

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def build_tiny_classifier(out_dir: str | Path, seed: int = 0,
                          tasks: list[dict] | None = None) -> Path:
    """A classifier student on :func:`build_tiny_encoder` with heads from label embeddings, saved to
    ``out_dir`` (default: one ``sst2`` head over negative/neutral/positive)."""
    from sentidistill.students.classifier import build_classifier, save_classifier

    out_dir = Path(out_dir)
    enc = build_tiny_encoder(out_dir.with_name(out_dir.name + "-encoder"), seed=seed)
    tasks = tasks or [{"name": "sst2", "labels": ["negative", "neutral", "positive"]}]
    model, tok = build_classifier(str(enc), tasks, max_length=64, seed=seed)
    return save_classifier(model, tok, out_dir)


def _tiny_gguf(folder: Path) -> str:
    return str(write_gguf_from_hf(build_tiny_causal_lm(folder / "causal-src"), folder / "tiny-qwen2.gguf"))


#: kind -> builder of a small spec of that student kind (``folder`` -> spec). Every registered student kind
#: needs an entry: the contract tests (tests/test_students_contract.py) run over this table and fail for a
#: registered kind that has none. ``slow`` kinds load real weights.
TINY_STUDENTS: dict[str, Callable[[Path], str]] = {
    "seq2seq": lambda folder: str(build_tiny_seq2seq(folder / "seq2seq")),
    "causal": lambda folder: str(build_tiny_causal_lm(folder / "causal")),
    "gguf": _tiny_gguf,
    "builtin": lambda folder: "builtin:minilm-encdec",
    "classifier": lambda folder: str(build_tiny_classifier(folder / "classifier")),
}
SLOW_STUDENTS = frozenset({"builtin"})

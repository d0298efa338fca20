"""Export one head of a classifier student as the encoder's own stock ``AutoModelForSequenceClassification``.

The exported folder loads anywhere ``transformers`` does, without this package::

    from transformers import pipeline
    clf = pipeline("text-classification", model="exported/", top_k=None, truncation=True)

Why only ``pooling="pooler"`` students: a stock ``BertForSequenceClassification`` computes
``classifier(dropout(tanh(W_p h_[CLS] + b_p)))``. The default classifier student mean-pools the last hidden
states with the attention mask and L2-normalises before its head; no stock ``*ForSequenceClassification``
class does that (XLM's ``SequenceSummary(mean)`` ignores the mask and none normalises, and ModernBERT's mean
pooling comes with another architecture), and the division by the vector's norm cannot be folded into
weights because the norm differs per text. Shipping a custom pooling would need ``trust_remote_code``. So a
student meant for export is trained with ``classifier.pooling: pooler`` (``sentidistill distill`` does so by
default): its forward pass *is* ``BertForSequenceClassification``'s, the export copies the encoder weights
(pooler included) and the task head into ``classifier.weight``/``classifier.bias``, and a numerical check
(probabilities within :data:`PROB_TOLERANCE` on probe texts) refuses any export that would not reproduce the
student.

Folder layout: ``config.json`` (``id2label``/``label2id``, ``problem_type``), ``model.safetensors``,
tokenizer files (``model_max_length`` = the student's max length, so ``truncation=True`` cuts where the
student does), ``model.onnx`` (inputs ``input_ids``, ``attention_mask``[, ``token_type_ids``] -> ``logits``
``[batch, K]``: the names onnxruntime users and Optimum's ``ORTModelForSequenceClassification`` expect) and
``README.md``, a model card with Hugging Face metadata (base model, teacher, data, metrics with intervals,
calibration, intended use, limitations) built from the run folder the student came from.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_text

log = logging.getLogger(__name__)

PROB_TOLERANCE = 1e-5  # largest class-probability difference the export may show against the student
PROBE_TEXTS = (
    "The food was great and the service was friendly.", "Terrible movie, boring plot.",
    "It was fine, nothing special.", "I love this phone but the screen is awful.", "ok",
    "What a waste of two hours. Never again, not even for free, and I mean it.",
)
#: ``builtin:`` encoders -> their Hugging Face hub id (the model card's ``base_model``).
BASE_MODEL_IDS = {"builtin:minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def export_hf(student: str | Path, out_dir: str | Path, *, task: str | None = None, onnx: bool = True,
              check_texts: Sequence[str] = ()) -> Path:
    """Write the head ``task`` (default: the only head) of the classifier student at ``student`` to ``out_dir``
    as a stock ``AutoModelForSequenceClassification`` (layout in the module doc); returns ``out_dir``.

    The export is checked before it is written: on :data:`PROBE_TEXTS` plus ``check_texts`` its softmax must
    equal the student's within :data:`PROB_TOLERANCE`. Written beside and renamed into place. Raises
    :class:`InputError`: not a classifier checkpoint; a mean-pooled student (what to do instead); an encoder
    whose ``*ForSequenceClassification`` is not pooler -> dropout -> linear; a failed check."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from sentidistill.students.classifier import load_classifier

    model, tok = load_classifier(student)
    model.float().eval()
    names = model.task_names
    if task is None:
        if len(names) != 1:
            raise InputError("the student has several heads: say which", field="--task", expected=" | ".join(names))
        task = names[0]
    head = model.task_index(task)
    labels = [str(x) for x in model.config.tasks[head]["labels"]]
    if getattr(model.config, "pooling", "mean") != "pooler":
        raise InputError(
            f"{student} mean-pools and L2-normalises its sentence vector, which no stock "
            "*ForSequenceClassification class computes (see sentidistill.students.hf_export)", field="STUDENT",
            expected="a student trained with classifier.pooling: pooler (the default of `sentidistill distill`; "
                     "`--set classifier.pooling=pooler` for `sentidistill run`), or `sentidistill export-onnx` for "
                     "this one")
    enc_cfg = dict(model.config.encoder)
    model_type = enc_cfg.pop("model_type")
    for k in ("architectures", "id2label", "label2id", "num_labels", "problem_type", "_name_or_path",
              "transformers_version"):
        enc_cfg.pop(k, None)
    cfg = AutoConfig.for_model(model_type, **enc_cfg, num_labels=len(labels),
                               id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
                               problem_type="single_label_classification")
    hf = AutoModelForSequenceClassification.from_config(cfg).eval()
    cfg.architectures = [type(hf).__name__]
    base = getattr(hf, hf.base_model_prefix, None)
    classifier = getattr(hf, "classifier", None)
    if base is None or not isinstance(classifier, nn.Linear) or getattr(base, "pooler", None) is None:
        raise InputError(f"{type(hf).__name__} is not pooler -> dropout -> linear, so it cannot hold this student",
                         field="STUDENT", expected="a BERT-family encoder (e.g. all-MiniLM-L6-v2)")
    try:
        base.load_state_dict(model.encoder.state_dict())
    except RuntimeError as exc:
        raise InputError(f"the encoder weights do not fit {type(hf).__name__}: {str(exc)[:300]}", field="STUDENT") from None
    with torch.no_grad():
        classifier.weight.copy_(model.heads[head].weight)
        classifier.bias.copy_(model.heads[head].bias)
    max_len = int(model.config.max_seq_length)
    worst = _max_prob_diff(model, tok, hf, task, [*PROBE_TEXTS, *check_texts], max_len)
    if worst > PROB_TOLERANCE:
        raise InputError(f"the exported {type(hf).__name__} differs from the student by {worst:.2e} in a class "
                         "probability", field="STUDENT", expected=f"at most {PROB_TOLERANCE}")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf.save_pretrained(tmp, safe_serialization=True)
    tok.model_max_length = max_len
    tok.save_pretrained(tmp)
    if onnx:
        export_onnx_logits(hf, tok, tmp / "model.onnx")
    atomic_write_text(tmp / "README.md", model_card(student, task, labels, type(hf).__name__, max_len))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    log.info("exported %s head '%s' as %s to %s (largest probability difference %.1e)", student, task,
             type(hf).__name__, out_dir, worst)
    return out_dir


@torch.inference_mode()
def _max_prob_diff(model: Any, tok: Any, hf: nn.Module, task: str, texts: Sequence[str], max_len: int) -> float:
    """Largest |p_student - p_export| over ``texts`` (one batch, padded: the padded path is checked too)."""
    ps = model.predict_proba(tok, task, list(texts), head=task)
    enc = tok(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    pe = torch.softmax(hf(**enc).logits.float(), dim=-1).numpy()
    return float(np.abs(ps - pe).max())


def export_onnx_logits(hf: nn.Module, tok: Any, path: Path) -> Path:
    """``hf`` as one ONNX graph: the tokenizer's inputs (``input_ids``, ``attention_mask``[,
    ``token_type_ids``]; dynamic batch and sequence axes) -> ``logits`` ``[batch, K]``."""
    from sentidistill.students.onnx_graphs import OPSET

    probe = tok(["a b c d e f", "a b"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in probe]

    class _Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.hf(**dict(zip(names, args, strict=True))).logits

    dyn = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits().eval(), tuple(probe[n] for n in names), str(path), dynamo=False,
                          input_names=names, output_names=["logits"], dynamic_axes=dyn, opset_version=OPSET,
                          do_constant_folding=True)
    return path


def _run_files(student: Path) -> dict[str, Any]:
    """What the run folder a student came from says about it (``<run>/models/classifier/final``)."""
    import yaml

    run = student.resolve().parents[2] if len(student.resolve().parents) > 2 else student
    out: dict[str, Any] = {"run": run}
    for key, rel in (("config", "config.yaml"),):
        p = run / rel
        if p.is_file():
            out[key] = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    for key, rel in (("soft", "corpus/soft_labels.stats.json"),
                     ("summary", "models/classifier/training_summary.json")):
        p = run / rel
        if p.is_file():
            out[key] = json.loads(p.read_text(encoding="utf-8"))
    bench = {}
    for name in ("teacher", "teacher_calibrated", "classifier_before", "classifier_after"):
        p = run / "bench" / name / "metrics.json"
        if p.is_file():
            bench[name] = json.loads(p.read_text(encoding="utf-8"))
    out["bench"] = bench
    return out


def model_card(student: str | Path, task: str, labels: list[str], architecture: str, max_len: int) -> str:
    """``README.md`` of an export: Hugging Face model-card YAML metadata (``base_model``, ``pipeline_tag``,
    ``model-index`` with the bench results) and the sections a user needs (teacher, data, results with 95%
    intervals, calibration, intended use, limitations), from the student's run folder when there is one."""
    import yaml

    info = _run_files(Path(student))
    cfg = info.get("config") or {}
    enc = str(((cfg.get("classifier") or {}).get("encoder")) or "")
    base_model = BASE_MODEL_IDS.get(enc, enc if enc and not Path(enc).is_absolute() else None)
    teacher = cfg.get("teacher") or {}
    teacher_name = f"{teacher.get('kind', '?')}:{teacher.get('model', '?')}" if teacher else "unknown"
    soft = info.get("soft") or {}
    tstats = (soft.get("tasks") or {}).get(task, {})
    summary = info.get("summary") or {}
    rows = []
    for name, m in info["bench"].items():
        t = (m.get("tasks") or {}).get(task)
        if t:
            rows.append((m.get("model", {}).get("name", name), t.get("score"), t.get("ci_low"), t.get("ci_high"),
                         t.get("n")))
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-classification",
                            "tags": ["text-classification", "knowledge-distillation", "sentidistill"]}
    if base_model:
        meta["base_model"] = base_model
    after = (info["bench"].get("classifier_after") or {}).get("tasks", {}).get(task)
    if after:
        meta["model-index"] = [{"name": Path(str(info["run"])).name, "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": {"name": task, "type": task, "split": "test"},
            "metrics": [{"type": "f1", "name": "macro-F1 (x100)", "value": round(100 * after["score"], 1),
                         "args": {"average": "macro", "ci95": [round(100 * after.get("ci_low", float("nan")), 1),
                                                               round(100 * after.get("ci_high", float("nan")), 1)]}}],
        }]}]

    def pct(x: Any) -> str:
        return f"{100 * x:.1f}" if isinstance(x, (int, float)) else "-"

    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# {task}: a distilled {architecture}", "",
             f"Labels: {', '.join(labels)}. A stock `{architecture}` (no custom code): "
             f"`pipeline(\"text-classification\", model=DIR, top_k=None, truncation=True)`; ONNX in `model.onnx` "
             "(input_ids, attention_mask, token_type_ids -> logits).", "",
             "## How it was made", "",
             f"- base model: {base_model or enc or 'unknown'}",
             f"- teacher: `{teacher_name}`, label-free: the teacher's restricted scores over the label words "
             f"for {tstats.get('texts', '?')} unlabeled texts (no gold labels used for training)",
             f"- calibration: {soft.get('calibration', '?')} (the teacher's label prior over the pool divided "
             f"out; prior {dict(zip(labels, [round(p, 3) for p in (soft.get('priors') or {}).get(task, [])], strict=False)) or '?'})",
             f"- training: soft-label KL, early stopping on agreement with the teacher on a held-out "
             f"teacher-labelled dev slice ({summary.get('dev_rows', '?')} texts): best agreement "
             f"{pct(summary.get('best_teacher_agreement'))}",
             f"- max input length: {max_len} tokens (longer texts are cut; pass `truncation=True`)", ""]
    if rows:
        lines += ["## Results (macro-F1 x100 on the labeled test items, 95% bootstrap intervals)", "",
                  "| model | macro-F1 | 95% interval | items |", "| --- | ---: | --- | ---: |"]
        lines += [f"| {n} | {pct(s)} | [{pct(lo)}, {pct(hi)}] | {k or '-'} |" for n, s, lo, hi, k in rows]
        lines.append("")
    lines += ["## Intended use", "",
              f"Classifying short texts like the ones it was distilled on into {', '.join(labels)}, fast and "
              "offline, where the teacher's quality is good enough.", "",
              "## Limitations", "",
              "- It learns the teacher's judgement, errors and biases included; it is not trained on human labels.",
              "- Scores hold for the data it was measured on; other domains, languages or label meanings may differ.",
              "- The intervals reflect test-set sampling only, not the teacher's or the pool's variance.", ""]
    return "\n".join(lines)

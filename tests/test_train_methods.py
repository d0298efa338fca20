"""Training settings: one mapping from the config to every method's TrainingArguments, settings a method cannot
honour refused at config load (naming the field), the train CLI's options generated from the config fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from pydantic import Field
from typer.testing import CliRunner

from sentidistill.config import TrainingConfig, default_training, load_config
from sentidistill.errors import ConfigError
from sentidistill.train.arguments import APPLIED_ELSEWHERE, trainer_arguments
from sentidistill.train.methods import TRAINING_METHODS, arguments_for


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


@pytest.mark.parametrize("raw,field", [
    ({"soft_labels": {"enabled": True}, "classifier": {"enabled": True, "training": {"lora": True}}},
     "classifier.training.lora"),
    ({"soft_labels": {"generative_training": {"torch_compile": True}}}, "soft_labels.generative_training.torch_compile"),
    ({"soft_labels": {"generative_training": {"use_liger_kernel": True}}},
     "soft_labels.generative_training.use_liger_kernel"),
    ({"classifier": {"training": {"save_steps": 7, "eval_steps": 5}}}, "classifier.training.save_steps"),
    ({"soft_labels": {"generative_training": {"save_steps": 7}}}, "soft_labels.generative_training.save_steps"),
])
def test_a_setting_the_method_cannot_honour_fails_at_load_naming_the_field(tmp_path, raw, field) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, raw))
    msg = str(err.value)
    assert f"{field}: not honoured by the " in msg, msg
    assert ("soft_label_classifier" if field.startswith("classifier") else "soft_label_lm") in msg


def test_what_the_method_does_anyway_and_the_old_defaults_load(tmp_path) -> None:
    cfg = load_config(_write(tmp_path, {
        "soft_labels": {"enabled": True, "generative_training": {"eval_steps": 30, "save_steps": 30, "lora": False}},
        "classifier": {"enabled": True, "training": {"eval_steps": 20, "save_steps": 20, "group_by_length": False,
                                                     "torch_compile": False, "epochs": 3}},
        "training": {"lora": True, "torch_compile": True, "group_by_length": False}}))  # KD methods honour all
    assert cfg.classifier.training.eval_steps == 20 and cfg.training.lora
    # A run's saved config.yaml (every field written out, the sections' defaults included) loads again.
    from sentidistill.config import PipelineConfig, validate_config

    saved = PipelineConfig.model_validate({"soft_labels": {"enabled": True}, "classifier": {"enabled": True}})
    assert validate_config(saved.model_dump(mode="json")).config_hash() == saved.config_hash()
    for name in ("examples/cpu_label_free.yaml", "src/sentidistill/examples/quickstart.yaml"):
        raw = yaml.safe_load((Path(__file__).resolve().parents[1] / name).read_text())
        raw.pop("data_dir", None)
        load_config(_write(tmp_path, raw))


def test_the_python_entry_points_refuse_it_too(tmp_path) -> None:
    from sentidistill.train.softlabel_lm import train_generative_on_soft_labels

    with pytest.raises(ConfigError, match=r"soft_labels.generative_training.torch_compile: True is not honoured"):
        train_generative_on_soft_labels("x", tmp_path / "none.parquet", tmp_path / "o",
                                        TrainingConfig(torch_compile=True))


def _changed(name: str, value: object) -> object:
    """Another valid value of a TrainingConfig field."""
    if name == "precision":
        return "fp16"
    if name == "report_to":
        return ["tensorboard"]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3 if value > 0 else 5
    return value + 0.25 if value < 0.5 else value / 2


@pytest.mark.parametrize("name", [n for n in TrainingConfig.model_fields if n not in APPLIED_ELSEWHERE])
def test_every_training_field_reaches_the_arguments(name) -> None:
    """A TrainingConfig field added without a mapping (and not declared as applied elsewhere) fails here."""
    base = TrainingConfig()
    other = base.model_copy(update={name: _changed(name, getattr(base, name))})
    assert trainer_arguments(other, "out", 1) != trainer_arguments(base, "out", 1), name


SET = {"warmup_ratio": 0.1, "weight_decay": 0.2, "gradient_accumulation_steps": 3, "learning_rate": 2e-3,
       "batch_size": 5, "max_steps": 7, "epochs": 2.0, "logging_steps": 4, "save_total_limit": 5,
       "dataloader_num_workers": 1}
ARGS = {"warmup_ratio": "warmup_steps", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size"}


@pytest.mark.parametrize("method", TRAINING_METHODS.names())
def test_config_values_reach_the_arguments_of_every_method(method, tmp_path) -> None:
    training = default_training(method).model_copy(update=SET | {"eval_steps": 6, "save_steps": 6})
    args = arguments_for(method, training, tmp_path, seed=7)
    assert isinstance(args, TRAINING_METHODS.get(method).arguments_class)
    for field, value in SET.items():
        assert getattr(args, ARGS.get(field, field)) == value, (method, field)
    assert args.seed == 7 and args.output_dir == str(tmp_path / "checkpoints")


def test_method_fields_reach_their_arguments(tmp_path) -> None:
    training = TrainingConfig()
    assert arguments_for("icldist", training, tmp_path, kl_weight=0.3, max_source_length=64).kl_weight == 0.3
    args = arguments_for("soft_label_classifier", default_training("soft_label_classifier"), tmp_path,
                         temperature=2.0, kl_weight=0.7, eval_steps=9, save_steps=9, early_stopping_patience=5)
    assert (args.temperature, args.kl_weight, args.eval_steps, args.early_stopping_patience) == (2.0, 0.7, 9, 5)
    assert args.load_best_model_at_end and args.metric_for_best_model == "teacher_agreement"


def test_train_cli_options_are_generated_from_the_config_fields(monkeypatch, tmp_path) -> None:
    from sentidistill.cli import app
    from sentidistill.train import engine

    seen: dict = {}
    monkeypatch.setattr(engine, "train_student", lambda *a, **kw: seen.update(training=a[3], **kw) or "final")
    runner = CliRunner()
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    for name in TrainingConfig.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text, name
    assert "--lr " not in help_text and "--grad-accum" not in help_text  # old spellings: hidden aliases
    base = ["train", "--student", "s", "--corpus", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "o")]
    done = runner.invoke(app, [*base, "--learning-rate", "0.01", "--grad-accum", "4", "--warmup-ratio", "0.2",
                               "--lora", "--no-group-by-length", "--report-to", "tensorboard", "--kl-weight", "0.3"])
    assert done.exit_code == 0, (done.output, done.exception)
    t = seen["training"]
    assert (t.learning_rate, t.gradient_accumulation_steps, t.warmup_ratio, t.lora, t.group_by_length,
            t.report_to) == (0.01, 4, 0.2, True, False, ["tensorboard"])
    assert seen["icl"].kl_weight == 0.3 and t.batch_size == TrainingConfig().batch_size
    assert runner.invoke(app, [*base, "--lr", "0.5"]).exit_code == 0 and seen["training"].learning_rate == 0.5
    twice = runner.invoke(app, [*base, "--lr", "0.5", "--learning-rate", "0.1"])
    assert twice.exit_code != 0 and "given twice" in twice.output
    bad = runner.invoke(app, [*base, "--warmup-ratio", "2"])
    assert bad.exit_code != 0 and "warmup_ratio" in str(bad.exception)


def test_a_new_config_field_becomes_an_option() -> None:
    from sentidistill.utils.cli import config_options

    class Extended(TrainingConfig):
        new_knob: int = Field(3, description="A knob added later.", json_schema_extra={"aliases": ["--knob"]})

    got: dict = {}

    @config_options(*[(Extended, n) for n in Extended.model_fields])
    def command(name: str = typer.Option("x", "--name"), overrides: dict | None = None) -> None:
        got.update(overrides or {}, name=name)

    app = typer.Typer()
    app.command()(command)
    assert "--new-knob" in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}).output
    assert CliRunner().invoke(app, ["--new-knob", "5", "--epochs", "2"]).exit_code == 0
    assert got == {"new_knob": 5, "epochs": 2.0, "name": "x"}
    assert CliRunner().invoke(app, ["--knob", "6"]).exit_code == 0 and got["new_knob"] == 6


def _kd_corpus(path: Path, n: int = 8) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"source": f"Sentence: review {i} was {'good' if i % 2 else 'bad'}\nLabel:",
             "target": "positive" if i % 2 else "negative", "status": "valid"} for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_lora_is_honoured_and_merged_by_save_final(tiny_causal_dir, tmp_path) -> None:
    """`training.lora` trains adapters (the KD methods honour it); save_final folds them into plain weights."""
    from safetensors import safe_open

    from sentidistill.config import StudentConfig
    from sentidistill.students import load_student
    from sentidistill.train.engine import train_student
    from sentidistill.train.methods import read_training_summary

    training = TrainingConfig(max_steps=2, batch_size=4, lora=True, lora_r=4, save_steps=2, logging_steps=1)
    final = train_student(str(tiny_causal_dir), _kd_corpus(tmp_path / "c.parquet"), tmp_path / "out", training,
                          method="icldist", student=StudentConfig(max_source_length=32, max_target_length=4))
    names = {p.name for p in final.iterdir()}
    assert "adapter_config.json" not in names and "model.safetensors" in names
    with safe_open(final / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora_" in k or k.startswith("base_model.") for k in keys), keys[:5]
    summary = read_training_summary(tmp_path / "out")
    assert summary["global_step"] == 2 and summary["training"]["lora"] is True and "token_kd" in summary
    assert load_student(str(final)).kind == "causal"


def test_save_final_replaces_final_atomically_and_old_summaries_are_read(tiny_causal_dir, tmp_path) -> None:
    from sentidistill.students import load_student
    from sentidistill.train.methods import read_training_summary, save_final

    lm = load_student(str(tiny_causal_dir))
    (tmp_path / "out" / "final").mkdir(parents=True)
    (tmp_path / "out" / "final" / "stale.txt").write_text("old")
    final = save_final(lm.model, tmp_path / "out", {"global_step": 3}, tokenizer=lm.tokenizer, kind=lm.kind)
    assert not (final / "stale.txt").exists() and not (tmp_path / "out" / ".final.partial").exists()
    assert read_training_summary(tmp_path / "out") == {"global_step": 3}
    old = tmp_path / "old_run"
    (old / "final").mkdir(parents=True)
    (old / "final" / "training_info.json").write_text('{"global_step": 9}')
    assert read_training_summary(old)["global_step"] == 9


def test_every_finetune_config_field_reaches_the_typed_settings() -> None:
    """The pipeline's finetune section -> FinetuneSettings: no field of the section is left behind."""
    from dataclasses import fields

    from sentidistill.config import FinetuneEvalConfig
    from sentidistill.finetune.runner import FinetuneSettings

    assert set(FinetuneEvalConfig.model_fields) - {"enabled"} <= {f.name for f in fields(FinetuneSettings)}
    cfg = FinetuneEvalConfig(datasets=["rest14"], seeds=[1, 2], train_fractions=[0.5], epochs=2, learning_rate=1e-3,
                             batch_size=8, max_parallel=3, limit_train=10, limit_eval=5)
    s = FinetuneSettings.from_config(cfg, data_dir="d")
    assert (s.datasets, s.seeds, s.train_fractions, s.epochs, s.learning_rate, s.batch_size, s.max_parallel,
            s.limit_train, s.limit_eval, s.data_dir) == (["rest14"], [1, 2], [0.5], 2, 1e-3, 8, 3, 10, 5, "d")

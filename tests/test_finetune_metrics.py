"""Fine-tuning evaluation: pair parsing, micro-F1, test-set composition, subsampling, statistics."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from sentidistill.errors import InputError
from sentidistill.finetune.data import (
    Aspect,
    FSAExample,
    eval_subsets,
    gold_pairs,
    load_fsa_dataset,
    read_fsa_file,
    target_text,
    train_dev_split,
)
from sentidistill.finetune.metrics import micro_f1, parse_pairs, score_predictions
from sentidistill.finetune.stats import bootstrap_ci, mean_std, paired_difference

SENT = "The pizza was great but the Service was slow."


# -- parsing ---------------------------------------------------------------------------------------

def test_parse_keeps_valid_pairs_and_rejects_the_rest():
    text = ("pizza | positive ; service | Negative ; pizza | positive ; burger | negative ; "
            "waiter positive ; staff | happy ; a | b | positive")
    p = parse_pairs(text, SENT, "atsa")
    # 'service' maps to the sentence's spelling; the duplicate counts once; burger is hallucinated;
    # a segment without '|', with a non-polarity, or with two '|' is rejected.
    assert p.pairs == [("pizza", "positive"), ("Service", "negative")]
    assert not p.valid
    assert p.rejected == ["burger | negative", "waiter positive", "staff | happy", "a | b | positive"]


def test_parse_edge_cases():
    assert parse_pairs("", SENT, "atsa").pairs == [] and parse_pairs("", SENT, "atsa").valid
    assert parse_pairs(None, SENT, "atsa").valid
    assert parse_pairs("garbage without structure", SENT, "atsa").pairs == []
    # Uncased, re-spaced tokenizer output still finds the term (and returns the sentence's spelling).
    s = "Katz's Deli is a great NY experience."
    assert parse_pairs("katz ' s deli | positive", s, "atsa").pairs == [("Katz's Deli", "positive")]
    # ACSA: categories compare ignoring case, '#' and spaces; no sentence check.
    acsa = parse_pairs("food quality | positive ; FOOD#QUALITY | positive ; service general | negative", "x", "acsa")
    assert acsa.pairs == [("foodquality", "positive"), ("servicegeneral", "negative")]


def _ex(sentence: str, aspects: list[tuple], split: str = "test") -> FSAExample:
    return FSAExample(id=sentence[:8], sentence=sentence, split=split, aspects=tuple(
        Aspect(target=t, category=c, polarity=p, start=s, end=s + (len(t) if t else 0), opinion_words=tuple(ow))
        for t, c, p, s, ow in aspects))


def test_targets_order_by_position_drop_null_and_duplicates():
    ex = _ex("staff nice, food bad, staff nice", [
        ("food", "FOOD#QUALITY", "negative", 12, ["bad"]),
        ("staff", "SERVICE#GENERAL", "positive", 0, ["nice"]),
        (None, "RESTAURANT#GENERAL", "positive", 0, []),
        ("staff", "SERVICE#GENERAL", "positive", 22, ["nice"]),
    ])
    assert target_text(ex, "atsa") == "staff | positive ; food | negative"
    assert gold_pairs(ex, "acsa") == [("food quality", "negative"), ("service general", "positive"),
                                      ("restaurant general", "positive")]


# -- micro-F1 --------------------------------------------------------------------------------------

def test_micro_f1_hand_computed():
    golds = [[("a", "positive"), ("b", "negative")], [("c", "neutral")], []]
    preds = [[("a", "positive"), ("b", "positive"), ("a", "positive")], [], [("d", "positive")]]
    m = micro_f1(golds, preds)
    # tp = 1 (a); predictions {a+, b+} + {} + {d+} = 3 (the duplicate counts once); gold = 3.
    assert (m["n_correct"], m["n_pred"], m["n_gold"]) == (1, 3, 3)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    assert micro_f1([[("a", "positive")]], [[]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                      "n_gold": 1, "n_pred": 0, "n_correct": 0}


def test_score_predictions_with_unparseable_duplicated_and_hallucinated_answers():
    test = [
        _ex("The pizza was great.", [("pizza", None, "positive", 4, ["great"])]),
        _ex("Slow service, nice view.", [("service", None, "negative", 5, ["Slow"]),
                                         ("view", None, "positive", 19, [])], split="hard_test"),
        _ex("I went there.", []),
    ]
    outputs = [
        "pizza | positive ; pizza | positive",  # duplicate: 1 correct prediction
        "service | negative ; menu | positive ; view : positive",  # hallucinated + unparseable segment
        "nonsense",  # gold empty, nothing parses
    ]
    m = score_predictions(test, outputs, "atsa")
    # all: tp 2, pred 2, gold 3 -> P 1, R 2/3, F1 0.8
    assert m["all"]["precision"] == pytest.approx(1.0)
    assert m["all"]["recall"] == pytest.approx(2 / 3)
    assert m["all"]["f1"] == pytest.approx(0.8)
    assert m["all"]["valid_rate"] == pytest.approx(1 / 3)
    assert m["hard_test"]["n_sentences"] == 1 and m["hard_test"]["recall"] == pytest.approx(0.5)
    assert m["multi_polarity"]["n_sentences"] == 1
    assert m["implicit"]["n_sentences"] == 1  # 'view' has no opinion words
    assert m["test"]["f1"] == pytest.approx(1.0)


# -- the released data -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,task,folder", [("rest14", "atsa", "atsa/rest14"), ("laptop14", "atsa", "atsa/laptop14"),
                                              ("rest16", "acsa", "acsa/rest16"), ("laptop16", "acsa", "acsa/laptop16")])
def test_test_set_composition_matches_the_files(shared_data_dir: Path, name, task, folder):
    raw = {}
    for split in ("test", "hard_test"):
        raw[split] = json.loads((shared_data_dir / "fsa" / folder / f"{split}.json").read_text(encoding="utf-8-sig"))
    items = raw["test"] + raw["hard_test"]
    ds = load_fsa_dataset(name, shared_data_dir)
    test = ds.test_set
    subsets = eval_subsets(test)
    assert len(test) == len(items) == len(subsets["all"])
    assert len(subsets["hard_test"]) == len(raw["hard_test"])
    assert len(subsets["implicit"]) == sum(any(not a.get("opinion_words") for a in it["aspects"]) for it in items)
    assert len(subsets["multi_polarity"]) == sum(len({a["polarity"] for a in it["aspects"]}) > 1 for it in items)
    if task == "atsa":
        n_pairs = sum(len({(a["target"], a["polarity"]) for a in it["aspects"] if a["target"] not in ("NULL", None)})
                      for it in items)
    else:
        n_pairs = sum(len({(a["category"], a["polarity"]) for a in it["aspects"]}) for it in items)
    assert sum(len(gold_pairs(e, task)) for e in test) == n_pairs
    # The gold answers, written and parsed back, score exactly 1.
    assert score_predictions(test, [target_text(e, task) for e in test], task)["all"]["f1"] == pytest.approx(1.0)


def test_nested_subsampling_and_carved_dev(shared_data_dir: Path, tmp_path: Path):
    ds = load_fsa_dataset("laptop14", shared_data_dir)
    ids = {f: {e.id for e in train_dev_split(ds, 42, f)[0]} for f in (0.1, 0.25, 0.5, 1.0)}
    assert ids[0.1] <= ids[0.25] <= ids[0.5] <= ids[1.0]
    assert len(ids[0.25]) == -(-len(ds.splits["train"]) * 25 // 100)
    assert {e.id for e in train_dev_split(ds, 52, 0.25)[0]} != ids[0.25]
    ds.splits.pop("dev")
    tr, dev = train_dev_split(ds, 42, 1.0)
    assert len(dev) == round(0.1 * len(ds.splits["train"])) and not {e.id for e in dev} & {e.id for e in tr}
    assert [e.id for e in train_dev_split(ds, 42, 0.5)[1]] == [e.id for e in dev]  # same dev for every fraction


def test_bad_rows_name_file_item_and_field(tmp_path: Path):
    f = tmp_path / "test.json"
    f.write_text(json.dumps([{"sentence": "ok", "aspects": []},
                             {"sentence": "the soup", "aspects": [{"target": "soup", "polarity": "great"}]}]),
                 encoding="utf-8-sig")
    with pytest.raises(InputError) as err:
        read_fsa_file(f, "atsa")
    assert str(f) in str(err.value) and "[1].aspects[0].polarity" in str(err.value) and "great" in str(err.value)
    f.write_text(json.dumps([{"sentence": "the soup", "aspects": [{"target": "salad", "polarity": "positive"}]}]))
    with pytest.raises(InputError, match=r"\[0\]\.aspects\[0\]\.target"):
        read_fsa_file(f, "atsa")
    f.write_text("[{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_fsa_file(f, "atsa")


# -- statistics ------------------------------------------------------------------------------------

def test_paired_difference_hand_example():
    a = {42: 70.0, 52: 72.0, 62: 71.0, 72: 69.0}
    b = {42: 72.0, 52: 75.0, 62: 72.0, 72: 72.0, 82: 99.0}  # seed 82 has no partner: ignored
    d = paired_difference(a, b)
    assert d.n == 4 and d.seeds == [42, 52, 62, 72]
    assert d.mean_diff == pytest.approx(2.25)
    assert d.std_diff == pytest.approx(np.sqrt(2.75 / 3))
    # t-interval: 2.25 ± t(0.975, 3) * sd / 2 with t = 3.182446
    assert d.t_low == pytest.approx(2.25 - 3.182446 * np.sqrt(2.75 / 3) / 2, abs=1e-4)
    assert d.t_high == pytest.approx(2.25 + 3.182446 * np.sqrt(2.75 / 3) / 2, abs=1e-4)
    # The exact bootstrap distribution: all 4^4 equally likely resamples of the differences [2, 3, 1, 3].
    means = sorted(np.mean(r) for r in itertools.product([2, 3, 1, 3], repeat=4))
    lo, hi = np.quantile(means, 0.025), np.quantile(means, 0.975)
    assert abs(d.boot_low - lo) <= 0.25 and abs(d.boot_high - hi) <= 0.25
    assert d.significant and d.boot_low > 0
    assert bootstrap_ci([2, 3, 1, 3], seed=0) == bootstrap_ci([2, 3, 1, 3], seed=0)  # seeded


def test_paired_difference_not_significant_and_single_seed():
    d = paired_difference({1: 50, 2: 50, 3: 50, 4: 50}, {1: 48, 2: 53, 3: 49, 4: 51})
    assert d.boot_low < 0 < d.boot_high and not d.significant
    # Three seeds, all better: the bootstrap interval (bounded by the observed range) excludes 0, the
    # t-interval (3 ± 4.303 * sqrt(7) / sqrt(3)) does not; we do not call that significant.
    few = paired_difference({1: 0.0, 2: 0.0, 3: 0.0}, {1: 1.0, 2: 2.0, 3: 6.0})
    assert few.boot_low >= 1.0 and few.t_low == pytest.approx(3 - 4.302653 * np.sqrt(7) / np.sqrt(3), abs=1e-4)
    assert few.t_low < 0 and not few.significant
    one = paired_difference({1: 50.0}, {1: 55.0})
    assert one.mean_diff == 5 and one.boot_low is None and one.t_low is None and not one.significant
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
    with pytest.raises(ValueError):
        paired_difference({1: 1.0}, {2: 1.0})


def test_report_section_embeds_in_the_run_report(tmp_path: Path):
    from sentidistill.finetune.report import as_extra_section, finetune_report_section
    from sentidistill.finetune.runner import FinetuneResults

    cells = [{"model": m, "dataset": "rest14", "train_fraction": f, "seed": s,
              "metrics": {k: {"f1": (60 + 4 * (m == "kd") + 10 * f + s % 3) / 100, "precision": 0.5, "recall": 0.5}
                          for k in ("all", "hard_test", "implicit", "multi_polarity")}}
             for m in ("base", "kd") for f in (0.25, 1.0) for s in (42, 52, 62)]
    res = FinetuneResults(out_dir=tmp_path, cells=cells, models=["base", "kd"], datasets=["rest14"], seeds=[42, 52, 62],
                          train_fractions=[0.25, 1.0], settings={"baseline": "base"})
    md, html = finetune_report_section(res, png_dir=tmp_path)
    assert "| kd vs base | rest14 | 25 | 3 | " in md and "+4.00" in md and "significant" in md
    assert (tmp_path / "curve_rest14.png").exists() and html.count("data:image/png;base64,") == 1
    heading, body = as_extra_section(res)
    assert body.startswith("<") and "<h2>" not in body
    assert heading == "Fine-tuning evaluation (FSA)"


def test_score_table_reports_each_cells_epochs_and_wall_time(tmp_path):
    """A run that trimmed epochs per fraction must say so in the table, not claim one setting for all."""
    from sentidistill.finetune.report import finetune_report_section, score_table
    from sentidistill.finetune.runner import FinetuneResults

    cells = [{"model": "base", "dataset": "rest14", "train_fraction": f, "seed": s, "wall_seconds": w,
              "config": {"epochs": e},
              "metrics": {k: {"f1": 0.5, "precision": 0.5, "recall": 0.5}
                          for k in ("all", "hard_test", "implicit", "multi_polarity")}}
             for f, e, w in ((0.25, 1.0, 300.0), (1.0, 0.5, 500.0)) for s in (42, 52)]
    res = FinetuneResults(out_dir=tmp_path, cells=cells, models=["base"], datasets=["rest14"], seeds=[42, 52],
                          train_fractions=[0.25, 1.0], settings={"baseline": "base", "epochs": 1.0})
    header, rows = score_table(res)
    assert header[-2:] == ["epochs", "wall s/cell"]
    assert [r[-2:] for r in rows] == [["1", "300"], ["0.5", "500"]]
    md, _ = finetune_report_section(res, curves=False)
    assert "epochs 0.5/1.0 (per cell, see the table)" in md


def test_sample_dev_caps_dev_with_a_seeded_sample():
    from sentidistill.finetune.cell import sample_dev

    dev = list(range(50))
    assert sample_dev(dev, None, 42) is dev and sample_dev(dev, 80, 42) is dev
    a, b = sample_dev(dev, 10, 42), sample_dev(dev, 10, 42)
    assert a == b and len(set(a)) == 10 and set(a) <= set(dev)
    assert sample_dev(dev, 10, 52) != a

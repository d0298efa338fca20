"""Parsers on adversarial answers; metrics against hand-computed values (incl. OpeNER graph F1)."""

from __future__ import annotations

import math

import pytest

from sentidistill.bench import get_task
from sentidistill.bench.metrics import (
    category_means,
    classification_metrics,
    mean_std,
    sentibench_score,
    sentiment_graph_f1,
    tuple_metrics,
)
from sentidistill.bench.parsers import LabelParser, parse_tuples


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("positive", "positive"),
        ("Label: Positive.", "positive"),
        ("  NEGATIVE!!", "negative"),
        ("The sentiment of this review is clearly negative, because...", "negative"),
        ("Label: neutral\nSentence: next example\nLabel: positive", "neutral"),
        ("neg", "negative"),
        ("**Positive**", "positive"),
        ("positively", None),  # a whole word only
        ("I cannot tell.", None),
        ("", None),
        (None, None),
    ],
)
def test_label_parser_twitter(answer, expected):
    assert get_task("twitter").parse(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("non-irony", "non-irony"), ("Irony", "irony"), ("NON IRONY.", "non-irony"), ("nonirony", "non-irony"),
     ("Label: irony (the tweet is ironic)", "irony"), ("not ironic", "non-irony")],
)
def test_label_parser_prefers_longest_whole_form(answer, expected):
    assert get_task("irony18").parse(answer) == expected


def test_label_parser_multiword_and_verbalizer():
    t = get_task("intimacy")
    assert t.parse("Moderately Intimate") == "Moderately Intimate"
    assert t.parse("label: not intimate.") == "Not Intimate"
    assert t.parse("Highly") == "Highly Intimate"
    p = get_task("pstance")
    assert p.parse("Favor") == "FAVOR" and p.answer_text({"gold": "AGAINST"}) == "against"


def test_label_parser_rejects_ambiguous_forms():
    with pytest.raises(ValueError, match="ambiguous"):
        LabelParser({"a": ["good"], "b": ["good"]})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[('pizza', 'positive'), ('service', 'negative')]", [("pizza", "positive"), ("service", "negative")]),
        ("Here you go: [('Pizza', 'POS')] Hope this helps!", [("pizza", "positive")]),
        ('```json\n[["pizza", "positive"]]\n```\nThe pizza is praised.', [("pizza", "positive")]),
        ('[{"target": "pizza", "polarity": "positive"}]', [("pizza", "positive")]),
        ("[('pizza', 'positive')", [("pizza", "positive")]),  # cut off before the closing bracket
        ("[('pizza', 'positive'), ('serv", [("pizza", "positive")]),
        ("['pizza', 'positive']", [("pizza", "positive")]),  # one flat tuple
        ("[('chef\\'s special', 'positive'), ('a', 'b', 'c')]", [("chef's special", "positive")]),
        ("[]", []),
        ("There are no aspects.", None),
        ("", None),
        ("[1, 2, 3]", None),
    ],
)
def test_tuple_parser_atsa(answer, expected):
    assert get_task("atsa_rest16").parse(answer) == expected


def test_tuple_parser_normalises_categories_and_quads():
    assert get_task("acsa_rest16").parse("[('food quality', 'Positive')]") == [("food quality", "positive")]
    assert get_task("acsa_rest16").normalise_gold([("FOOD#QUALITY", "positive")]) == [("food quality", "positive")]
    q = get_task("asqp_rest16").parse("[('NULL', 'restaurant general', 'positive', 'fabulous'), ('x', 'y')]")
    assert q == [("null", "restaurant general", "positive", "fabulous")]
    assert parse_tuples("text [not a list] then [('a', 'b')]", 2) == [("a", "b")]


# -- metrics --------------------------------------------------------------------------------------------

def test_classification_metrics_by_hand():
    m = classification_metrics(["positive", None, "negative", "positive"],
                               ["positive", "positive", "negative", "negative"], ["negative", "positive"])
    # positive: P=1/2 R=1/2 F=1/2; negative: P=1 R=1/2 F=2/3; the None costs recall only.
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["unparseable_rate"] == pytest.approx(0.25)


def test_tuple_metrics_multiset_by_hand():
    a, b, c, x = ("a", "pos"), ("b", "neg"), ("c", "pos"), ("x", "pos")
    m = tuple_metrics([[a, a, x], None], [[a, b], [c]])
    # a matches once (one gold copy); 3 predicted, 3 gold.
    assert (m["tp"], m["n_pred"], m["n_gold"]) == (1, 3, 3)
    assert m["micro_f1"] == pytest.approx(1 / 3) and m["unparseable_rate"] == 0.5
    assert tuple_metrics([[]], [[]])["micro_f1"] == 0.0


def test_task_score_acsa_dedupes_and_matches_normalised():
    t = get_task("acsa_rest16")
    golds = [[("FOOD#QUALITY", "positive")], [("SERVICE#GENERAL", "negative")]]
    preds = [t.parse("[('food#quality', 'positive')]"), t.parse("[('service general', 'positive')]")]
    s = t.score(preds, golds)
    assert s["score"] == s["micro_f1"] == pytest.approx(0.5)


# Tokens:  I(0) loved(1) the(2) room(3) but(4) the(5) staff(6) was(7) rude(8) .(9)
SENT = "I loved the room but the staff was rude ."
GOLD_SPANS = [
    {"Source": [[0, 1]], "Target": [[8, 16]], "Polar_expression": [[2, 7]], "Polarity": "positive"},
    {"Source": [], "Target": [[25, 30]], "Polar_expression": [[35, 39]], "Polarity": "negative"},
]


def test_opener_graph_f1_by_hand():
    t = get_task("opener")
    row = {"text": SENT, "gold_spans": GOLD_SPANS, "gold": []}
    pred = t.parse("[('I', 'room', 'loved', 'Positive'), ('NULL', 'staff', 'was rude', 'positive'), "
                   "('NULL', 'bed', 'nice', 'positive')] (three opinions)")
    s = t.score([pred], [row["gold"]], rows=[row])
    # p1 matches g1: precision weight (1 + 1 + 1)/3 = 1, recall weight (1 + 1/2 + 1)/3 = 5/6.
    # p2 has the wrong polarity, p3 is not in the sentence: neither matches; g2 is not found.
    p, r = 1 / 3, (5 / 6) / 2
    assert s["precision"] == pytest.approx(p)
    assert s["recall"] == pytest.approx(r)
    assert s["score"] == s["graph_f1"] == pytest.approx(2 * p * r / (p + r))  # = 10/27
    assert s["score"] == pytest.approx(10 / 27)

    pred_ok = t.parse("[('I', 'the room', 'loved', 'positive'), ('NULL', 'staff', 'was rude', 'negative')]")
    s2 = t.score([pred_ok], [[]], rows=[row])
    # p2 now matches g2: precision weight (1 + 1 + 1/2)/3 = 5/6; both golds fully recalled.
    assert s2["precision"] == pytest.approx((1 + 5 / 6) / 2)
    assert s2["recall"] == pytest.approx(1.0)
    assert t.score([None], [[]], rows=[row])["score"] == 0.0


def test_graph_f1_empty_holder_matches_only_empty():
    from sentidistill.bench.metrics import SentTuple

    g = [SentTuple(frozenset(), frozenset({1}), frozenset({2}), "positive")]
    assert sentiment_graph_f1([[SentTuple(frozenset(), frozenset({1}), frozenset({2}), "positive")]], [g])[
        "graph_f1"] == pytest.approx(1.0)
    assert sentiment_graph_f1([[SentTuple(frozenset({0}), frozenset({1}), frozenset({2}), "positive")]], [g])[
        "graph_f1"] == 0.0


def test_aggregates():
    m, s = mean_std([0.5, 0.7, 0.9])
    assert m == pytest.approx(0.7) and s == pytest.approx(0.2)
    assert mean_std([0.3]) == (0.3, 0.0) and math.isnan(mean_std([])[0])
    scores = {"sst2": 0.9, "imdb": 0.8, "opener": 0.3}
    cats = {"sst2": "basic", "imdb": "basic", "opener": "fine-grained"}
    assert category_means(scores, cats) == pytest.approx({"basic": 0.85, "fine-grained": 0.3})
    assert sentibench_score(scores) == pytest.approx(2.0 / 3)

"""Zero-shot sentiment classification from a student's analysis: the parsing rule and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.finetune.zeroshot import (
    default_prompt_template,
    load_zero_shot_items,
    macro_f1,
    overall_polarity,
    star_rating,
    zero_shot_eval,
    zero_shot_markdown,
)


@pytest.mark.parametrize("text,expected", [
    ("The soup was cold and the staff rude. Overall, my impression is positive.", "positive"),  # explicit verdict
    ("Great view, friendly staff. Overall the food was terrible and overpriced.", "negative"),  # cue sentence wins
    ("The pasta was excellent, the wine good, the bread bad.", "positive"),  # whole text
    ("It was not good at all.", "negative"),  # negation flips
    ("We went on a Tuesday.", "neutral"),
    ("Overall sentiment: mixed.", "neutral"),
    ("", None),
])
def test_overall_polarity_rule(text, expected):
    assert overall_polarity(text) == expected


def test_star_rating_rule():
    # Our KnowDist teacher's verdict line: strength is intensity, not stars.
    assert star_rating("Overall: negative, strength 5/5\nThe food was great but...") == 1
    assert star_rating("Overall: positive, strength 3/5. Decent.") == 4
    assert star_rating("Overall: mixed, strength 2/5") == 3
    assert overall_polarity("Overall: negative, strength 4/5. Great view though.") == "negative"
    assert star_rating("I would give it 4 stars.") == 4
    assert star_rating("Solid place, 2.5/5.") == 2  # round half to even, as Python does
    assert star_rating("Absolutely amazing, the best tacos, friendly staff.") == 5
    assert star_rating("Good food, nice staff.") == 4
    assert star_rating("Good food but slow, rude service.") == 2
    assert star_rating("The worst meal, terrible and disgusting.") == 1
    assert star_rating("We sat down.") == 3 and star_rating(None) is None
    assert macro_f1(["a", "b", "b"], ["a", "b", None]) == pytest.approx((1 + 2 / 3) / 2)


def test_rule_reads_the_real_teacher_texts(shared_data_dir: Path):
    items = load_zero_shot_items("yelp5", shared_data_dir)
    assert len(items) == 500 and {i["gold"] for i in items} == {1, 2, 3, 4, 5}
    clear = [i for i in items if i["gold"] != 3]
    acc = sum((i["gold"] > 3) == (overall_polarity(i["teacher_text"]) == "positive") for i in clear) / len(clear)
    assert acc > 0.8  # Mixtral's analyses carry the review's polarity; the rule must recover it


def test_tiny_student_zero_shot(shared_data_dir: Path, tiny_seq2seq_dir: Path, tmp_path: Path):
    res = zero_shot_eval(str(tiny_seq2seq_dir), ["sst2", "yelp5"], data_dir=shared_data_dir, limit=4,
                         max_new_tokens=8, out_dir=tmp_path)
    assert json.loads((tmp_path / "zero_shot.json").read_text())["prompt_template"] == default_prompt_template()
    assert default_prompt_template().endswith("{review}")
    assert res["sst2"]["n"] == 4 and "teacher_macro_f1" not in res["sst2"]
    assert 0 <= res["yelp5"]["teacher_macro_f1"] <= 1 and 0 <= res["yelp5"]["student_macro_f1"] <= 1
    assert (tmp_path / "zero_shot.json").exists() and len((tmp_path / "zero_shot_yelp5.jsonl").read_text().splitlines()) == 4
    assert "| yelp5 | 4 |" in zero_shot_markdown(res)

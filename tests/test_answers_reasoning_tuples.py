"""Issue 15, items 1 and 5: reasoning blocks and apostrophes in tuples, through every reader of answers.

Readers: the bench parsers (labels, tuples), the teacher's validation, the zero-shot analysis rules, the
ICL and KnowDist corpora (built from a real HTTP teacher on 127.0.0.1), and the teacher's run summary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sentidistill.bench import get_task
from sentidistill.bench.parsers import parse_tuples
from sentidistill.core.records import AnswerFormat
from sentidistill.finetune.zeroshot import overall_polarity, star_rating
from sentidistill.teacher.validate import validate
from sentidistill.utils.answers import read_python_list, split_reasoning

# The issue's answer: a word of the reasoning ("positive") comes before the answer.
ISSUE_ANSWER = (
    "<think>\nThe customer calls the waiter friendly, which on its own would be positive. But the soup arrived "
    "cold, the bill was wrong and they say they will not come back.\n</think>\n\nnegative"
)
# Constructed, same class: DeepSeek-R1's template puts the opening <think> in the prompt, so only the
# closing tag is in the answer, and the reasoning ends on the other label.
R1_ANSWER = "Okay, cold soup is negative... but the user says the dessert was lovely, so positive?\n</think>\n\nPositive."
EMPTY_THINK = "<think>\n\n</think>\n\npositive"  # a server with thinking switched off
LABELS = AnswerFormat(kind="label", labels=("negative", "positive"))


def test_split_reasoning_shapes() -> None:
    assert split_reasoning(ISSUE_ANSWER) == (ISSUE_ANSWER[8:].split("\n</think>")[0], "negative")
    assert split_reasoning(R1_ANSWER)[1] == "Positive."
    assert split_reasoning(EMPTY_THINK) == ("", "positive")
    assert split_reasoning("<think>\nstill thinking when max_tokens ran out") == (
        "still thinking when max_tokens ran out", "")
    assert split_reasoning("negative") == (None, "negative")
    assert split_reasoning(None) == (None, "")


@pytest.mark.parametrize(("answer", "expected"), [
    (ISSUE_ANSWER, "negative"), (R1_ANSWER, "positive"), (EMPTY_THINK, "positive"),
    ("<think>\nnegative? positive?", None),  # cut off inside the reasoning: no answer
])
def test_bench_label_parser_reads_the_answer_not_the_reasoning(answer: str, expected: str | None) -> None:
    assert get_task("sst2").parse(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    (ISSUE_ANSWER, "negative"), (R1_ANSWER, "positive"), (EMPTY_THINK, "positive")])
def test_teacher_validation_reads_the_answer_not_the_first_line(answer: str, expected: str) -> None:
    check = validate(answer, LABELS)
    assert check.ok and check.parsed == expected
    # Not only the first line: a heading, then the label on a line of its own (one label only).
    assert validate("Sentiment:\n\nNegative", LABELS).parsed == "negative"
    assert validate("**Answer**\nnegative", LABELS).parsed == "negative"
    assert not validate("Hmm.\npositive\nnegative", LABELS).ok
    only_thinking = validate("<think>\nthe soup was cold", LABELS)
    assert not only_thinking.ok and "reasoning" in only_thinking.problem


def test_tuples_and_zero_shot_rules_skip_the_reasoning() -> None:
    answer = "<think>\nMaybe [('soup', 'positive')]?\n</think>\n[('soup', 'negative')]"
    assert parse_tuples(answer, 2) == [("soup", "negative")]
    check = validate(answer, AnswerFormat(kind="tuples", tuple_arity=2))
    assert check.ok and check.parsed == [["soup", "negative"]]
    analysis = ("<think>\nwonderful, excellent, amazing... the user wants an overall verdict\n</think>\n"
                "The soup was cold and the bill was wrong: a terrible, disappointing evening.")
    assert overall_polarity(analysis) == "negative"
    assert star_rating(analysis) in (1, 2)
    assert overall_polarity("<think>\nwonderful, excellent\n</think>\n") is None


# -- item 5: apostrophes in Python-style tuples ---------------------------------------------------------

ISSUE_TUPLES = "[('chef's special', 'positive'), ('service', 'negative')]"
# Constructed, same class: a double-quoted term holding double quotes, an apostrophe before the space,
# and one with two apostrophes.
MORE_TUPLES = "[(\"the \"best\" cafe\", 'positive'), ('the chefs' table', 'neutral'), ('rock 'n' roll', 'negative')]"


def test_issue_tuples_keep_both() -> None:
    assert parse_tuples(ISSUE_TUPLES, 2) == [("chef's special", "positive"), ("service", "negative")]
    assert get_task("atsa_rest16").parse(ISSUE_TUPLES) == [("chef's special", "positive"), ("service", "negative")]
    check = validate(ISSUE_TUPLES, AnswerFormat(kind="tuples", tuple_arity=2))
    assert check.ok and check.parsed == [["chef's special", "positive"], ["service", "negative"]]


def test_more_quotes_inside_terms() -> None:
    expected = [('the "best" cafe', "positive"), ("the chefs' table", "neutral"), ("rock 'n' roll", "negative")]
    assert parse_tuples(MORE_TUPLES, 2) == expected
    assert read_python_list(MORE_TUPLES) == expected
    assert validate(MORE_TUPLES, AnswerFormat(kind="tuples", tuple_arity=2)).parsed == [list(t) for t in expected]
    # Cut off mid-list: the complete tuples before the cut, apostrophe included.
    assert parse_tuples("[('chef's special', 'positive'), ('serv", 2) == [("chef's special", "positive")]


def test_unrecoverable_quotes_are_unparseable_never_shortened() -> None:
    # A missing comma: the quotes cannot be told apart, so the answer cannot be read at all (today's
    # salvage kept the one well-formed tuple and dropped the other silently).
    broken = "[('chef's special', 'positive'), ('service' 'negative')]"
    assert parse_tuples(broken, 2) is None
    assert get_task("atsa_rest16").parse(broken) is None
    assert not validate(broken, AnswerFormat(kind="tuples", tuple_arity=2)).ok
    with pytest.raises(ValueError):
        read_python_list("[('a', 'b'), ('c', 'd']")


# -- the corpora, from a real HTTP teacher ----------------------------------------------------------------

@pytest.fixture()
def think_data(tmp_path: Path) -> Path:
    """sst2 train sentences whose teacher reply (teacher_server's <<reply:...>>) is a thinking block + label."""
    reply = "<think> The waiter was friendly, which is positive. But the soup was cold. </think> negative"
    rows = [{"sentence": f"<<reply:{reply}>> visit number {i}", "label": "negative"} for i in range(8)]
    p = tmp_path / "data" / "sentibench/sc/sst2/train.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps(rows), encoding="utf-8")
    return tmp_path / "data"


def test_icl_and_knowdist_corpora_keep_the_reasoning_apart(think_data: Path, tmp_path: Path) -> None:
    from sentidistill.config import ICLDistConfig, KnowDistConfig, ReviewsConfig, TeacherConfig
    from sentidistill.distill import build_icl_corpus, build_knowdist_corpus, read_corpus
    from sentidistill.teacher import build_teacher
    from teacher_server import running_server

    reviews = tmp_path / "reviews.jsonl"
    reply = "<think> the user wants a verdict; lovely staff </think> The soup was cold: a poor evening."
    reviews.write_text(json.dumps({"text": f"<<reply:{reply}>> dinner review"}) + "\n", encoding="utf-8")
    with running_server() as url:
        # sst2 asks for 8 tokens: the thinking needs room on top (without it every answer is truncated).
        tcfg = TeacherConfig(kind="openai", base_url=url + "/v1", model="echo", max_retries=0, repair_attempts=0,
                             reasoning_tokens=64)
        with build_teacher(tcfg, tmp_path / "cache.sqlite", progress=False) as teacher:
            icl = build_icl_corpus(ICLDistConfig(tasks=["sst2"], n_prompts=6, min_shots=0, max_shots=1,
                                                 top_logprobs=2), teacher, tmp_path / "icl.parquet", think_data)
            kd = build_knowdist_corpus(KnowDistConfig(reviews=ReviewsConfig(source=str(reviews), min_chars=5,
                                                                            limit=None), prompt_types=["overall"]),
                                       teacher, tmp_path / "kd.parquet")
            summary = teacher.summary()
    rows = read_corpus(tmp_path / "icl.parquet")
    assert icl.rows == len(rows) == 6 and icl.with_reasoning == 6
    for r in rows:
        assert r["target"] == "negative" and r["status"] == "valid"
        assert r["reasoning"] == "The waiter was friendly, which is positive. But the soup was cold."
        assert r["teacher_logprobs"] is None  # the log-probs cover the thinking too: not the target's
    assert icl.logprobs_dropped == 6
    (kd_row,) = read_corpus(tmp_path / "kd.parquet")
    assert kd.with_reasoning == 1 and kd_row["target"] == "The soup was cold: a poor evening."
    assert kd_row["reasoning"] == "the user wants a verdict; lovely staff"
    assert "7 with a thinking block" in summary

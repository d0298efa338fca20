"""A bad row in any loader is an error naming the file, the line (or item) and the field; ``skip_bad`` counts it.

One test per loader. Each writes a file whose bad row sits at a known place and checks the three
coordinates in the message (and on the exception), then that ``skip_bad`` keeps the good rows and counts
the bad one instead of dropping it silently.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sentidistill.data import (
    read_aste,
    read_label_lines,
    read_sentibench_json,
    read_table,
    read_teacher_sample,
    read_tweeteval,
)
from sentidistill.data.readers import read_fsa_json
from sentidistill.errors import InputError


def _check(exc: InputError, path: Path, *, line: int | None = None, item: int | None = None, field: str) -> None:
    msg = str(exc)
    assert str(path) in msg, msg
    assert exc.field == field and f"field '{field}'" in msg, msg
    if line is not None:
        assert exc.line == line and f"line {line}, field '{field}'" in msg, msg
    if item is not None:
        assert f"item {item}:" in msg, msg


def _fails(fn, *args, **kw) -> InputError:
    with pytest.raises(InputError) as info:
        fn(*args, **kw)
    return info.value


def _skips(fn, *args, good: int, **kw) -> None:
    stats: dict[str, int] = {}
    assert len(fn(*args, skip_bad=True, stats=stats, **kw)) == good
    assert stats == {"skipped": 1, "read": good}


def test_jsonl_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "reviews.jsonl"
    f.write_text('{"review": "fine"}\n\n{"review": "also fine"}\n{"review": ""}\n{"review": "ok"}\n')
    _check(_fails(read_table, f, text_field="review"), f, line=4, field="review")
    _skips(read_table, f, text_field="review", good=3)


def test_jsonl_missing_label(tmp_path: Path) -> None:
    f = tmp_path / "labelled.jsonl"
    f.write_text('{"t": "fine", "y": "pos"}\n{"t": "no label"}\n')
    _check(_fails(read_table, f, text_field="t", label_field="y"), f, line=2, field="y")


def test_csv_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "reviews.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "content", "stars"])
        w.writerow([1, "two\nphysical lines", 5])  # lines 2-3
        w.writerow([2, "good", ""])  # line 4: no label
        w.writerow([3, "fine", 4])
    _check(_fails(read_table, f, text_field="content", label_field="stars"), f, line=4, field="stars")
    _skips(read_table, f, text_field="content", label_field="stars", good=2)


def test_tsv_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "reviews.tsv"
    f.write_text("text\tlabel\ngreat\tpositive\nawful\tnegative\n\tpositive\n", encoding="utf-8")
    _check(_fails(read_table, f, label_field="label"), f, line=4, field="text")
    _skips(read_table, f, label_field="label", good=2)


def test_parquet_bad_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None, "d"], "y": [0, 1, 0, 1]}), f)
    # Parquet has no lines: the number is the row, counted from 1 like a line.
    _check(_fails(read_table, f), f, line=3, field="text")
    _skips(read_table, f, good=3)


def test_json_list_table_bad_item(tmp_path: Path) -> None:
    f = tmp_path / "reviews.json"
    f.write_text(json.dumps([{"text": "a"}, {"text": "b"}, {"text": 7}]))
    _check(_fails(read_table, f), f, item=2, field="text")


def test_sentibench_json_bad_item(tmp_path: Path) -> None:
    f = tmp_path / "test.json"
    f.write_text(json.dumps([{"sentence": "ok", "label": "positive"}, {"sentence": "x", "label": 1.5},
                             {"sentence": "fine", "label": 0}]), encoding="utf-8-sig")
    _check(_fails(read_sentibench_json, f), f, item=1, field="label")
    _skips(read_sentibench_json, f, good=2)


def test_fsa_json_bad_aspect(tmp_path: Path) -> None:
    f = tmp_path / "hard_test.json"
    good = {"sentence": "the pizza was great", "aspects": [
        {"from": 4, "to": 9, "target": "pizza", "category": "FOOD#QUALITY", "polarity": "positive"}]}
    bad = {"sentence": "the staff", "aspects": [good["aspects"][0], {"target": "staff", "category": "SERVICE"}]}
    f.write_text(json.dumps([good, good, bad]), encoding="utf-8")
    _check(_fails(read_fsa_json, f), f, item=2, field="aspects[1]")
    _skips(read_fsa_json, f, good=2)


def test_tweeteval_bad_label(tmp_path: Path) -> None:
    d = tmp_path / "emotion"
    d.mkdir()
    (d / "mapping.txt").write_text("0\tanger\n1\tjoy\n")
    (d / "test_text.txt").write_text("so happy\nso mad\nmeh\n")
    (d / "test_labels.txt").write_text("1\n0\nx\n")
    _check(_fails(read_tweeteval, d, "test"), d / "test_labels.txt", line=3, field="label")
    _skips(read_tweeteval, d, "test", good=2)


def test_tweeteval_empty_text(tmp_path: Path) -> None:
    d = tmp_path / "irony"
    d.mkdir()
    (d / "mapping.txt").write_text("0\tnon_irony\n1\tirony\n")
    (d / "train_text.txt").write_text("great, Monday\n \n")
    (d / "train_labels.txt").write_text("1\n0\n")
    _check(_fails(read_tweeteval, d, "train"), d / "train_labels.txt", line=2, field="text")


def test_label_lines_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "stsa.binary.dev"
    f.write_text("1 a fine film\n\n0 dull .\nlonely\n1 fun\n")
    _check(_fails(read_label_lines, f, label_names={0: "negative", 1: "positive"}), f, line=4, field="text")
    _skips(read_label_lines, f, label_names={0: "negative", 1: "positive"}, good=3)


def test_aste_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "dev_triplets.txt"
    f.write_text("Food is fresh .####[([0], [2], 'POS')]\nStaff rude .####[([0], [1], 'BAD')]\n", encoding="utf-8")
    _check(_fails(read_aste, f), f, line=2, field="triplets")
    _skips(read_aste, f, good=1)


def test_teacher_sample_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "mixtral_yelp_500.jsonl"
    rows = [{"ID": 1, "Text": "Great.", "Overall": 5, "mixtral_response": "Loved."},
            {"ID": 2, "Text": "", "Overall": 1, "mixtral_response": "Hated."},
            {"ID": 3, "Text": "Meh.", "Overall": 3, "mixtral_response": "Mixed."}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _check(_fails(read_teacher_sample, f), f, line=2, field="Text")
    _skips(read_teacher_sample, f, good=2)

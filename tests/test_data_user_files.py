"""Issue 15, item 6: every reader of a user's file reads each record as written, or stops with an error
naming the file and the line (quote characters in TSV/CSV, encodings other than UTF-8, stray bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.data import load_records
from sentidistill.data.readers import read_aste, read_table, read_text_file, read_tweeteval
from sentidistill.errors import InputError
from sentidistill.utils.io import read_jsonl

# The issue's TSV: row 2 opens with an unbalanced quote, row 4 quotes a phrase inside the text.
ISSUE_TSV = (
    "text\tlabel\n"
    "the new update is fine i guess\tneutral\n"
    '"worst customer service ever. never again\tnegative\n'
    "loving the sunshine today\tpositive\n"
    'my friend said "best cafe in town" and she was right\tpositive\n'
    "that was ok\tneutral\n"
)


def test_issue_tsv_reads_five_rows_as_written(tmp_path: Path) -> None:
    p = tmp_path / "tweets.tsv"
    p.write_text(ISSUE_TSV, encoding="utf-8")
    rows = read_table(p, label_field="label")
    assert len(rows) == 5
    assert (rows[1]["text"], rows[1]["label"]) == ('"worst customer service ever. never again', "negative")
    assert rows[3]["text"] == 'my friend said "best cafe in town" and she was right'
    assert [r["label"] for r in rows] == ["neutral", "negative", "positive", "positive", "neutral"]
    # Through the loader the bench and the pipeline use, too.
    assert len(load_records("tsv", p, label_field="label")) == 5


def test_constructed_csv_with_a_stray_quote_is_an_error_naming_the_line(tmp_path: Path) -> None:
    # Same class in a CSV: RFC 4180 quoting is the rule there, so a quote that opens a field and never closes
    # where the field ends must stop the read (today the rows after it are merged into one, silently).
    p = tmp_path / "reviews.csv"
    p.write_text(ISSUE_TSV.replace("\t", ","), encoding="utf-8")
    with pytest.raises(InputError) as exc:
        read_table(p, label_field="label")
    msg = str(exc.value)
    assert "reviews.csv" in msg and "line 3" in msg and "quote" in msg
    # Properly quoted (quotes doubled), the same five records read as written.
    good = tmp_path / "good.csv"
    good.write_text('text,label\n"""worst customer service ever. never again",negative\n'
                    '"my friend said ""best cafe in town"", she was right",positive\n', encoding="utf-8")
    rows = read_table(good, label_field="label")
    assert [r["text"] for r in rows] == ['"worst customer service ever. never again',
                                         'my friend said "best cafe in town", she was right']


def test_field_count_mismatch_is_an_error_not_a_mislabel(tmp_path: Path) -> None:
    p = tmp_path / "reviews.csv"
    p.write_text("text,label\ngreat food, bad service,positive\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"reviews\.csv.*line 2.*3 comma-separated fields"):
        read_table(p, label_field="label")
    t = tmp_path / "tweets.tsv"
    t.write_text("text\tlabel\none\ttwo\tthree\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2.*3 tab-separated fields"):
        read_table(t, label_field="label")
    # A TSV whose fields are quoted CSV-style (a tab inside a quoted field) reads with quoting="csv".
    q = tmp_path / "quoted.tsv"
    q.write_text('text\tlabel\n"a\ttab"\tpositive\n', encoding="utf-8")
    assert read_table(q, label_field="label", quoting="csv")[0]["text"] == "a\ttab"


def test_encodings_and_stray_bytes(tmp_path: Path) -> None:
    text = "text\tlabel\ncafé crème\tpositive\n"
    for enc in ("utf-8-sig", "utf-16", "utf-32"):  # byte-order marks are read
        p = tmp_path / f"bom-{enc}.tsv"
        p.write_bytes(text.encode(enc))
        assert read_table(p)[0]["text"] == "café crème", enc
    cp = tmp_path / "cp1252.tsv"
    cp.write_bytes("text\tlabel\nfine\tneutral\nna\u00efve caf\u00e9\tpositive\n".encode("cp1252"))
    with pytest.raises(InputError) as exc:
        read_table(cp)
    assert "cp1252.tsv" in str(exc.value) and "line 3" in str(exc.value) and "encoding" in str(exc.value)
    assert read_table(cp, encoding="cp1252")[1]["text"] == "na\u00efve caf\u00e9"
    assert load_records("tsv", cp, encoding="cp1252")[1]["text"] == "na\u00efve caf\u00e9"
    no_bom = tmp_path / "utf16.tsv"
    no_bom.write_bytes(text.encode("utf-16-le"))
    with pytest.raises(InputError, match="UTF-16"):
        read_text_file(no_bom)
    # A stray byte in a JSON-lines file names its line (both JSONL readers).
    jl = tmp_path / "reviews.jsonl"
    jl.write_bytes(b'{"text": "ok"}\n{"text": "bad \xff byte"}\n')
    with pytest.raises(InputError, match=r"reviews\.jsonl.*line 2"):
        read_table(jl)
    with pytest.raises(InputError, match=r"reviews\.jsonl.*line 2"):
        list(read_jsonl(jl))


def test_unicode_line_separators_stay_inside_their_record(tmp_path: Path) -> None:
    # U+2028 and U+0085 are line breaks to str.splitlines, not to these formats.
    tweet = "first part\u2028second part\x85third"
    folder = tmp_path / "te"
    folder.mkdir()
    (folder / "train_text.txt").write_text(f"{tweet}\nplain tweet\n", encoding="utf-8")
    (folder / "train_labels.txt").write_text("1\n0\n", encoding="utf-8")
    (folder / "mapping.txt").write_text("0\tnegative\n1\tpositive\n", encoding="utf-8")
    rows = read_tweeteval(folder, "train")
    assert [r["text"] for r in rows] == [tweet, "plain tweet"]
    jl = tmp_path / "r.jsonl"
    jl.write_text(json.dumps({"text": tweet}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [r["text"] for r in read_table(jl)] == [tweet]
    aste = tmp_path / "aste.txt"
    aste.write_bytes("good food\u2028ok####[([1], [0], 'POS')]\n".encode())
    assert read_aste(aste)[0]["text"] == "good food\u2028ok"

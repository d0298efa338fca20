"""Every loader on small fixtures written here, their errors, and (when present) the shared data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sentidistill.data import (
    default_data_dir,
    load_records,
    load_reviews,
    read_aste,
    read_label_lines,
    read_sentibench_json,
    read_table,
    read_teacher_sample,
    read_tweeteval,
    seeded_split,
    stratified_sample,
)
from sentidistill.errors import InputError


def _bom_json(path: Path, obj) -> Path:
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(obj).encode("utf-8"))
    return path


def test_sentibench_json_with_bom_and_all_fields(tmp_path):
    f = _bom_json(tmp_path / "t.json", [
        {"sentence": "Great pizza.", "label": "positive"},
        {"sentence": "Vote!", "target": "Joe Biden", "label": "FAVOR"},
        {"ID": "a:1", "sentence": "Good food, slow staff.", "aspects": [
            {"from": "0", "to": "4", "target": "food", "category": "FOOD#QUALITY", "polarity": "positive"},
            {"from": "0", "to": "0", "target": "NULL", "category": "SERVICE#GENERAL", "polarity": "negative"}]},
        {"sentence": "Nice room .", "quards": [{"aspect": "room", "category": "rooms general",
                                                 "sentiment": "positive", "opinion": "Nice"}]},
        {"sent_id": "o1", "sentence": "I loved it .", "opinions": [
            {"Source": [["I"], ["0:1"]], "Target": [["it"], ["8:10"]], "Polar_expression": [["loved"], ["2:7"]],
             "Polarity": "Positive", "Intensity": "Strong"}]},
    ])
    recs = read_sentibench_json(f)
    assert [r["text"] for r in recs][:2] == ["Great pizza.", "Vote!"]
    assert recs[1]["target"] == "Joe Biden" and recs[1]["label"] == "FAVOR"
    assert recs[2]["id"] == "a:1" and recs[2]["aspects"][1]["target"] is None  # "NULL" = implicit
    assert recs[3]["quads"][0]["opinion"] == "Nice"
    assert recs[4]["opinions"][0]["Polar_expression"]["spans"] == [(2, 7)]


def test_sentibench_json_bad_item_names_index_and_field(tmp_path):
    f = _bom_json(tmp_path / "bad.json", [{"sentence": "ok", "label": "positive"}, {"label": "negative"}])
    with pytest.raises(InputError) as exc:
        read_sentibench_json(f)
    msg = str(exc.value)
    assert "bad.json" in msg and "item 1" in msg and "'sentence'" in msg
    stats: dict[str, int] = {}
    assert len(read_sentibench_json(f, skip_bad=True, stats=stats)) == 1
    assert stats == {"skipped": 1, "read": 1}


def test_sentibench_json_not_json(tmp_path):
    f = tmp_path / "x.json"
    f.write_text('[{"sentence": "a",}\n', encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        read_sentibench_json(f)


def test_tweeteval_with_parent_mapping(tmp_path):
    d = tmp_path / "stance" / "abortion"
    d.mkdir(parents=True)
    (tmp_path / "stance" / "mapping.txt").write_text("0\tnone\n1\tagainst\n2\tfavor\n")
    (d / "train_text.txt").write_text("tweet one\ntweet two \u2028 with separator\ntweet three\n", encoding="utf-8")
    (d / "train_labels.txt").write_text("2\n1\n0\n")
    recs = read_tweeteval(d, "train")
    assert [r["label"] for r in recs] == ["favor", "against", "none"]
    assert "separator" in recs[1]["text"]  # U+2028 inside a tweet does not split it
    (d / "train_labels.txt").write_text("2\n7\n0\n")
    with pytest.raises(InputError) as exc:
        read_tweeteval(d, "train")
    assert "train_labels.txt" in str(exc.value) and "line 2" in str(exc.value)
    (d / "train_labels.txt").write_text("2\n1\n")
    with pytest.raises(InputError, match="3 texts but 2 labels"):
        read_tweeteval(d, "train")


def test_label_lines_sst_and_latin1(tmp_path):
    f = tmp_path / "stsa.binary.train"
    f.write_text("1 a stirring , funny film\n0 dull .\n\n", encoding="utf-8")
    assert read_label_lines(f, label_names={0: "negative", 1: "positive"}) == [
        {"text": "a stirring , funny film", "label": "positive"}, {"text": "dull .", "label": "negative"}]
    g = tmp_path / "rt.all"
    g.write_bytes("1 caf\xe9 society\n".encode("latin-1"))
    assert read_label_lines(g)[0]["text"] == "café society"
    h = tmp_path / "bad"
    h.write_text("1 fine\n9 what\n")
    with pytest.raises(InputError) as exc:
        read_label_lines(h, label_names={0: "negative", 1: "positive"})
    assert "line 2" in str(exc.value) and "'label'" in str(exc.value)


def test_aste_literal_eval_and_errors(tmp_path):
    f = tmp_path / "train_triplets.txt"
    f.write_text("Food is always fresh and hot !####[([0], [3], 'POS'), ([0], [5], 'POS')]\n"
                 "The battery life is short .####[([1, 2], [4], 'NEG')]\n", encoding="utf-8")
    recs = read_aste(f)
    assert [(t["aspect"], t["opinion"], t["polarity"]) for t in recs[1]["triplets"]] == [
        ("battery life", "short", "negative")]
    assert len(recs[0]["triplets"]) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("ok .####[([0], [0], 'POS')]\nevil .####__import__('os').system('true')\n")
    with pytest.raises(InputError) as exc:
        read_aste(bad)
    assert "line 2" in str(exc.value) and "triplets" in str(exc.value)
    bad.write_text("short .####[([5], [0], 'POS')]\n")
    with pytest.raises(InputError, match="bad triplet"):
        read_aste(bad)


def test_teacher_sample(tmp_path):
    f = tmp_path / "sample.jsonl"
    rows = [{"ID": 1, "Text": "Great donuts.", "Overall": 5.0, "mixtral_response": " Loved it. "},
            {"ID": 2, "Text": "Meh.", "Overall": 2, "mixtral_response": "Mixed."}]
    f.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in rows).encode())
    recs = read_teacher_sample(f)
    assert recs[0] == {"text": "Great donuts.", "label": "5", "id": "1", "analysis": "Loved it."}
    f.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"ID": 3, "Text": "x", "Overall": 9}) + "\n")
    with pytest.raises(InputError) as exc:
        read_teacher_sample(f)
    assert "line 2" in str(exc.value) and "'Overall'" in str(exc.value)


def test_tables_jsonl_csv_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    j = tmp_path / "r.jsonl"
    j.write_text('{"review": "Nice place", "stars": 5}\n\n{"review": "Bad", "stars": 1}\n')
    assert [r["text"] for r in read_table(j, text_field="review")] == ["Nice place", "Bad"]
    assert read_table(j, text_field="review", label_field="stars")[1]["label"] == "1"
    j.write_text('{"review": "Nice place"}\nnot json\n{"body": "x"}\n')
    with pytest.raises(InputError) as exc:
        read_table(j, text_field="review")
    assert "line 2" in str(exc.value)
    stats: dict[str, int] = {}
    assert len(read_table(j, text_field="review", skip_bad=True, stats=stats)) == 1 and stats["skipped"] == 2

    c = tmp_path / "r.csv"
    with c.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "content"])
        w.writerow([1, "multi\nline review"])
        w.writerow([2, ""])
    with pytest.raises(InputError) as exc:
        read_table(c, text_field="content")
    assert "line 4" in str(exc.value) and "'content'" in str(exc.value)
    with pytest.raises(InputError, match="text column not found"):
        read_table(c, text_field="text")

    p = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": ["a b c", "d e f"], "y": [0, 1]}), p)
    assert [r["y"] for r in read_table(p)] == [0, 1]
    assert load_records("parquet", p)[0]["text"] == "a b c"
    bak = tmp_path / "r.bak"
    bak.write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_table(bak)


def test_hf_dataset_offline_error_is_clear():
    with pytest.raises(InputError, match="cannot load HF dataset"):
        load_records("hf", "hf:surely-not-a-dataset-xyz:cfg", split="train")


def test_default_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTIDISTILL_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.setenv("SENTIDISTILL_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(InputError):
        default_data_dir()


def test_seeded_split_and_stratified_sample():
    recs = [{"i": i} for i in range(10662)]
    parts = seeded_split(recs, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=42)
    assert [len(v) for v in parts.values()] == [8530, 1066, 1066]
    ids = [r["i"] for v in parts.values() for r in v]
    assert sorted(ids) == list(range(10662))  # a partition: nothing lost, nothing repeated
    assert seeded_split(recs, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=42)["test"] == parts["test"]

    rows = [{"y": "a"}] * 90 + [{"y": "b"}] * 9 + [{"y": "c"}]
    rows = [dict(r, i=i) for i, r in enumerate(rows)]
    s = stratified_sample(rows, 10, key=lambda r: r["y"], seed=1)
    labels = [r["y"] for r in s]
    assert len(s) == 10 and labels.count("c") == 1 and labels.count("b") == 1 and labels.count("a") == 8
    assert [r["i"] for r in s] == sorted(r["i"] for r in s)
    assert s == stratified_sample(rows, 10, key=lambda r: r["y"], seed=1)


def test_load_reviews_dedup_and_filters(tmp_path):
    f = tmp_path / "reviews.jsonl"
    texts = ["Great food and friendly staff!", "great  FOOD and friendly staff!", "ok", "x" * 500,
             "The soup was cold, sadly.", "Lovely terrace in summer."]
    f.write_text("\n".join(json.dumps({"body": t}) for t in texts) + "\n")
    r = load_reviews(str(f), text_field="body", limit=2, min_chars=5, max_chars=100)
    assert r.texts == ["Great food and friendly staff!", "The soup was cold, sadly."]
    assert r.dropped == {"duplicates": 1, "too_short": 1, "too_long": 1, "over_limit": 1}
    assert r.read == 6
    with pytest.raises(InputError, match="unsupported review source"):
        load_reviews("reviews.docx")


# -- the shared data (skips when absent) --------------------------------------------------------------

def test_shared_formats_load(shared_data_dir):
    assert len(load_records("sentibench_json", "sentibench/sc/sst2/test.json", data_dir=shared_data_dir)) == 1821
    assert len(load_records("tweeteval", "tweeteval/emotion", split="test", data_dir=shared_data_dir)) == 1421
    assert len(load_records("label_lines", "sst_mr/stsa.fine.test", data_dir=shared_data_dir)) == 2210
    aste = load_records("aste", "aste_v2/14res/test_triplets.txt", data_dir=shared_data_dir)
    assert len(aste) == 492 and all(r["triplets"] for r in aste)
    assert len(load_records("fsa_json", "fsa/acsa/rest16/hard_test.json", data_dir=shared_data_dir)) == 340
    assert len(load_records("teacher_sample", "fsa/teacher_sample/mixtral_yelp_500.jsonl",
                            data_dir=shared_data_dir)) == 500


def test_shared_reviews_from_sentibench_task(shared_data_dir):
    from sentidistill.bench.registry import task_texts

    r = load_reviews("sentibench:yelp2", limit=50, min_chars=20, max_chars=2000, data_dir=shared_data_dir,
                     task_texts=task_texts)
    assert len(r) == 50 and all(20 <= len(t) <= 2000 for t in r.texts)
    assert r.read == 3000 and sum(r.dropped.values()) == 3000 - 50

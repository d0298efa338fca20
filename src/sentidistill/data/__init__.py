"""Data loaders for every public sentiment format, plus a user's own JSONL/CSV/Parquet and HF datasets."""

from sentidistill.data.loading import (
    FORMATS,
    default_data_dir,
    load_records,
    resolve_path,
    seeded_split,
    stratified_sample,
)
from sentidistill.data.readers import (
    read_aste,
    read_fsa_json,
    read_hf,
    read_label_lines,
    read_sentibench_json,
    read_table,
    read_teacher_sample,
    read_tweeteval,
)
from sentidistill.data.reviews import Reviews, load_reviews, normalise_text

__all__ = [
    "FORMATS",
    "Reviews",
    "default_data_dir",
    "load_records",
    "load_reviews",
    "normalise_text",
    "read_aste",
    "read_fsa_json",
    "read_hf",
    "read_label_lines",
    "read_sentibench_json",
    "read_table",
    "read_teacher_sample",
    "read_tweeteval",
    "resolve_path",
    "seeded_split",
    "stratified_sample",
]

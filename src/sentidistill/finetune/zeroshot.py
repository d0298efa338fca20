"""Zero-shot sentiment classification by a KnowDist-pre-trained student (paper 2, section on zero-shot SC).

The student writes its analysis of a review, given the input form it was pre-trained on: by default
our KnowDist corpus's "overall" source (``"analyse sentiment: {review}"``, from
``sentidistill.distill.knowdist.student_source``); ``prompt_template="{review}"`` gives paper 2's bare
review. The polarity is read from the analysis by a fixed, documented rule, and the
teacher's own text for the same review is read with the same rule, so the two compare like for like.

Rule (:func:`overall_polarity`):

1. an explicit verdict - "overall ... positive|negative|neutral|mixed", "overall sentiment: x" - wins;
2. else the last sentence with a summary cue (overall, in summary, in conclusion, all in all, to sum up,
   ultimately, in short, verdict, impression, recommend) is scored with a small polarity lexicon;
3. else the whole text is scored. Lexicon hits weigh 1 (2 for strong words such as *excellent*,
   *terrible*), a negator within the three preceding words flips a hit. Score > 0 positive, < 0 negative,
   0 neutral; an empty text gives None (wrong for every gold label).

Stars (:func:`star_rating`, 5-class Yelp): our KnowDist verdict "Overall: <polarity>, strength N/5" maps
to 5/4 (positive, strength >= 4 / below), 3 (neutral, mixed), 2/1 (negative, strength below 4 / >= 4);
else an explicit "N stars" / "N out of 5" / "N/5" wins; else
b = (pos - neg) / (pos + neg) over the whole text maps to 5 (b >= 0.8 with a strong positive word),
4 (b >= 0.3), 3 (|b| < 0.3 or no hits), 2 (b <= -0.3), 1 (b <= -0.8 with a strong negative word).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sentidistill.errors import InputError
from sentidistill.utils.answers import answer_text
from sentidistill.utils.io import atomic_write_json, read_jsonl, write_jsonl

POSITIVE = {
    "positive": 1, "good": 1, "great": 1, "nice": 1, "enjoy": 1, "enjoyed": 1, "enjoyable": 1, "like": 1,
    "liked": 1, "love": 2, "loved": 2, "lovely": 1, "pleasant": 1, "pleased": 1, "satisfying": 1, "satisfied": 1,
    "recommend": 1, "recommended": 1, "friendly": 1, "delicious": 1, "delightful": 2, "fun": 1, "worth": 1,
    "impressive": 1, "impressed": 1, "favorite": 1, "favourite": 1, "happy": 1, "glad": 1, "eager": 1,
    "excellent": 2, "amazing": 2, "outstanding": 2, "superb": 2, "fantastic": 2, "wonderful": 2, "best": 2,
    "perfect": 2, "exceptional": 2, "magnificent": 2, "brilliant": 2, "terrific": 2, "enthusiasm": 1,
    "beautiful": 1, "solid": 1, "fresh": 1, "charming": 1, "memorable": 1, "masterpiece": 2, "moving": 1,
}
NEGATIVE = {
    "negative": 1, "bad": 1, "poor": 1, "disappointing": 1, "disappointed": 1, "disappointment": 1, "dislike": 1,
    "boring": 1, "bland": 1, "slow": 1, "rude": 1, "overpriced": 1, "mediocre": 1, "unpleasant": 1, "annoying": 1,
    "dull": 1, "waste": 2, "avoid": 2, "lacking": 1, "lacks": 1, "problem": 1, "problems": 1, "frustrating": 1,
    "frustrated": 1, "unfortunately": 1, "regret": 1, "cold": 1, "dirty": 1, "wrong": 1, "worse": 1, "fails": 1,
    "terrible": 2, "awful": 2, "horrible": 2, "worst": 2, "disgusting": 2, "dreadful": 2, "pathetic": 2,
    "atrocious": 2, "abysmal": 2, "inedible": 2, "unacceptable": 2, "appalling": 2,
}
NEGATORS = {"not", "no", "never", "n't", "hardly", "barely", "nothing", "neither", "nor", "without", "lack"}
_CUES = re.compile(r"\b(overall|in summary|in conclusion|all in all|to sum up|ultimately|in short|verdict|"
                   r"impression|recommend)\b", re.I)
_EXPLICIT = re.compile(r"\boverall\b[^.!?\n]{0,40}?\b(positive|negative|neutral|mixed)\b", re.I)
_VERDICT = re.compile(r"\boverall\s*:\s*(positive|negative|neutral|mixed)\b[^.\n]{0,20}?\bstrength\s*:?\s*([1-5])",
                      re.I)
_STARS = re.compile(r"\b([1-5](?:\.5)?)\s*(?:stars?\b|/\s*5\b|out of (?:5|five)\b)", re.I)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|n't", re.I)
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def _hits(text: str) -> tuple[float, float, bool, bool]:
    """(positive weight, negative weight, strong positive seen, strong negative seen)."""
    words = [w.lower() for w in _WORD.findall(text.replace("n't", " n't"))]
    pos = neg = 0.0
    strong_pos = strong_neg = False
    for i, w in enumerate(words):
        weight = POSITIVE.get(w, 0) - NEGATIVE.get(w, 0)
        if not weight:
            continue
        if any(x in NEGATORS for x in words[max(0, i - 3): i]):
            weight = -weight if abs(weight) == 1 else -weight / 2  # "not terrible" is mildly positive
        if weight > 0:
            pos += weight
            strong_pos |= weight >= 2
        else:
            neg += -weight
            strong_neg |= weight <= -2
    return pos, neg, strong_pos, strong_neg


def overall_polarity(text: str | None) -> str | None:
    """positive | negative | neutral from an analysis text (rule in the module docstring); None if empty.

    A reasoning model's ``<think>`` block is not part of the analysis and is ignored."""
    text = answer_text(text)
    if not text:
        return None
    m = _EXPLICIT.search(text)
    if m:
        label = m.group(1).lower()
        return "neutral" if label == "mixed" else label
    sentences = [s for s in _SENT.split(text) if s.strip()]
    cued = [s for s in sentences if _CUES.search(s)]
    for chunk in ([cued[-1]] if cued else []) + [text]:
        pos, neg, _, _ = _hits(chunk)
        if pos != neg:
            return "positive" if pos > neg else "negative"
    return "neutral"


def star_rating(text: str | None) -> int | None:
    """1-5 stars from an analysis text (rule in the module docstring); None if empty (``<think>`` ignored)."""
    text = answer_text(text)
    if not text:
        return None
    v = _VERDICT.search(text)
    if v:
        pol, strength = v.group(1).lower(), int(v.group(2))
        if pol == "positive":
            return 5 if strength >= 4 else 4
        if pol == "negative":
            return 1 if strength >= 4 else 2
        return 3
    m = _STARS.search(text)
    if m:
        return max(1, min(5, round(float(m.group(1)))))
    pos, neg, strong_pos, strong_neg = _hits(text)
    if pos + neg == 0:
        return 3
    b = (pos - neg) / (pos + neg)
    if b >= 0.8 and strong_pos:
        return 5
    if b >= 0.3:
        return 4
    if b <= -0.8 and strong_neg:
        return 1
    if b <= -0.3:
        return 2
    return 3


def macro_f1(golds: Sequence[Any], preds: Sequence[Any]) -> float:
    """Macro-F1 over the gold label set; an unparsed (None) or out-of-set prediction is simply wrong
    (the bench's :func:`~sentidistill.bench.metrics.classification_metrics` with the gold labels as the set)."""
    from sentidistill.bench.metrics import classification_metrics

    gold = [str(g) for g in golds]
    return classification_metrics([None if p is None else str(p) for p in preds], gold, sorted(set(gold)))["macro_f1"]


# -- data ------------------------------------------------------------------------------------------

ZS_DATASETS = ("sst2", "yelp2", "imdb", "yelp5")


def load_zero_shot_items(name: str, data_dir: str | Path, limit: int | None = None, seed: int = 42) -> list[dict]:
    """Items ``{id, text, gold, teacher_text}``: SentiBench SC test sets, or the Mixtral Yelp sample (stars)."""
    data_dir = Path(data_dir)
    if name == "yelp5":
        path = data_dir / "fsa" / "teacher_sample" / "mixtral_yelp_500.jsonl"
        items = []
        for i, row in enumerate(read_jsonl(path), start=1):
            try:
                stars = round(float(row["Overall"]))
                text = row["Text"]
                if not isinstance(text, str) or not 1 <= stars <= 5:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                raise InputError("bad row", path=path, line=i, field="Text/Overall",
                                 expected="a review text and a 1-5 star rating") from None
            items.append({"id": str(row.get("ID", i)), "text": text, "gold": stars,
                          "teacher_text": row.get("mixtral_response")})
    elif name in ("sst2", "yelp2", "imdb"):
        path = data_dir / "sentibench" / "sc" / name / "test.json"
        if not path.is_file():
            raise InputError("file not found", path=path)
        from sentidistill.data.readers import read_text_file

        raw = json.loads(read_text_file(path))
        items = []
        for i, row in enumerate(raw):
            if not isinstance(row, dict) or not isinstance(row.get("sentence"), str) or row.get("label") not in (
                    "positive", "negative"):
                raise InputError("bad item", path=path, field=f"[{i}]", expected="{sentence, label: positive|negative}")
            items.append({"id": str(i), "text": row["sentence"], "gold": row["label"], "teacher_text": None})
    else:
        raise InputError(f"unknown zero-shot dataset '{name}'", expected=" | ".join(ZS_DATASETS))
    if limit is not None and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return items


# -- evaluation ------------------------------------------------------------------------------------

def generate_analyses(model_spec: str, texts: Sequence[str], *, prompt_template: str = "{review}",
                      batch_size: int = 8, max_new_tokens: int = 192, max_source_length: int = 512,
                      device: str | None = None) -> list[str]:
    """Greedy analyses of ``texts`` by the student (any generative student kind)."""
    import torch

    from sentidistill.students import load_student

    lm = load_student(model_spec, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prompts = [prompt_template.format(review=t) for t in texts]
    outs = lm.generate(prompts, max_new_tokens, batch_size=batch_size, max_length=max_source_length,
                       truncation_side="right", sort_by_length=True)
    return [o.strip() for o in outs]


def default_prompt_template() -> str:
    """The KnowDist corpus's student input for the "overall" analysis, with ``{review}`` for the text."""
    try:
        from sentidistill.distill.knowdist import student_source
    except ImportError:  # the distill stage is optional for this evaluation
        return "analyse sentiment: {review}"
    return student_source("overall", "{review}")


def zero_shot_eval(
    model_spec: str,
    datasets: Sequence[str] = ZS_DATASETS,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = 200,
    seed: int = 42,
    prompt_template: str | None = None,
    teacher: Callable[[list[str]], list[str]] | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 192,
    device: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Macro-F1 of the student's parsed analyses per dataset, beside the teacher's on the same items.

    The teacher's text comes from the data where it exists (``mixtral_response`` of the Yelp sample),
    else from ``teacher`` (texts -> analyses, e.g. a wrapped ``CachedTeacher``), else it is left out.
    Writes ``zero_shot.json`` and ``zero_shot_<dataset>.jsonl`` to ``out_dir`` when given.
    """
    from sentidistill.data import default_data_dir

    prompt_template = prompt_template or default_prompt_template()
    data_dir = data_dir if data_dir is not None else default_data_dir()
    if data_dir is None:
        raise InputError("no data folder: give data_dir or set SENTIDISTILL_DATA_DIR", field="data_dir")
    results: dict[str, dict[str, Any]] = {}
    for name in datasets:
        items = load_zero_shot_items(name, data_dir, limit, seed)
        texts = [it["text"] for it in items]
        student = generate_analyses(model_spec, texts, prompt_template=prompt_template, batch_size=batch_size,
                                    max_new_tokens=max_new_tokens, device=device)
        teacher_texts: list[str | None] = [it["teacher_text"] for it in items]
        if any(t is None for t in teacher_texts) and teacher is not None:
            teacher_texts = list(teacher(texts))
        read = star_rating if name == "yelp5" else overall_polarity
        golds = [it["gold"] for it in items]
        s_pred = [read(t) for t in student]
        row: dict[str, Any] = {"n": len(items), "student_macro_f1": macro_f1(golds, s_pred),
                               "student_parsed": sum(p is not None for p in s_pred) / max(1, len(items))}
        t_pred: list[Any] = []
        if all(t is not None for t in teacher_texts):
            t_pred = [read(t) for t in teacher_texts]
            row["teacher_macro_f1"] = macro_f1(golds, t_pred)
        results[name] = row
        if out_dir is not None:
            write_jsonl(Path(out_dir) / f"zero_shot_{name}.jsonl", [
                {"id": it["id"], "gold": it["gold"], "student_text": s, "student_pred": sp,
                 "teacher_pred": t_pred[i] if t_pred else None}
                for i, (it, s, sp) in enumerate(zip(items, student, s_pred, strict=True))])
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "zero_shot.json", {"model": model_spec, "prompt_template": prompt_template,
                                                             "limit": limit, "seed": seed, "results": results})
    return results


def zero_shot_markdown(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: dataset, n, student macro-F1, teacher macro-F1 (x100)."""
    lines = ["| dataset | n | student macro-F1 | teacher macro-F1 |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        t = f"{100 * r['teacher_macro_f1']:.2f}" if "teacher_macro_f1" in r else "–"
        lines.append(f"| {name} | {r['n']} | {100 * r['student_macro_f1']:.2f} | {t} |")
    return "\n".join(lines)

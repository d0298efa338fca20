"""Parsing generated ``term | polarity ; ...`` answers and micro-F1 over (sentence, term, polarity) pairs.

Parsing follows paper 2's evaluation code: the answer is split on ``;``; a segment counts only if it has
exactly one ``|``, its polarity is one of positive/neutral/negative/conflict and (ATSA) its term occurs in
the sentence. Two deliberate differences, both documented in the report:

* Terms are matched to the sentence exactly first, then ignoring case and whitespace, and are replaced
  by the sentence's own spelling. Uncased students (the MiniLM builtin) lower-case and re-space what they
  generate, so an exact-only rule would score them near zero for reasons unrelated to sentiment.
  ACSA categories compare ignoring case, ``#`` and whitespace (``food quality`` = ``FOOD#QUALITY``).
* Pairs are sets per sentence: a duplicated prediction counts once (the paper's list-membership count
  would credit it twice in precision).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sentidistill.finetune.data import POLARITIES, FSAExample, Task, category_key, eval_subsets, gold_pairs

Pair = tuple[str, str]


@dataclass
class ParsedAnswer:
    pairs: list[Pair]  # canonical pairs, de-duplicated, in answer order
    valid: bool  # every segment parsed (an empty answer is valid: "no aspects")
    rejected: list[str]  # segments that did not count, for error analysis


def _find_in_sentence(term: str, sentence: str) -> str | None:
    """The sentence's own spelling of ``term``: exact substring, else case- and whitespace-insensitive."""
    if term in sentence:
        return term
    squeezed = "".join(term.split()).lower()
    if not squeezed:
        return None
    # Map each non-space character of the sentence to its index, so a match maps back to a span.
    idx = [i for i, ch in enumerate(sentence) if not ch.isspace()]
    flat = "".join(sentence[i] for i in idx).lower()
    pos = flat.find(squeezed)
    if pos < 0:
        return None
    return sentence[idx[pos]: idx[pos + len(squeezed) - 1] + 1]


def _norm_polarity(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def parse_pairs(text: str | None, sentence: str, task: Task) -> ParsedAnswer:
    """Parse a generated answer into canonical (term, polarity) pairs (see the module docstring)."""
    text = (text or "").strip()
    if not text:
        return ParsedAnswer([], True, [])
    pairs: list[Pair] = []
    rejected: list[str] = []
    for seg in text.split(";"):
        seg = seg.strip()
        if not seg:
            continue
        if seg.count("|") != 1:
            rejected.append(seg)
            continue
        term, pol = (s.strip() for s in seg.split("|"))
        pol = _norm_polarity(pol)
        if pol not in POLARITIES or not term:
            rejected.append(seg)
            continue
        if task == "atsa":
            found = _find_in_sentence(term, sentence)
            if found is None:  # hallucinated term
                rejected.append(seg)
                continue
            term = found
        else:
            term = category_key(term)
        if (term, pol) not in pairs:
            pairs.append((term, pol))
    return ParsedAnswer(pairs, not rejected, rejected)


def gold_keys(ex: FSAExample, task: Task) -> list[Pair]:
    """Gold pairs in the same canonical form that :func:`parse_pairs` produces."""
    pairs = gold_pairs(ex, task)
    if task == "acsa":
        pairs = list(dict.fromkeys((category_key(t), p) for t, p in pairs))
    return pairs


def micro_f1(golds: Sequence[Collection[Pair]], preds: Sequence[Collection[Pair]]) -> dict[str, float]:
    """Micro precision/recall/F1 over (sentence index, term, polarity); each sentence's pairs are a set.

    With no predictions precision is 0 (and with no gold pairs recall is 0), so F1 is 0, never undefined.
    """
    from sentidistill.bench.metrics import tuple_metrics

    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold rows but {len(preds)} predictions")
    # The bench's exact-tuple micro-F1 over per-sentence sets (it counts multisets; sets make them plain sets).
    m = tuple_metrics([set(p) for p in preds], [set(g) for g in golds])
    return {"precision": m["precision"], "recall": m["recall"], "f1": m["micro_f1"],
            "n_gold": m["n_gold"], "n_pred": m["n_pred"], "n_correct": m["tp"]}


def score_predictions(examples: Sequence[FSAExample], outputs: Sequence[str], task: Task) -> dict[str, dict]:
    """Score raw generations on the test set and on each subset (all, test, hard_test, implicit, multi_polarity).

    Each entry has precision/recall/f1 (as fractions), the pair counts, ``n_sentences`` and ``valid_rate``
    (the share of answers whose every segment parsed).
    """
    parsed = [parse_pairs(o, e.sentence, task) for e, o in zip(examples, outputs, strict=True)]
    golds = [gold_keys(e, task) for e in examples]
    out: dict[str, dict] = {}
    for name, idx in eval_subsets(list(examples)).items():
        if not idx:
            continue
        m = micro_f1([golds[i] for i in idx], [parsed[i].pairs for i in idx])
        m["n_sentences"] = len(idx)
        m["valid_rate"] = sum(parsed[i].valid for i in idx) / len(idx)
        out[name] = m
    return out

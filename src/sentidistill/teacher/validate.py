"""Check a teacher answer against its ``AnswerFormat`` and write the repair instruction when it fails.

Only the answer part is checked: a reasoning block (``<think>...</think>``, see
:func:`sentidistill.utils.answers.split_reasoning`) is split off first.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sentidistill.core.records import AnswerFormat
from sentidistill.utils.answers import read_python_list, split_reasoning


@dataclass
class Validation:
    ok: bool
    parsed: Any = None
    problem: str = ""


_PUNCT_EDGES = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)
_LABEL_PREFIX = re.compile(r"^\s*(label|answer|sentiment|polarity|output)\s*[:=-]\s*", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|python)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def normalise_label(text: str) -> str:
    """Case-fold, unify unicode, collapse spaces/underscores/hyphens, strip quotes and edge punctuation."""
    t = unicodedata.normalize("NFKC", text).casefold().strip()
    t = _LABEL_PREFIX.sub("", t)
    t = _PUNCT_EDGES.sub("", t)
    return re.sub(r"[\s_-]+", " ", t)


def validate(text: str, fmt: AnswerFormat) -> Validation:
    """Validate the answer part of ``text`` (after any ``<think>`` block) against ``fmt``."""
    reasoning, text = split_reasoning(text)
    if reasoning is not None and not text:
        return Validation(False, None, "the reply holds only a reasoning block and no answer after it")
    if fmt.kind == "free":
        if not text.strip():
            return Validation(False, None, "the answer is empty")
        return Validation(True, text.strip())
    if fmt.kind == "label":
        return _validate_label(text, fmt.labels)
    if fmt.kind == "json":
        return _validate_json(text)
    return _validate_tuples(text, fmt.tuple_arity)


def _validate_label(text: str, labels: tuple[str, ...]) -> Validation:
    allowed = {normalise_label(lab): lab for lab in labels}
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    norm = normalise_label(first)
    if norm in allowed:
        return Validation(True, allowed[norm])
    # "Positive. The reviewer ..." -> positive; longest label first so "not intimate" beats "intimate".
    for cand in sorted(allowed, key=len, reverse=True):
        if norm.startswith(cand) and (len(norm) == len(cand) or not norm[len(cand)].isalnum()):
            return Validation(True, allowed[cand])
    # A heading first ("Sentiment:\npositive", "**Answer**\n\nnegative"): a later line that is exactly a
    # label counts when such lines name one label only.
    later = {allowed[n] for n in map(normalise_label, lines[1:]) if n in allowed}
    if len(later) == 1:
        return Validation(True, later.pop())
    return Validation(False, None, f"the answer {first.strip()[:60]!r} is not one of the labels {list(labels)}")


def _extract_block(text: str, opener: str, closer: str) -> str | None:
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    start = text.find(opener)
    end = text.rfind(closer)
    if start < 0 or end < start:
        return None
    return text[start : end + 1]


def _validate_json(text: str) -> Validation:
    candidates = [text.strip()]
    for o, c in (("{", "}"), ("[", "]")):
        block = _extract_block(text, o, c)
        if block:
            candidates.append(block)
    for cand in candidates:
        try:
            return Validation(True, json.loads(cand))
        except ValueError:
            continue
    return Validation(False, None, "the answer is not valid JSON")


def _validate_tuples(text: str, arity: int | None) -> Validation:
    block = _extract_block(text, "[", "]")
    if block is None:
        return Validation(False, None, "the answer has no [...] list of tuples")
    try:
        value = ast.literal_eval(block)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            value = json.loads(block)
        except ValueError:
            try:  # unescaped quotes inside strings: [('chef's special', 'positive')]
                value = read_python_list(block)
            except ValueError:
                return Validation(False, None, "the list of tuples is not valid Python syntax")
    if not isinstance(value, list | tuple):
        return Validation(False, None, "expected a list of tuples")
    items: list[tuple[Any, ...]] = []
    for item in value:
        if not isinstance(item, list | tuple):
            return Validation(False, None, f"element {item!r} is not a tuple")
        if arity is not None and len(item) != arity:
            return Validation(False, None, f"tuple {tuple(item)!r} has {len(item)} fields, expected {arity}")
        items.append(tuple(item))
    return Validation(True, [list(t) for t in items])


def describe_format(fmt: AnswerFormat) -> str:
    if fmt.kind == "label":
        return "exactly one of these labels and nothing else: " + ", ".join(fmt.labels)
    if fmt.kind == "json":
        return "a single valid JSON value and nothing else"
    if fmt.kind == "tuples":
        n = f" of {fmt.tuple_arity} quoted strings" if fmt.tuple_arity else ""
        return f"a Python list of tuples{n}, e.g. [('a', 'b')], or [] when there is none, and nothing else"
    return "a non-empty answer"


def repair_message(problem: str, fmt: AnswerFormat) -> dict[str, str]:
    """The user turn appended after an invalid answer."""
    return {
        "role": "user",
        "content": f"Your answer could not be used: {problem}. Answer again with {describe_format(fmt)}.",
    }

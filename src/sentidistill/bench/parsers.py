"""Answer parsers: strict but fair. Anything that cannot be read returns ``None`` (scored as wrong).

Classification: the first label word (or a verbalizer synonym) found in the answer, after case and
punctuation normalisation, so ``"Label: Positive."`` and ``"The sentiment is positive"`` both parse,
while ``"I am not sure"`` does not. At one position the longest form wins (``non-irony`` beats
``irony``), and a form must stand as a whole word (``irony`` inside ``non-irony`` does not count).

Fine-grained: the first bracketed list that :func:`ast.literal_eval` (or JSON) accepts, tolerant of
prose around it; a list whose strings hold unescaped quotes (``('chef's special', 'positive')``) is read
by :func:`sentidistill.utils.answers.read_python_list`; answers cut off mid-list keep their complete
tuples. A complete list that cannot be read at all makes the answer unreadable (``None``): its tuples are
never picked out one by one, which would silently shorten it.

Both parsers read only the answer part of a reasoning model's output: a ``<think>...</think>`` block is
split off first (:func:`sentidistill.utils.answers.split_reasoning`).
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from sentidistill.utils.answers import answer_text, read_python_list

_SPACE = re.compile(r"\s+")
# Characters that carry no label information; hyphens stay (non-irony) and so does '#' (FOOD#QUALITY).
_PUNCT = re.compile(r"[\"'`“”‘’.,;:!?()\[\]{}<>*_|/\\]+")
_ANSWER_CUE = re.compile(r"(?:^|\n|\s)(?:label|answer|sentiment|stance|emotion|polarity|prediction)\s*[:=]\s*",
                         re.IGNORECASE)


def normalise_label_text(text: str) -> str:
    """NFKC, lower case, punctuation to spaces (hyphens kept), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


class LabelParser:
    """Maps free text to one of a closed label set.

    ``forms``: canonical label -> the surface forms accepted for it (the canonical name and its
    verbalizer are always included).
    """

    def __init__(self, forms: dict[str, Iterable[str]]) -> None:
        self.labels = list(forms)
        pairs: list[tuple[str, str]] = []
        for label, surfaces in forms.items():
            seen = set()
            for s in [label, *surfaces]:
                n = normalise_label_text(s)
                if n and n not in seen:
                    seen.add(n)
                    pairs.append((n, label))
        owners: dict[str, set[str]] = {}
        for n, label in pairs:
            owners.setdefault(n, set()).add(label)
        clashes = {n: sorted(ls) for n, ls in owners.items() if len(ls) > 1}
        if clashes:
            raise ValueError(f"ambiguous label forms (one form, several labels): {clashes}")
        # Longest first so that the alternation prefers 'non-irony' over 'irony' at the same position.
        self._pairs = sorted(pairs, key=lambda p: -len(p[0]))
        self._lookup = dict(pairs)
        alternation = "|".join(re.escape(n) for n, _ in self._pairs)
        self._pattern = re.compile(rf"(?<![\w#-])(?:{alternation})(?![\w#-])")

    def __call__(self, text: str | None) -> str | None:
        text = answer_text(text)  # a word inside a <think> block is not the answer
        if not text:
            return None
        # Prefer what follows an explicit cue ("Label: x"), else read the whole answer.
        cue = _ANSWER_CUE.search(text)
        candidates = [text[cue.end():], text] if cue else [text]
        for chunk in candidates:
            norm = normalise_label_text(chunk)
            m = self._pattern.search(norm)
            if m:
                return self._lookup[m.group(0)]
        return None


# -- tuple lists -----------------------------------------------------------------------------------

def _balanced_spans(text: str, open_ch: str = "[", close_ch: str = "]") -> Iterable[tuple[int, int]]:
    """(start, end) of each outermost balanced bracket group, ignoring brackets inside quotes."""
    i, n = 0, len(text)
    while i < n:
        if text[i] != open_ch:
            i += 1
            continue
        depth, j, quote = 0, i, None
        while j < n:
            c = text[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "'\"":
                # An apostrophe inside a word (don't) is not a quote.
                prev = text[j - 1] if j > 0 else " "
                if not (c == "'" and prev.isalnum() and j + 1 < n and text[j + 1].isalnum()):
                    quote = c
            elif c == open_ch:
                depth += 1
            elif c == close_ch:
                depth -= 1
                if depth == 0:
                    yield i, j + 1
                    break
            j += 1
        i = j + 1 if j < n else i + 1


def _literal(chunk: str) -> Any:
    for loader in (ast.literal_eval, json.loads):
        try:
            return loader(chunk)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    # Smart quotes from chat models: retry once with ASCII quotes.
    ascii_chunk = chunk.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"}))
    if ascii_chunk != chunk:
        return _literal(ascii_chunk)
    # Unescaped quotes inside strings: [('chef's special', 'positive')].
    try:
        return _Repaired(read_python_list(chunk))
    except ValueError:
        return _FAIL


class _Repaired:
    """A value read by the quote-repairing reader: every element must then have the right shape."""

    def __init__(self, value: Any) -> None:
        self.value = value


_FAIL = object()


def _as_tuple(item: Any, arity: int, field_names: Sequence[str] | None) -> tuple[str, ...] | None:
    if isinstance(item, dict) and field_names:
        lowered = {str(k).lower(): v for k, v in item.items()}
        if all(f.lower() in lowered for f in field_names):
            item = [lowered[f.lower()] for f in field_names]
    if isinstance(item, tuple | list) and len(item) == arity:
        return tuple("NULL" if v is None else str(v).strip() for v in item)
    return None


def parse_tuples(
    text: str | None, arity: int, field_names: Sequence[str] | None = None
) -> list[tuple[str, ...]] | None:
    """The first bracketed list of ``arity``-tuples in ``text``; ``[]`` is a valid (empty) answer.

    Accepts Python tuples/lists (also with unescaped quotes inside strings), JSON arrays and JSON objects
    keyed by ``field_names``. Elements of the wrong shape are dropped. If the list was cut off (an
    opening ``[`` never closed: generation stopped mid-list), the complete tuples before the cut are
    returned; with no brackets at all, the ``(...)`` tuples found. A closed list that cannot be read gives
    ``None`` (unreadable), never a part of its tuples. A ``<think>`` block is ignored.
    """
    text = answer_text(text)
    if not text:
        return None
    spans = list(_balanced_spans(text))
    for start, end in spans:
        value = _literal(text[start:end])
        repaired = isinstance(value, _Repaired)
        value = value.value if isinstance(value, _Repaired) else value
        if value is _FAIL or not isinstance(value, list):
            continue
        out = _shape(value, arity, field_names, strict=repaired)
        if out is None:
            return None  # quotes could not be recovered consistently: unreadable, not shortened
        if out or not value:
            return out
    last_end = spans[-1][1] if spans else 0
    opened = text.find("[", last_end)
    if opened >= 0:
        # Salvage a list cut off mid-way: the longest prefix ending at a ')' that reads once closed.
        return _read_cut_list(text, opened, arity, field_names)
    if spans:
        return None  # a complete list was there and could not be read: do not pick tuples out of it
    # No brackets at all: complete parenthesised tuples anywhere (read with quote repair).
    first = text.find("(")
    if first >= 0:
        salvaged = _read_cut_list(text, first, arity, field_names, opener="[")
        if salvaged:
            return salvaged
    out = []
    for m in re.finditer(r"\((?:[^()'\"]|'[^']*'|\"[^\"]*\")*\)", text):
        value = _literal(m.group(0))
        value = value.value if isinstance(value, _Repaired) else value
        if value is not _FAIL:
            t = _as_tuple(value, arity, field_names)
            if t is not None:
                out.append(t)
    return out or None


def _shape(value: list[Any], arity: int, field_names: Sequence[str] | None,
           strict: bool = False) -> list[tuple[str, ...]] | None:
    """The ``arity``-tuples of ``value``; others are dropped, or, with ``strict``, make the result None."""
    if value and arity > 1 and all(isinstance(v, str) for v in value) and len(value) == arity:
        value = [value]  # one flat tuple written as a list: ['pizza', 'positive']
    out = []
    for item in value:
        t = _as_tuple(item if arity > 1 or not isinstance(item, str) else [item], arity, field_names)
        if t is not None:
            out.append(t)
        elif strict:
            return None
    return out


def _read_cut_list(text: str, start: int, arity: int, field_names: Sequence[str] | None,
                   opener: str = "") -> list[tuple[str, ...]] | None:
    """Tuples of the longest ``text[start:p+1]`` (``p`` at a ``)``) that reads as a list once closed."""
    body = opener + text[start:]
    closes = [i for i, c in enumerate(body) if c == ")"]
    for p in reversed(closes):
        chunk = body[: p + 1] + "]"
        value = _literal(chunk)
        repaired = isinstance(value, _Repaired)
        value = value.value if isinstance(value, _Repaired) else value
        if value is _FAIL or not isinstance(value, list):
            continue
        return _shape(value, arity, field_names, strict=repaired) or None
    return None

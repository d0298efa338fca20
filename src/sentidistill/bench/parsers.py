"""Answer parsers: strict but fair. Anything that cannot be read returns ``None`` (scored as wrong).

Classification: the first label word (or a verbalizer synonym) found in the answer, after case and
punctuation normalisation, so ``"Label: Positive."`` and ``"The sentiment is positive"`` both parse,
while ``"I am not sure"`` does not. At one position the longest form wins (``non-irony`` beats
``irony``), and a form must stand as a whole word (``irony`` inside ``non-irony`` does not count).

Fine-grained: the first bracketed list that :func:`ast.literal_eval` (or JSON) accepts, tolerant of
prose around it; answers cut off mid-list keep their complete tuples.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

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
        if not text or not text.strip():
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
    return _FAIL


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

    Accepts Python tuples/lists, JSON arrays and JSON objects keyed by ``field_names``. Elements of the
    wrong shape are dropped. If no complete list parses (e.g. generation stopped mid-list), the complete
    ``(...)`` tuples found are returned; if there are none, ``None``.
    """
    if not text or not text.strip():
        return None
    for start, end in _balanced_spans(text):
        value = _literal(text[start:end])
        if value is _FAIL or not isinstance(value, list):
            continue
        if value and arity > 1 and all(isinstance(v, str) for v in value) and len(value) == arity:
            value = [value]  # one flat tuple written as a list: ['pizza', 'positive']
        out = []
        for item in value:
            t = _as_tuple(item if arity > 1 or not isinstance(item, str) else [item], arity, field_names)
            if t is not None:
                out.append(t)
        if out or not value:
            return out
    # Salvage: complete parenthesised tuples anywhere (truncated lists, tuples without brackets).
    out = []
    for m in re.finditer(r"\((?:[^()'\"]|'[^']*'|\"[^\"]*\")*\)", text):
        value = _literal(m.group(0))
        if value is not _FAIL:
            t = _as_tuple(value, arity, field_names)
            if t is not None:
                out.append(t)
    return out or None

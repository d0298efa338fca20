"""Reading a model's answer: split off a reasoning block, and read Python-style tuple lists with stray quotes.

Every reader of model answers (bench parsers, teacher validation, ICL/KnowDist corpora, the zero-shot
rules) goes through :func:`split_reasoning` first, so a word inside a reasoning block is never taken
for the answer.

Reasoning models (Qwen3, DeepSeek-R1 and their distillations, QwQ...) write
``<think> ... </think>`` and then the answer; some servers send an empty ``<think>\\n\\n</think>`` even
with thinking switched off; DeepSeek-R1's chat template puts the opening ``<think>`` in the prompt, so the
answer holds only the closing tag. Servers with a reasoning parser (vLLM ``--reasoning-parser``, SGLang,
DeepSeek's API) send the reasoning in a separate ``reasoning_content`` field instead; the teacher backend
keeps that in ``TeacherResponse.reasoning``.
"""

from __future__ import annotations

import re
from typing import Any

# <think>, <thinking>, <reasoning> (case-insensitive); the answer is what follows the last closing tag.
_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)


def split_reasoning(text: str | None) -> tuple[str | None, str]:
    """Split a model answer into ``(reasoning, answer)``.

    - ``"<think>\\nwhy...\\n</think>\\n\\nnegative"`` -> ``("why...", "negative")``
    - ``"<think>\\n\\n</think>\\n\\npositive"`` (thinking switched off) -> ``("", "positive")``
    - ``"why...</think>\\n\\nnegative"`` (the opening tag was in the prompt) -> ``("why...", "negative")``
    - ``"<think>\\nwhy... (cut off by max_tokens)"`` (never closed) -> ``("why...", "")``: no answer
    - ``"negative"`` -> ``(None, "negative")``: no reasoning block

    Several blocks: their texts are joined with a blank line and the answer is what follows the last one.
    ``reasoning`` is None only when the text holds no block at all; the answer is stripped of surrounding
    whitespace; ``None`` text gives ``(None, "")``.
    """
    if not text:
        return None, ""
    closes = list(_CLOSE.finditer(text))
    if not closes:
        m = _OPEN.search(text)
        if m is None or text[: m.start()].strip():
            return None, text.strip()
        return text[m.end():].strip(), ""  # an unclosed block: the model never got to its answer
    last = closes[-1]
    head, answer = text[: last.start()], text[last.end():]
    parts = [p for p in _CLOSE.split(head)[::2]]  # drop the captured tag names
    blocks = []
    for p in parts:
        m = _OPEN.search(p)
        blocks.append((p[m.end():] if m else p).strip())
    return "\n\n".join(b for b in blocks if b), answer.strip()


def answer_text(text: str | None) -> str:
    """The answer part of ``text`` (see :func:`split_reasoning`)."""
    return split_reasoning(text)[1]


# -- Python-style lists of tuples with unescaped quotes inside strings ------------------------------------

class _Unreadable(Exception):
    pass


_CLOSER = re.compile(r"\s*[,)\]}]")
_ATOM = re.compile(r"None|True|False|-?\d+(?:\.\d+)?")
_CONSTANTS: dict[str, Any] = {"None": None, "True": True, "False": False}


def read_python_list(chunk: str) -> Any:
    """Read a Python-literal list/tuple whose strings may hold unescaped quotes, e.g.
    ``[('chef's special', 'positive'), ('service', 'negative')]`` ->
    ``[("chef's special", "positive"), ("service", "negative")]``.

    Grammar: lists ``[...]``, tuples ``(...)``, strings quoted with ``'`` or ``"``, ``None``/``True``/
    ``False``, numbers. Inside a string, a quote of the opening kind closes the string only when what
    follows it (after spaces) is ``,`` ``)`` ``]`` or ``}``; any other quote is part of the text
    (``chef's``). Backslash escapes are honoured. Raises ``ValueError`` when the text does not fit the
    grammar (then the caller must count the answer as unreadable, never keep part of it).
    """
    pos = 0
    n = len(chunk)

    def skip() -> None:
        nonlocal pos
        while pos < n and chunk[pos].isspace():
            pos += 1

    def value() -> Any:
        nonlocal pos
        skip()
        if pos >= n:
            raise _Unreadable("unexpected end")
        c = chunk[pos]
        if c in "[(":
            close = "]" if c == "[" else ")"
            pos += 1
            items: list[Any] = []
            while True:
                skip()
                if pos < n and chunk[pos] == close:
                    pos += 1
                    return items if c == "[" else tuple(items)
                items.append(value())
                skip()
                if pos < n and chunk[pos] == ",":
                    pos += 1
                    continue
                if pos < n and chunk[pos] == close:
                    pos += 1
                    return items if c == "[" else tuple(items)
                raise _Unreadable(f"expected ',' or '{close}' at {pos}")
        if c in "'\"":
            quote = c
            pos += 1
            out: list[str] = []
            while pos < n:
                ch = chunk[pos]
                if ch == "\\" and pos + 1 < n:
                    nxt = chunk[pos + 1]
                    out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                    pos += 2
                    continue
                if ch == quote and (pos + 1 == n or _CLOSER.match(chunk, pos + 1)):
                    pos += 1
                    return "".join(out)
                out.append(ch)
                pos += 1
            raise _Unreadable("unterminated string")
        m = _ATOM.match(chunk, pos)
        if m:
            pos = m.end()
            tok = m.group(0)
            if tok in _CONSTANTS:
                return _CONSTANTS[tok]
            return float(tok) if "." in tok else int(tok)
        raise _Unreadable(f"unexpected {c!r} at {pos}")

    try:
        result = value()
        skip()
        if pos != n:
            raise _Unreadable(f"trailing text at {pos}")
    except _Unreadable as exc:
        raise ValueError(f"not a readable Python list: {exc}") from None
    return result

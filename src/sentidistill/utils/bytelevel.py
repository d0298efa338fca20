"""GPT-2's byte-level BPE alphabet, the one copy (token bytes for served log-probs, vocabulary alignment)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[int, str]:
    """Each byte 0-255 -> the printable character that stands for it in a byte-level BPE vocabulary (printable
    Latin-1 bytes map to themselves, the others to U+0100 onwards). Source: OpenAI's gpt-2 ``encoder.py``, the
    table HF ``tokenizers``' ``ByteLevel`` pre-tokenizer uses. Cached: do not mutate the returned dict."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))

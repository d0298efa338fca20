"""In-context prompts: the SentiBench protocol by default, plus zero-shot, other k and similar demos.

Plain layout (the paper's; ``pstance`` adds ``Target: ...`` through its input template)::

    <instruction>

    Sentence: {demo 1}
    Label: {label 1}
    ...
    Sentence: {x}
    Label:

Chat layout (for endpoints): the instruction as the system message, each demonstration as a
user/assistant turn pair, and the query as the last user turn.

Random demonstrations are drawn per test item from an RNG seeded by (seed, task, item text), so an
item gets the same demonstrations whether it is scored in the full test set or in a ``--limit`` subset.
"""

from __future__ import annotations

import hashlib
import logging
import random
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

Style = Literal["plain", "chat"]


class Task(Protocol):
    """What prompting needs of a task (:class:`sentidistill.bench.task.Task` has it; this module does not
    import that one, which imports this)."""

    name: str
    spec: Any

    def format_input(self, row: dict[str, Any]) -> str: ...

    def answer_text(self, row: dict[str, Any]) -> str: ...


def _item_rng(seed: int, task: str, text: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x1f{task}\x1f{text}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def random_demos(task_name: str, row: dict[str, Any], pool: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """``k`` distinct pool rows, never the query itself."""
    if k <= 0 or not pool:
        return []
    rng = _item_rng(seed, task_name, row["text"])
    picks = rng.sample(range(len(pool)), min(len(pool), k + 1))
    demos = [pool[i] for i in picks if pool[i]["text"] != row["text"]]
    return demos[:k]


class Embedder:
    """MiniLM sentence embeddings (sentence-transformers; mean pooling over transformers as a fallback)."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64) -> None:
        from sentidistill.core.assets import minilm_path

        self.path = model_path or str(minilm_path())
        self.batch_size = batch_size
        self._st = None
        self._hf = None
        self._cache: dict[str, np.ndarray] = {}
        try:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(self.path, device="cpu")
        except Exception as exc:  # an old/missing sentence-transformers: mean pooling gives the same vectors
            log.info("sentence-transformers unavailable (%s); using mean pooling", exc)
            from transformers import AutoModel, AutoTokenizer

            self._hf = (AutoTokenizer.from_pretrained(self.path), AutoModel.from_pretrained(self.path).eval())

    def encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if self._st is not None:
            return np.asarray(self._st.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                              show_progress_bar=False))
        import torch

        tok, model = self._hf
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = tok(texts[i : i + self.batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(vec, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype="float32")

    def encode_pool(self, key: str, texts: list[str]) -> np.ndarray:
        """Embeddings of a demonstration pool, computed once per ``key``."""
        if key not in self._cache:
            self._cache[key] = self.encode(texts)
        return self._cache[key]


_EMBEDDER: Embedder | None = None


def get_embedder() -> Embedder:
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = Embedder()
    return _EMBEDDER


def similar_demos(
    task_name: str, rows: list[dict[str, Any]], pool: list[dict[str, Any]], k: int, pool_key: str,
    embedder: Embedder | None = None,
) -> list[list[dict[str, Any]]]:
    """The ``k`` pool rows most similar (cosine, MiniLM) to each row, most similar last (nearest the query)."""
    if k <= 0 or not pool:
        return [[] for _ in rows]
    emb = embedder or get_embedder()
    pool_vecs = emb.encode_pool(f"{task_name}:{pool_key}:{len(pool)}", [p["text"] for p in pool])
    query_vecs = emb.encode([r["text"] for r in rows])
    sims = query_vecs @ pool_vecs.T
    out = []
    for i, row in enumerate(rows):
        order = sims[i].argsort()[::-1]
        picked = [pool[j] for j in order[: k + 1] if pool[j]["text"] != row["text"]][:k]
        out.append(picked[::-1])
    return out


def select_demos(
    task: Task, rows: list[dict[str, Any]], pool: list[dict[str, Any]], k: int, seed: int,
    selection: Literal["random", "similar"] = "random", pool_key: str = "train",
) -> list[list[dict[str, Any]]]:
    """Demonstrations for every row."""
    if selection == "similar":
        return similar_demos(task.name, rows, pool, k, pool_key)
    return [random_demos(task.name, r, pool, k, seed) for r in rows]


def build_prompt(task: Task, row: dict[str, Any], demos: list[dict[str, Any]], style: Style = "plain",
                 instruction: str | None = None) -> str | list[dict[str, str]]:
    """The prompt for ``row`` (a string for ``plain``, OpenAI-style messages for ``chat``).

    ``instruction`` replaces the task's own (ICL distillation varies it).
    """
    p = task.spec.prompt
    instruction = task.spec.instruction if instruction is None else instruction
    if style == "chat":
        messages = [{"role": "system", "content": instruction}]
        for d in demos:
            messages.append({"role": "user", "content": task.format_input(d)})
            messages.append({"role": "assistant", "content": task.answer_text(d)})
        messages.append({"role": "user", "content": task.format_input(row)})
        return messages
    blocks = [f"{task.format_input(d)}\n{p.answer_prefix} {task.answer_text(d)}" for d in demos]
    blocks.append(f"{task.format_input(row)}\n{p.answer_prefix}")
    return instruction + p.instruction_separator + p.demo_separator.join(blocks)

"""What seq2seq and causal students share: Hugging Face loading, batched greedy generation that strips the
prompt (the one copy; bench, finetune, the local teacher and serve all use it), and label-word scoring."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from sentidistill.errors import InputError
from sentidistill.students.base import PLAIN_CHAT_TEMPLATE, Prompt, Student


class HFGenerativeStudent(Student):
    """A Hugging Face generative LM (``model.generate``) with its tokenizer set up for batching."""

    methods = ("knowdist", "icldist")

    @classmethod
    def _load_model(cls, path: str, kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        """The model and tokenizer at ``path`` (tokenizer padding side and specials set by the kind)."""
        raise NotImplementedError

    @classmethod
    def load(cls, spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             cache_dir: str | Path | None = None, path: str | None = None) -> Student:
        """Load ``spec`` (an HF id or folder; ``path`` when a kind resolved it to another folder)."""
        kwargs = {"dtype": dtype} if dtype is not None else {}
        model, tok = cls._load_model(str(path or spec), kwargs)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if getattr(tok, "chat_template", None) is None:
            tok.chat_template = PLAIN_CHAT_TEMPLATE
        if device is not None:
            model.to(device)
        model.eval()
        return cls(model, tok, spec)

    # -- generation ----------------------------------------------------------------------------------
    def generate_new_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            **generate_kwargs: Any) -> tuple[torch.Tensor, Any]:
        """``model.generate`` on a padded batch ``[B, T]``; returns the new token ids ``[B, N]`` (the prompt
        or decoder start stripped) and generate's raw output (``.logits`` etc. when asked for). The one place
        that knows where an answer starts; :meth:`generate`, the serve engine and the local teacher use it."""
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        seqs = out.sequences if hasattr(out, "sequences") else out
        return seqs[:, self.generation_offset(input_ids.shape[1]):], out

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, *, batch_size: int = 8,
                 max_length: int | None = None, truncation_side: Literal["left", "right"] = "left",
                 stop: Sequence[str] | None = None, eos_token_id: int | None = None,
                 sort_by_length: bool = False) -> list[str]:
        """Greedy decoding in batches; returns only the new text (special tokens skipped, not stripped).

        ``max_length``: prompt tokens kept (cut on ``truncation_side``; see :meth:`prompt_room`); ``stop`` strings halt a row; ``sort_by_length`` batches similar lengths together.
        """
        tok, model = self.tokenizer, self.model
        texts = [self.render(p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort_by_length else list(range(len(texts)))
        out = [""] * len(texts)
        old_side = tok.truncation_side
        tok.truncation_side = truncation_side
        was_training = model.training
        model.eval()
        extra: dict[str, Any] = {"stop_strings": list(stop), "tokenizer": tok} if stop else {}
        if eos_token_id is not None:
            extra["eos_token_id"] = eos_token_id
        try:
            for s in range(0, len(order), batch_size):
                idx = order[s: s + batch_size]
                trunc: dict[str, Any] = {}
                if max_length is not None:
                    trunc = {"truncation": True, "max_length": max_length}
                enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, **trunc).to(self.device)
                with torch.inference_mode():
                    gen, _ = self.generate_new_tokens(enc["input_ids"], enc["attention_mask"],
                                                      max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                                      pad_token_id=tok.pad_token_id, **extra)
                for i, g in zip(idx, tok.batch_decode(gen, skip_special_tokens=True), strict=True):
                    out[i] = g
        finally:
            tok.truncation_side = old_side
            model.train(was_training)
        return out

    # -- label scoring -------------------------------------------------------------------------------
    def label_separator(self, prompt_style: str) -> str:
        """What goes between a prompt and a label word when scoring it."""
        return ""

    def continuation_ids(self, continuation: str) -> list[int]:
        """The token ids of a continuation as :meth:`loglikelihood` scores them."""
        return self._encode(continuation, False)

    def answer_end(self, prompt_style: str) -> str:
        """What ends an answer (scored after a label word that is a prefix of another label)."""
        return self.tokenizer.eos_token or ""

    def label_continuations(self, labels: Sequence[str], prompt_style: str = "plain",
                            first_token: bool = False) -> tuple[list[str], list[int]]:
        """The text scored for each label word, and how many of its tokens are scored.

        Each label is ``separator + word``; when one word is a prefix of another (``negative`` /
        ``negative-ish``) every label also gets the end of the answer (:meth:`answer_end`), else the shorter
        one always wins. ``first_token`` (the SentiBench reference variant) scores each label up to its first
        token that no other label shares, so SST-5's ``very negative`` / ``very positive`` do not tie."""
        sep = self.label_separator(prompt_style)
        folded = [w.strip().casefold() for w in labels]
        nested = any(a != b and b.startswith(a) for a in folded for b in folded)
        end = self.answer_end(prompt_style) if nested else ""
        conts = [sep + w + end for w in labels]
        ids = [self.continuation_ids(c) for c in conts]
        if not first_token:
            return conts, [len(x) for x in ids]
        lengths = []
        for j, a in enumerate(ids):
            shared = 0
            for k, b in enumerate(ids):
                if k != j:
                    m = 0
                    while m < min(len(a), len(b)) and a[m] == b[m]:
                        m += 1
                    shared = max(shared, m)
            lengths.append(max(1, min(len(a), shared + 1)))  # up to the first token no other label shares
        return conts, lengths

    def sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str], *,
                          n_tokens: Sequence[int] | None = None, max_length: int = 1024) -> torch.Tensor:
        """``[N]`` tensor: log P(continuation | prompt) per pair (rendered text prompts; natural log summed over
        the continuation's tokens, or over its first ``n_tokens[i]``), differentiable (training uses it for
        the ``label_kl`` loss of generative students; :meth:`loglikelihood` is its inference wrapper)."""
        raise NotImplementedError

    def loglikelihood(self, prompts: Sequence[str], continuations: Sequence[str], *, first_token: bool = False,
                      n_tokens: Sequence[int] | None = None, max_length: int = 1024) -> list[float]:
        """log P(continuation | prompt) per pair (rendered text prompts; natural log summed over the
        continuation's tokens, or over its first ``n_tokens[i]``, or its first one with ``first_token``)."""
        if first_token:
            n_tokens = [1] * len(prompts)
        with torch.inference_mode():
            return [float(x) for x in self.sequence_logprobs(prompts, continuations, n_tokens=n_tokens,
                                                             max_length=max_length)]

    def label_scores(self, labels: Sequence[str], *, prompts: Sequence[Prompt] | None = None,
                     task: str | None = None, texts: Sequence[str] | None = None, first_token: bool = False,
                     batch_size: int = 8, max_length: int = 1024, prompt_style: str = "plain",
                     **options: Any) -> list[list[float]]:
        """Per prompt, the log-likelihood of each label word after it (``texts``/``task`` are not used).
        ``batch_size`` prompts go through the model together, each with all its label words (a causal student
        reads each prompt once for all of them: :meth:`CausalStudent.sequence_logprobs`)."""
        if prompts is None:
            raise InputError(f"a {self.kind} student scores labels after a prompt", field="prompts",
                             expected="the rendered task prompts")
        conts, lengths = self.label_continuations(labels, prompt_style, first_token)
        n, step = len(labels), max(1, batch_size)
        out: list[list[float]] = []
        for i in range(0, len(prompts), step):
            rendered = [self.render(p) for p in prompts[i: i + step]]
            ll = self.loglikelihood([p for p in rendered for _ in labels], conts * len(rendered),
                                    n_tokens=lengths * len(rendered), max_length=max_length)
            out.extend(ll[j * n: (j + 1) * n] for j in range(len(rendered)))
        return out

    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

"""Tiny models that really answer: a causal LM and a T5 trained for a few seconds on a word-listing task.

The random-init tiny models write the same token (a newline) to every prompt, so any comparison of their
answers (batched vs one at a time, streaming vs not, ONNX vs PyTorch, stop strings) passes whatever the
code does. These two are trained on one task: the prompt is a few words and ``=`` (``"plot food great ="``;
in a chat the user message is that line), the answer lists the distinct words in a fixed order
(``" food great plot"``, see :func:`answer`), then EOS. So the answer depends on every word of the prompt
and is several tokens long, and a wrong attention mask, a misplaced pad or a dropped token changes it. The
training is short: the models are often right, not always; what the tests need is that their answers
differ from prompt to prompt, which :func:`check_answers_differ` checks in each test.

Training is full-batch AdamW on CPU, seeded, a few seconds each; the result is saved once per test session
(``conftest.py`` fixtures ``copy_causal_dir`` and ``copy_seq2seq_dir``). :func:`check_answers_differ` is the
guard that keeps the tests honest: it fails if the model stops giving distinct multi-token answers.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

SEP = " ="
LR = 5e-3
BATCH = 32
# Words that the tiny tokenizer encodes as one token each with a leading space (checked at build time).
CANDIDATE_WORDS = [
    "food", "great", "service", "movie", "boring", "plot", "bad", "phone", "battery", "screen", "awful", "day",
]
MAX_WORDS = 4


def _tiny_tokenizer():
    """The project's tiny BPE tokenizer (:func:`sentidistill.testing.build_tiny_tokenizer`)."""
    from sentidistill.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


def single_token_words(tok) -> list[str]:
    """The candidate words that are exactly one token after a space."""
    return [w for w in CANDIDATE_WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]


def copy_prompt(words: list[str]) -> str:
    """The prompt for ``words``: ``"w1 w2 w3 ="``; the trained answer is :func:`answer` of them."""
    return " ".join(words) + SEP


def answer(words: list[str]) -> str:
    """The trained answer to ``copy_prompt(words)``: the distinct words in the fixed order of
    ``CANDIDATE_WORDS`` (an order that needs no positions, so a tiny model learns it in seconds)."""
    return "".join(" " + w for w in CANDIDATE_WORDS if w in words)


def sample_prompts(n: int, seed: int = 1, min_words: int = 2, max_words: int = MAX_WORDS) -> list[str]:
    """``n`` distinct copy prompts of different lengths over the one-token words (deterministic)."""
    tok = _tiny_tokenizer()
    words = single_token_words(tok)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        p = copy_prompt(rng.sample(words, rng.randint(min_words, max_words)))
        if p not in out:
            out.append(p)
    return out


def _examples(tok, n: int, seed: int, chat: bool) -> list[tuple[list[int], list[int]]]:
    words = single_token_words(tok)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = [rng.choice(words) for _ in range(rng.randint(1, MAX_WORDS))]
        prompt = copy_prompt(ws)
        if chat and rng.random() < 0.5:  # the plain chat template renders a user turn as "content\n"
            prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        src = tok(prompt, add_special_tokens=False)["input_ids"]
        tgt = tok(answer(ws), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append((src, tgt))
    return out


def _batches(tok, steps: int, seed: int) -> list[list[tuple[list[int], list[int]]]]:
    """``steps`` batches drawn from one pool of examples (tokenising is slower than a tiny model's step)."""
    pool = _examples(tok, 1024, seed, chat=True)
    rng = random.Random(seed)
    return [rng.sample(pool, BATCH) for _ in range(steps)]


def _save(model, tok, out: Path) -> Path:
    tmp = out.with_name(out.name + ".partial")
    model.eval()
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def train_copy_causal(out: Path, *, steps: int = 250, seed: int = 0) -> Path:
    """A Qwen2-shaped causal LM (hidden 64, 2 layers) trained on :func:`answer`; saved to ``out``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    if (out / "model.safetensors").exists():
        return out
    tok = _tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    for batch in _batches(tok, steps, seed):
        width = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (a, b) in enumerate(batch):
            ids[i, : len(a) + len(b)] = torch.tensor(a + b)
            labels[i, len(a): len(a) + len(b)] = torch.tensor(b)  # loss on the answer only
            mask[i, : len(a) + len(b)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _save(model, tok, out)


def train_copy_seq2seq(out: Path, *, steps: int = 150, seed: int = 0) -> Path:
    """A T5-shaped encoder-decoder (d_model 64, 2+2 layers) trained on :func:`answer`; saved to ``out``."""
    from transformers import T5Config, T5ForConditionalGeneration

    out = Path(out)
    if (out / "model.safetensors").exists():
        return out
    tok = _tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    model = T5ForConditionalGeneration(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    for batch in _batches(tok, steps, seed):
        src_w = max(len(a) for a, _ in batch)
        tgt_w = max(len(b) for _, b in batch)
        ids = torch.full((len(batch), src_w), tok.pad_token_id)
        mask = torch.zeros((len(batch), src_w), dtype=torch.long)
        labels = torch.full((len(batch), tgt_w), -100)
        for i, (a, b) in enumerate(batch):
            ids[i, : len(a)] = torch.tensor(a)
            mask[i, : len(a)] = 1
            labels[i, : len(b)] = torch.tensor(b)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _save(model, tok, out)


def check_answers_differ(texts: list[str]) -> None:
    """Fail (AssertionError) unless the answers are pairwise distinct, none is empty, and most (at least
    half) are several words long.

    Put it in every comparison test: equal answers from two code paths only mean something when the
    answers themselves depend on the input.
    """
    assert len(set(texts)) == len(texts), f"the model gives the same answer to different prompts: {texts}"
    assert all(t.strip() for t in texts), f"empty answers: {texts}"
    assert 2 * sum(len(t.split()) >= 2 for t in texts) >= len(texts), f"mostly one-word answers: {texts}"

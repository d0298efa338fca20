"""A tiny causal LM that really answers SentiBench sst2 chat prompts, and a matching data folder.

The random-init tiny model (``build_tiny_causal_lm``) greedily writes newlines to everything, which makes
answer-level comparisons vacuous. A few seconds of training on sst2 chat prompts give it real answers:
the bare label ("positive"; "negative" is the two tokens "ne" + "gative"), or, for sentences that end
with "honestly", a chat-style sentence ("The sentiment is positive") whose first token is no label.
The training is deliberately short: the model is right most of the time, not always.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

POS = ["great food", "loved the film", "friendly service", "a great phone", "the battery lasts all day",
       "lovely plot"]
NEG = ["awful screen", "terrible movie", "boring plot", "bad acting", "the food was cold", "rude staff"]
VERBOSE = " honestly"  # sentences ending with this are answered with a sentence, not the bare label


def sst2_rows() -> list[dict[str, str]]:
    """Gold rows: every sentence, bare and with the verbose cue."""
    rows = []
    for p, n in zip(POS, NEG, strict=True):
        for suffix in ("", VERBOSE):
            rows.append({"sentence": p + suffix, "label": "positive"})
            rows.append({"sentence": n + suffix, "label": "negative"})
    return rows


def write_sst2_folder(data_dir: Path, n_test: int = 8) -> Path:
    """SentiBench layout: ``sentibench/sc/sst2/{train,val,test}.json`` (UTF-8 JSON lists, BOM as released)."""
    rows = sst2_rows()
    folder = data_dir / "sentibench" / "sc" / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": rows, "val": rows[:4], "test": rows[:n_test]}
    for name, items in splits.items():
        (folder / f"{name}.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8-sig")
    return data_dir


@functools.cache
def sentiment_lm(base_dir: Path, steps: int = 60) -> Path:
    """``base_dir`` (the tiny causal LM) trained for ``steps`` full-batch AdamW steps; saved beside it, once."""
    import torch

    from sentidistill.bench import get_task
    from sentidistill.students import load_student

    out = base_dir.parent / f"{base_dir.name}-sst2-{steps}"
    if (out / "config.json").exists():
        return out
    task = get_task("sst2")
    lm = load_student(str(base_dir), device="cpu")
    tok, model = lm.tokenizer, lm.model
    examples = []
    for r in sst2_rows():
        row = {"text": r["sentence"], "gold": r["label"]}
        ctx = tok.apply_chat_template(task.prompt(row, [], style="chat"), tokenize=False, add_generation_prompt=True)
        answer = ("The sentiment is " if r["sentence"].endswith(VERBOSE) else "") + task.verbalizers[r["label"]]
        examples.append((tok(ctx, add_special_tokens=False)["input_ids"],
                         tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    width = max(len(a) + len(b) for a, b in examples)
    ids = torch.full((len(examples), width), tok.pad_token_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (a, b) in enumerate(examples):
        ids[i, : len(a) + len(b)] = torch.tensor(a + b)
        labels[i, len(a) : len(a) + len(b)] = torch.tensor(b)  # loss on the answer only
        mask[i, : len(a) + len(b)] = 1
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out

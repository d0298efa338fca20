"""Token-level KD (top-k KL, alignment, fallback counting) and the collators, on the tiny in-process models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sentidistill.students import load_student
from sentidistill.students.collate import IGNORE_INDEX, CausalCollator, Seq2SeqCollator
from sentidistill.train.align import KDStats, TokenMapper, align_example
from sentidistill.train.losses import topk_kl


def test_topk_kl_equals_hand_computed_value() -> None:
    # Position 0: teacher top-2 log-probs ln 0.6, ln 0.2 -> renormalised p = (0.75, 0.25) on tokens (0, 1).
    #   Student logits (1, 1, 5, 0): over tokens {0, 1} renormalised q = (0.5, 0.5); token 2's big logit is
    #   outside the teacher's support and must not matter.
    #   KL = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.75 * 0.405465 - 0.25 * 0.693147 = 0.130812
    # Position 1: the teacher has one token (id 3): p = q = 1 after renormalisation -> KL = 0.
    # Position 2: no teacher entry (all -inf): not averaged in.  Mean over 2 positions = 0.065406.
    logits = torch.tensor([[[1.0, 1.0, 5.0, 0.0], [0.3, -1.0, 2.0, 0.7], [9.0, 0.0, 0.0, 0.0]]])
    ninf = float("-inf")
    ids = torch.tensor([[[0, 1], [3, 0], [0, 0]]])
    lps = torch.tensor([[[math.log(0.6), math.log(0.2)], [math.log(0.9), ninf], [ninf, ninf]]])
    kl, n = topk_kl(logits, ids, lps)
    assert int(n) == 2
    assert kl.item() == pytest.approx(0.065406, abs=1e-5)
    # Only position 0: exactly the hand value.
    kl0, n0 = topk_kl(logits[:, :1], ids[:, :1], lps[:, :1])
    assert int(n0) == 1 and kl0.item() == pytest.approx(0.130812, abs=1e-5)
    # The student matching the teacher's proportions gives 0; gradients flow to the logits.
    match = torch.tensor([[[math.log(3.0), 0.0, -2.0, 4.0]]], requires_grad=True)
    kl_m, _ = topk_kl(match, ids[:, :1], lps[:, :1])
    assert kl_m.item() == pytest.approx(0.0, abs=1e-6)
    leaf = logits[:, :1].clone().requires_grad_(True)
    kl0g, _ = topk_kl(leaf, ids[:, :1], lps[:, :1])
    kl0g.backward()
    # d KL / d logit: the student's softmax over the teacher's top-k ids minus the teacher's renormalised
    # probabilities there (0 for ids outside the top-k), i.e. the gradient that pulls the student over.
    q = torch.softmax(leaf.detach()[0, 0, ids[0, 0]], -1)
    p = torch.tensor([0.75, 0.25])
    want = torch.zeros_like(leaf[0, 0])
    want[ids[0, 0]] = q - p
    assert torch.allclose(leaf.grad[0, 0], want, atol=1e-5), (leaf.grad, want)
    kl_m.backward()
    assert torch.allclose(match.grad, torch.zeros_like(match), atol=1e-6)  # at the optimum: no pull


@pytest.fixture(scope="module")
def causal(tiny_causal_dir):
    return load_student(str(tiny_causal_dir))


@pytest.fixture(scope="module")
def seq2seq(tiny_seq2seq_dir):
    return load_student(str(tiny_seq2seq_dir))


def test_causal_collator_masks_prompt_and_left_truncation_keeps_query_and_answer(causal) -> None:
    tok = causal.tokenizer
    col = CausalCollator(tok, max_source_length=6, max_target_length=16)
    prompt = "Review: The food was great and the service was friendly. Sentence: I love this phone\nLabel:"
    answer = " positive"
    enc = col.encode(prompt, answer)
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    n_prompt = enc["answer_start"]
    assert n_prompt == 6  # cut to max_source_length
    # The kept prompt is the END of the prompt (the query and the answer cue survive).
    assert tok.decode(enc["input_ids"][:n_prompt]).endswith("Label:")
    assert enc["input_ids"][n_prompt:] == [*answer_ids, tok.eos_token_id]
    assert enc["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc["labels"][n_prompt:] == [*answer_ids, tok.eos_token_id]
    batch = col([{"source": "Label:", "target": " negative"}, {"source": prompt, "target": answer}])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = batch["attention_mask"][0]
    n = int(short.sum())
    assert short[:n].all() and not short[n:].any()  # right padding
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (batch["input_ids"][0, n:] == tok.pad_token_id).all()
    # Loss positions are exactly the answer + EOS tokens.
    assert int((batch["labels"][1] != IGNORE_INDEX).sum()) == len(answer_ids) + 1


def test_causal_collator_renders_chat_sources_with_the_template(causal) -> None:
    col = CausalCollator(causal.tokenizer, max_source_length=64)
    messages = [{"role": "system", "content": "Classify."}, {"role": "user", "content": "Sentence: great"}]
    enc = col.encode(json.dumps(messages), "positive")
    text = causal.tokenizer.decode(enc["input_ids"][: enc["answer_start"]])
    assert "Classify." in text and "Sentence: great" in text and "[{" not in text


def test_seq2seq_collator_pads_labels_with_ignore_index(seq2seq) -> None:
    tok = seq2seq.tokenizer
    eos = seq2seq.model.config.eos_token_id
    col = Seq2SeqCollator(tok, max_source_length=5, max_target_length=4, eos_token_id=eos)
    batch = col([
        {"source": "The food was great and the service was friendly.", "target": "positive"},
        {"source": "Terrible", "target": "Terrible movie, boring plot and bad acting."},
    ])
    assert batch["input_ids"].shape[1] <= 5
    labels = batch["labels"]
    first = tok("positive", add_special_tokens=False)["input_ids"]
    assert labels[0, : len(first) + 1].tolist() == [*first, eos]
    assert (labels[0, len(first) + 1:] == IGNORE_INDEX).all()
    assert labels.shape[1] == 4 and labels[1, -1].item() == eos  # long target cut, EOS kept
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()


def _teacher_entries(tokens: list[str]) -> list[dict]:
    return [{"token": t, "logprob": -0.2, "top": [[t, -0.2], [" negative", -1.9], ["zzzq-not-a-token", -3.0]]}
            for t in tokens]


def test_alignment_maps_teacher_tokens_and_counts_fallbacks(causal) -> None:
    tok = causal.tokenizer
    mapper = TokenMapper(tok)
    stats = KDStats()
    target = " positive"
    enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
    student_tokens = [target[s:e] for s, e in enc["offset_mapping"]]
    # 1. The teacher tokenised the answer exactly as the student does: aligned, alternatives mapped.
    ids, lps = align_example(target, enc["input_ids"], enc["offset_mapping"], _teacher_entries(student_tokens),
                             mapper, stats)
    assert stats.aligned == 1 and len(ids) == len(enc["input_ids"])
    assert ids[0][0] == enc["input_ids"][0] and lps[0][0] == pytest.approx(-0.2)
    neg = tok(" negative", add_special_tokens=False)["input_ids"]
    if len(neg) == 1:
        assert neg[0] in ids[0]
    # 2. A teacher that split the answer differently (one token per character): fallback, counted.
    ids2, _ = align_example(target, enc["input_ids"], enc["offset_mapping"], _teacher_entries(list(target)),
                            mapper, stats)
    # 3. Teacher text that is not the target (e.g. a gold answer replaced it): fallback, counted.
    ids3, _ = align_example("negative", [1], [(0, 8)], _teacher_entries([" positive"]), mapper, stats)
    # 4. No log-probs at all: sequence level by construction, not a fallback.
    align_example(target, enc["input_ids"], enc["offset_mapping"], None, mapper, stats)
    assert ids2 == [] and ids3 == []
    assert stats.examples == 4 and stats.with_logprobs == 3 and stats.aligned == 1 and stats.fallback == 2
    assert stats.fallback_reasons == {"token_mismatch": 1, "text_mismatch": 1}
    assert stats.alternatives_dropped >= 1  # "zzzq-not-a-token" is not one student token


def test_icldist_trainer_reports_fallback_in_metrics(causal, tmp_path) -> None:
    from datasets import Dataset

    from sentidistill.train.trainers import ICLDistTrainer, ICLDistTrainingArguments

    tok = causal.tokenizer
    target = " positive"
    offs = tok(target, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    good = json.dumps(_teacher_entries([target[s:e] for s, e in offs]))
    bad = json.dumps(_teacher_entries(list(target)))
    rows = [{"source": f"Sentence: great {i}\nLabel:", "target": target, "teacher_logprobs": lp}
            for i, lp in enumerate([good, good, bad, None])]
    args = ICLDistTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                                    report_to="none", save_strategy="no", logging_steps=1, use_cpu=True,
                                    disable_tqdm=True)
    trainer = ICLDistTrainer(model=causal.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tok)
    assert trainer.kd_stats.aligned == 2 and trainer.kd_stats.fallback == 1
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all(h["kd_examples_fallback"] == 1.0 and h["kd_examples_aligned"] == 2.0 for h in logged)
    assert any("kl" in h for h in logged) and all(h["ce"] > 0 for h in logged)

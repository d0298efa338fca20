"""Answer-only logits give the same loss (and gradients) as the full-logits path of a real tiny Qwen2 model."""

from __future__ import annotations

import pytest
import torch

from sentidistill.errors import InputError
from sentidistill.students.collate import CausalCollator
from sentidistill.train.answer_logits import (
    answer_ce,
    answer_kl,
    answer_logits,
    answer_only_loss,
    answer_positions,
    supports_mask_logits_to_keep,
)
from sentidistill.train.losses import topk_kl


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(tiny_causal_dir)


def _batch(tok):
    # Right-padded rows with prompts and answers of different lengths: answers are not a common suffix.
    collator = CausalCollator(tok, max_source_length=64, max_target_length=8)
    rows = [
        {"source": "Review: The food was great and the service was friendly.\nLabel:", "target": " positive"},
        {"source": "Review: Terrible movie.\nLabel:", "target": " negative neutral"},
        {"source": "Sentence: I love this phone, the battery lasts all day. The screen is awful.\nAnswer:",
         "target": " [('screen', 'negative')]"},
    ]
    return collator(rows)


def _need(via, model):
    if via == "forward" and not supports_mask_logits_to_keep(model):
        pytest.skip("this transformers has no boolean logits_to_keep (the 'split' path covers it)")


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("via", ["forward", "split", "full"])
def test_answer_only_loss_equals_full_loss_and_grads(tiny, via):
    model, tok = tiny
    _need(via, model)
    batch = _batch(tok)
    model.zero_grad()
    full = model(**batch).loss
    full.backward()
    g_full = _grads(model)

    model.zero_grad()
    loss, logits = answer_only_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"], via=via)
    loss.backward()
    g_ans = _grads(model)

    n_answers = int((batch["labels"][:, 1:] != -100).sum())
    assert logits.shape == (n_answers, model.config.vocab_size)
    assert torch.allclose(loss, full, atol=1e-6), (loss.item(), full.item())
    assert g_full.keys() == g_ans.keys()
    for name, g in g_full.items():
        assert torch.allclose(g, g_ans[name], atol=1e-6), name


@pytest.mark.parametrize("via", ["forward", "split"])
def test_answer_logits_match_full_logits_rows(tiny, via):
    model, tok = tiny
    _need(via, model)
    batch = _batch(tok)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ans = answer_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"], via=via)
    assert torch.allclose(ans.logits, full[ans.batch_index, ans.position], atol=1e-5)
    assert torch.equal(ans.targets, batch["labels"][ans.batch_index, ans.position + 1])


def test_num_items_in_batch_matches_sum_reduction(tiny):
    model, tok = tiny
    batch = _batch(tok)
    with torch.no_grad():
        ans = answer_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        full = model(**batch, num_items_in_batch=torch.tensor(10)).loss
    assert torch.allclose(answer_ce(ans, torch.tensor(10)), full, atol=1e-6)


def test_answer_kl_equals_full_path_kl(tiny):
    model, tok = tiny
    batch = _batch(tok)
    b, t = batch["labels"].shape
    k = 3
    gen = torch.Generator().manual_seed(1)
    teacher_ids = torch.randint(0, model.config.vocab_size, (b, t, k), generator=gen)
    teacher_lps = torch.log_softmax(torch.randn(b, t, k, generator=gen), -1)
    teacher_lps[batch["labels"] == -100] = float("-inf")  # teacher entries only at answer labels
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # The trainer's full path: logits at t predict the label at t + 1.
        ref, n_ref = topk_kl(full[:, :-1], teacher_ids[:, 1:], teacher_lps[:, 1:])
        ans = answer_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        kl, n = answer_kl(ans, teacher_ids, teacher_lps)
    assert int(n) == int(n_ref) == ans.n
    assert ref > 0
    assert torch.allclose(kl, ref, atol=1e-6)


@pytest.mark.parametrize("via", ["forward", "split"])
def test_batch_without_answers_gives_zero_loss_with_a_graph(tiny, via):
    model, tok = tiny
    _need(via, model)
    ids = torch.tensor([tok("no answer here")["input_ids"]])
    labels = torch.full_like(ids, -100)
    loss, logits = answer_only_loss(model, ids, torch.ones_like(ids), labels, via=via)
    assert logits.shape[0] == 0 and loss.item() == 0.0
    model.zero_grad()
    loss.backward()  # a graph with zero gradients, so a batch without answers cannot crash DDP or the Trainer
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(g is None or not g.any() for g in grads)


def test_peft_wrapped_model_gives_the_same_loss(tiny_causal_dir):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    batch = _batch(AutoTokenizer.from_pretrained(tiny_causal_dir))
    full = lora(**batch).loss
    for via in ("forward", "split") if supports_mask_logits_to_keep(lora) else ("split",):
        loss, _ = answer_only_loss(lora, batch["input_ids"], batch["attention_mask"], batch["labels"], via=via)
        assert torch.allclose(loss, full, atol=1e-6), via


def test_bad_shapes_and_models_are_refused(tiny_seq2seq_dir):
    from transformers import AutoModelForSeq2SeqLM

    with pytest.raises(InputError, match="labels"):
        answer_positions(torch.zeros(3, dtype=torch.long))
    s2s = AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq_dir)
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(InputError, match="causal"):
        answer_only_loss(s2s, ids, ids, ids)


def test_auto_uses_the_forward_where_available_and_falls_back_to_split(tiny, monkeypatch):
    import sentidistill.train.answer_logits as al

    model, tok = tiny
    batch = _batch(tok)
    args = (model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        full = model(**batch).loss
        if supports_mask_logits_to_keep(model):
            # "auto" goes through the model's own forward (DDP/FSDP/PEFT-safe), not the body/head split.
            with monkeypatch.context() as m:
                m.setattr(al, "split_causal_lm", lambda _: (_ for _ in ()).throw(AssertionError("split used")))
                assert torch.allclose(answer_only_loss(*args)[0], full, atol=1e-6)
        # A transformers without boolean logits_to_keep (e.g. 5.17): "auto" splits, "forward" is refused.
        monkeypatch.setattr(al, "_mask_slicing_available", lambda: False)
        assert torch.allclose(answer_only_loss(*args)[0], full, atol=1e-6)
        with pytest.raises(InputError, match="logits_to_keep"):
            answer_only_loss(*args, via="forward")

"""Issue 24, field reports 2 and 4: text the server cannot encode, and the true bytes of log-prob tokens.

* A lone UTF-16 surrogate (``"\\ud83d"``, legal JSON) in any text field of any endpoint is refused with a 400
  JSON error naming the field; requests sent with it are answered (it never reaches the batcher, and a batch
  that fails runs its jobs again one by one).
* Log-probs of a student whose answer has multi-byte characters (``" café ☕ 日本"``: the tiny byte-level BPE
  splits each into single-byte tokens): each token and each alternative carries its true bytes (fragments
  spelled ``bytes:\\xe2...``, never U+FFFD's bytes), and there are exactly as many alternatives as asked for.
"""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import httpx
import openai
import pytest
import torch

from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer
from sentidistill.serve.engine import GenerationEngine, TokenBytes, bytes_to_unicode
from sentidistill.students import load_student
from sentidistill.testing import build_tiny_causal_lm, build_tiny_classifier

ANSWER = " café ☕ 日本"
PROMPT = "say ="
REPLACEMENT_BYTES = list("\ufffd".encode())  # [239, 191, 189]
SST2 = [{"name": "sst2", "labels": ["negative", "positive"]}]


@pytest.fixture(scope="module")
def multibyte_dir(tmp_path_factory) -> Path:
    """A tiny causal LM trained (seconds) to answer ``PROMPT`` (plain, and as a chat user turn) with ``ANSWER``."""
    out = build_tiny_causal_lm(tmp_path_factory.mktemp("mb") / "causal")
    student = load_student(str(out))
    tok, model = student.tokenizer, student.model
    answer = tok(ANSWER, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    prompts = [student.encode_prompt(PROMPT), student.encode_prompt([{"role": "user", "content": PROMPT}])]
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss = 0.0
        for p in prompts:
            ids = torch.tensor([p + answer])
            labels = torch.tensor([[-100] * len(p) + answer])
            loss = loss + model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def mb_server(multibyte_dir: Path):
    app = create_app(str(multibyte_dir), served_model_name="mb", max_batch_size=8, max_texts=4, max_tokens=32)
    with BackgroundServer(app) as srv:
        yield srv


def _bytes_of(token: str) -> list[int]:
    """What a token's ``bytes`` must be: its UTF-8, or the hex bytes of a ``bytes:\\x..`` fragment."""
    if token.startswith("bytes:"):
        return list(bytes.fromhex(token[len("bytes:"):].replace("\\x", "")))
    return list(token.encode("utf-8"))


def test_token_bytes_from_the_byte_level_vocabulary(multibyte_dir: Path) -> None:
    tok = load_student(str(multibyte_dir)).tokenizer
    table = TokenBytes(tok)
    assert table.byte_level
    ids = tok(ANSWER, add_special_tokens=False)["input_ids"]
    raw = [table.get(i) for i in ids]
    assert b"".join(raw) == ANSWER.encode()  # type: ignore[arg-type]
    assert any(len(r) == 1 and r[0] >= 0x80 for r in raw)  # single-byte fragments are really there
    assert len(bytes_to_unicode()) == 256 and len(set(bytes_to_unicode().values())) == 256
    assert table.get(tok.eos_token_id) is None  # a special token has no vocabulary bytes


def test_completion_logprobs_true_bytes_and_twenty_alternatives(mb_server: BackgroundServer) -> None:
    r = httpx.post(mb_server.base_url + "/v1/completions",
                   json={"model": "mb", "prompt": PROMPT, "max_tokens": 24, "logprobs": 20}, timeout=60)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == ANSWER  # the model learned its answer: the tokens below are the answer's
    lp = choice["logprobs"]
    fragments = [t for t in lp["tokens"] if t.startswith("bytes:")]
    assert fragments and not any("\ufffd" in t for t in lp["tokens"])
    assert b"".join(bytes(_bytes_of(t)) for t in lp["tokens"]) == ANSWER.encode()
    assert [len(d) for d in lp["top_logprobs"]] == [20] * len(lp["tokens"])
    for t, d, v in zip(lp["tokens"], lp["top_logprobs"], lp["token_logprobs"], strict=True):
        assert d[t] == pytest.approx(v, abs=1e-5)  # greedy: the chosen token is among (the best of) them
    # Offsets in characters of the text: a fragment starts where its character starts.
    offs = lp["text_offset"]
    assert offs[0] == 0 and offs == sorted(offs) and offs[-1] <= len(ANSWER)
    assert ANSWER[offs[lp["tokens"].index(fragments[0])]] in "é☕日本"


def test_chat_logprobs_true_bytes_for_tokens_and_alternatives(mb_server: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=mb_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    r = client.chat.completions.create(model="mb", messages=[{"role": "user", "content": PROMPT}], max_tokens=24,
                                       logprobs=True, top_logprobs=20)
    content = r.choices[0].logprobs.content
    assert r.choices[0].message.content == ANSWER
    assert b"".join(bytes(t.bytes) for t in content) == ANSWER.encode()
    for t in content:
        assert t.bytes == _bytes_of(t.token) and t.bytes != REPLACEMENT_BYTES
        assert len(t.top_logprobs) == 20 and len({a.token for a in t.top_logprobs}) == 20
        for a in t.top_logprobs:
            assert a.bytes == _bytes_of(a.token)
            assert a.bytes != REPLACEMENT_BYTES or a.token == "\ufffd"


def test_engine_alternatives_are_exactly_k_even_when_texts_repeat(multibyte_dir: Path) -> None:
    """Two tokens with the same text (here forced: every id reads as one of 3 texts) are one entry of the
    completions map; the engine then takes the next most likely distinct text, up to the count asked for."""
    with GenerationEngine(load_student(str(multibyte_dir))) as eng:
        eng._token_text = lambda prev, tid: (f"t{tid % 7}", b"x")  # type: ignore[method-assign]
        row = torch.log_softmax(torch.randn(64), -1)
        alts = eng._alternatives(row, None, 5)
    assert len(alts) == 5 and len({a for a, _, _ in alts}) == 5
    assert [v for _, v, _ in alts] == sorted((v for _, v, _ in alts), reverse=True)


# -- lone surrogates -----------------------------------------------------------------------------------

def _post_raw(url: str, body: str) -> httpx.Response:
    """POST a JSON body written by hand (json= would refuse to encode a lone surrogate)."""
    return httpx.post(url, content=body.encode(), headers={"content-type": "application/json"}, timeout=60)


@pytest.fixture(scope="module")
def clf_server(tmp_path_factory):
    model = build_tiny_classifier(tmp_path_factory.mktemp("clf") / "clf", tasks=SST2)
    app = create_app(str(model), served_model_name="clf", max_batch_size=16, batch_wait_ms=50, max_texts=8)
    with BackgroundServer(app) as srv:
        yield srv


def test_lone_surrogate_in_analyze_is_a_400_naming_the_text(clf_server: BackgroundServer) -> None:
    url = clf_server.base_url + "/v1/analyze"
    innocent = {"task": "sentiment", "texts": ["the food was lovely"]}
    with cf.ThreadPoolExecutor(4) as pool:  # the bad request and innocent ones in the same batch window
        bad = pool.submit(_post_raw, url, '{"task": "sentiment", "texts": ["\\ud83d"]}')
        good = [pool.submit(httpx.post, url, json=innocent, timeout=60) for _ in range(3)]
        r = bad.result()
        assert r.status_code == 400 and r.headers["content-type"] == "application/json", r.text
        err = r.json()["error"]
        assert err["param"] == "texts.0" and err["code"] == "invalid_text" and "surrogate" in err["message"]
        for g in good:
            assert g.result().status_code == 200 and g.result().json()["results"][0]["prediction"]
    # The second text of a request, and a text inside an object, are named too; a full pair is fine.
    r = _post_raw(url, '{"task": "sentiment", "texts": ["fine", "bad \\udc00 tail"]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "texts.1"
    r = _post_raw(url, '{"task": "sentiment", "texts": [{"text": "x\\ud83d"}]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "texts.0.text"
    r = _post_raw(url, '{"task": "sentiment", "texts": ["coffee \\ud83d\\ude00"]}')
    assert r.status_code == 200 and r.json()["results"][0]["text"] == "coffee \U0001f600"


def test_lone_surrogate_in_chat_and_completions_is_a_400(mb_server: BackgroundServer) -> None:
    base = mb_server.base_url
    r = _post_raw(base + "/v1/chat/completions",
                  '{"model": "mb", "messages": [{"role": "system", "content": "be brief"}, '
                  '{"role": "user", "content": [{"type": "text", "text": "hi \\ud83d"}]}]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.1.content.0.text", r.text
    r = _post_raw(base + "/v1/completions", '{"model": "mb", "prompt": ["ok =", "\\udfff ="]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt.1", r.text
    r = _post_raw(base + "/v1/completions", '{"model": "mb", "prompt": "ok", "stop": ["\\ud800"]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop.0", r.text
    r = httpx.post(base + "/v1/completions", json={"model": "mb", "prompt": PROMPT, "max_tokens": 24}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == ANSWER


def test_predict_refuses_a_lone_surrogate_naming_the_text(tmp_path: Path) -> None:
    from sentidistill.errors import InputError
    from sentidistill.serve.predict import predict

    model = build_tiny_classifier(tmp_path / "clf", tasks=SST2)
    with pytest.raises(InputError, match="surrogate") as exc:
        predict(["fine", "\ud83d"], task="sentiment", model=str(model))
    assert exc.value.field == "texts.1"


def test_token_bytes_of_sentencepiece_byte_fallback_tokens() -> None:
    """Llama-2-style vocabularies spell bytes as ``<0xE2>`` tokens (byte fallback): those are the byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁caf": 1, "▁": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    ids = tok("☕", add_special_tokens=False)["input_ids"]
    table = TokenBytes(tok)
    assert not table.byte_level
    got = [table.get(i) for i in ids if i != vocab["▁"]]
    assert b"".join(got) == "☕".encode()  # type: ignore[arg-type]
    assert table.get(vocab["▁caf"]) is None  # an ordinary piece: its decoded text is the truth

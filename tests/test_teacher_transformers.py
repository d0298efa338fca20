"""The transformers backend on a tiny in-process causal LM: batching, greedy determinism, top-k log-probs."""

from __future__ import annotations

import math
from pathlib import Path

from sentidistill.config import TeacherConfig
from sentidistill.teacher import SamplingParams, TeacherRequest, build_teacher


def _reqs(params: SamplingParams) -> list[TeacherRequest]:
    texts = ["The food was great.", "Terrible movie, boring plot and bad acting.", "I love this phone.",
             "The screen is awful.", "Sentence: Label:"]
    return [TeacherRequest(messages=[{"role": "user", "content": t}], params=params) for t in texts]


def test_batched_generation_with_logprobs(tiny_causal_dir: Path) -> None:
    params = SamplingParams(max_tokens=6, logprobs=True, top_logprobs=3)
    cfg = TeacherConfig(kind="transformers", model=str(tiny_causal_dir), concurrency=8, repair_attempts=0,
                        extra={"batch_size": 4, "device": "cpu"})
    with build_teacher(cfg, None, progress=False) as teacher:
        batched = teacher.generate(_reqs(params))
        singles = [teacher.generate([r])[0] for r in _reqs(params)]
        s = teacher.stats
    assert s["sent"] == 10 and s["errors"] == 0, s
    for b, one in zip(batched, singles, strict=True):
        assert b.text == one.text  # left padding does not change greedy answers
        assert b.usage.completion_tokens == len(b.logprobs) > 0
        for t in b.logprobs:
            assert len(t.top) == 3 and t.top[0][1] >= t.top[1][1] >= t.top[2][1]
            assert math.isclose(t.logprob, t.top[0][1], abs_tol=1e-4)  # greedy picks the arg-max
            assert t.token == t.top[0][0]
        assert "".join(t.token for t in b.logprobs) == b.text or b.finish_reason == "stop"

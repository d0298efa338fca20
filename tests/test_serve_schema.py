"""Property-based fuzzing of the server's own OpenAPI schema (schemathesis): no input yields a 500.

Both schema-conforming (positive) and schema-violating (negative) requests are generated for every
operation, a bounded number each, against the ASGI app in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from sentidistill.serve import create_app  # noqa: E402

EXAMPLES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def fuzz_app(tiny_causal_dir: Path):
    # Small generation limits keep the ~150 generated requests well under a minute on 2 cores.
    app = create_app(str(tiny_causal_dir), served_model_name="tiny", max_batch_size=4, batch_wait_ms=0,
                     max_texts=4, max_chars=200, max_tokens=8)
    yield app
    app.state.engine.close()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzed_requests_never_500(fuzz_app, mode: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [r.ok() for r in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/chat/completions", "POST /v1/completions", "POST /v1/analyze"} <= labels
    failures: list[str] = []
    for op in operations:
        if mode == "negative" and op.method.upper() == "GET":
            continue  # parameterless GETs have nothing to violate

        @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.body!r:.300} -> {response.status_code}: "
                                f"{response.text[:300]}")
            elif response.status_code >= 400:
                err = response.json()["error"]
                assert err["message"] and err["type"], response.text

        check()
    assert not failures, "\n".join(failures[:5])

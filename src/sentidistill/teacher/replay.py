"""Answer requests from a recorded JSONL transcript instead of calling an LLM.

Three ways to match a request to a recorded answer (``match="auto"`` picks from the first row):

* ``key``: rows exported by ``ResponseCache.export`` (``key`` + ``response``/``text``): the request's cache key.
* ``field``: a released corpus such as ``mixtral_yelp_500.jsonl`` (``Text`` -> ``mixtral_response``): the
  request's ``metadata[metadata_field]`` (e.g. the review text a KnowDist template was rendered with)
  equals the row's ``input_field``.
* ``prompt``: rows with ``prompt`` or ``messages`` and an answer field: the last user message's text.

A request with no recorded answer raises ``MissingAnswer``; the runner marks it ``missing`` and counts it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from sentidistill.core.records import TeacherRequest, TeacherResponse
from sentidistill.errors import InputError
from sentidistill.teacher.base import MissingAnswer
from sentidistill.teacher.config import TeacherConfig, TeacherOptions
from sentidistill.utils.io import read_jsonl

log = logging.getLogger(__name__)

MatchMode = Literal["auto", "key", "field", "prompt"]
_ANSWER_FIELDS = ("response", "text", "answer", "completion", "output", "mixtral_response")
# Released corpora we know how to read without options: (input field, answer field).
_KNOWN_CORPORA = (("Text", "mixtral_response"),)


def _norm(text: str) -> str:
    return " ".join(text.split())


class ReplayOptions(TeacherOptions):
    """Options of the ``replay`` backend (answers from a recorded JSONL transcript)."""

    replay_path: Path = Field(..., description="JSONL transcript (a cache export, or prompt/answer rows).")
    match: MatchMode = Field("auto", description="How requests find their answer: auto, key, field or prompt.")
    input_field: str | None = Field(None, description="match=field: the column holding the input.")
    output_field: str | None = Field(None, description="match=field: the column holding the answer.")
    metadata_field: str | None = Field(None, description="Request metadata field matched against input_field.")
    model_id: str | None = Field(None, description="Model name for cache keys (default: the transcript's).")


class ReplayBackend:
    Options = ReplayOptions

    def __init__(
        self,
        path: str | Path,
        *,
        match: MatchMode = "auto",
        input_field: str | None = None,
        output_field: str | None = None,
        metadata_field: str | None = None,
        model_id: str | None = None,
    ) -> None:
        self.path = Path(path)
        rows = list(read_jsonl(self.path))
        if not rows:
            raise InputError("the replay transcript is empty", path=self.path, expected="JSON lines with answers")
        first = rows[0]
        if match == "auto":
            if "key" in first and any(f in first for f in ("response", "text")):
                match = "key"
            elif input_field or any(i in first and o in first for i, o in _KNOWN_CORPORA):
                match = "field"
            elif "prompt" in first or "messages" in first:
                match = "prompt"
            else:
                raise InputError(
                    "cannot tell how to match requests to this transcript", path=self.path, line=1,
                    expected="'key'+'response' rows (a cache export), 'prompt'/'messages' + an answer field, "
                    "or input_field/output_field options",
                )
        self.match = match
        self.metadata_fields = (metadata_field,) if metadata_field else ("text", "review", "Text")
        if match == "field" and not (input_field and output_field):
            known = next(((i, o) for i, o in _KNOWN_CORPORA if i in first and o in first), None)
            input_field = input_field or (known[0] if known else None)
            output_field = output_field or (known[1] if known else None)
            if not (input_field and output_field):
                raise InputError("replay by field needs input_field and output_field", path=self.path)
        models = {r.get("model") for r in rows if r.get("model")}
        self.model_id = model_id or (models.pop() if len(models) == 1 else f"replay:{self.path.name}")
        self.answers: dict[str, Any] = {}
        self.duplicates = 0
        for lineno, row in enumerate(rows, start=1):
            k, ans = self._row_entry(row, lineno, input_field, output_field)
            if k in self.answers:
                self.duplicates += 1  # the first recorded answer wins, as a cache would have it
                continue
            self.answers[k] = ans
        if self.duplicates:
            log.info("%s: %d duplicate inputs (first answer kept)", self.path, self.duplicates)
        self.missing = 0

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> ReplayBackend:
        o: ReplayOptions = cfg.options  # type: ignore[assignment]
        return cls(o.replay_path, match=o.match, input_field=o.input_field, output_field=o.output_field,
                   metadata_field=o.metadata_field, model_id=o.model_id)

    def _row_entry(self, row: dict[str, Any], lineno: int, input_field: str | None, output_field: str | None):
        def need(field: str) -> Any:
            if field not in row:
                raise InputError("missing field", path=self.path, line=lineno, field=field)
            return row[field]

        if self.match == "key":
            ans = row.get("response") if isinstance(row.get("response"), dict) else need("text")
            return str(need("key")), ans
        if self.match == "field":
            assert input_field and output_field
            inp, out = need(input_field), need(output_field)
            if not isinstance(inp, str) or not isinstance(out, str):
                raise InputError("expected text", path=self.path, line=lineno, field=f"{input_field}/{output_field}")
            return _norm(inp), out
        if isinstance(row.get("messages"), list):
            users = [m.get("content", "") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            prompt = users[-1] if users else ""
        else:
            prompt = need("prompt")
        field = output_field or next((f for f in _ANSWER_FIELDS if f in row), None)
        if field is None:
            raise InputError("no answer field", path=self.path, line=lineno, expected=" or ".join(_ANSWER_FIELDS))
        return _norm(str(prompt)), row[field]

    def lookup_key(self, request: TeacherRequest) -> str | None:
        if self.match == "key":
            return request.cache_key(self.model_id)
        if self.match == "field":
            for f in self.metadata_fields:
                if isinstance(request.metadata.get(f), str):
                    return _norm(request.metadata[f])
            return None
        users = [m["content"] for m in request.messages if m.get("role") == "user"]
        return _norm(users[-1]) if users else None

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        key = self.lookup_key(request)
        ans = self.answers.get(key) if key is not None else None
        if ans is None:
            self.missing += 1
            how = {"key": "cache key", "field": f"metadata {list(self.metadata_fields)}", "prompt": "prompt text"}
            raise MissingAnswer(f"no recorded answer in {self.path.name} for this request (matched by {how[self.match]})")
        if isinstance(ans, dict):
            resp = TeacherResponse.model_validate(ans)
            return resp.model_copy(update={"cached": False, "status": "unchecked", "parsed": None})
        return TeacherResponse(text=str(ans).strip(), model=self.model_id, finish_reason="replay")

    async def aclose(self) -> None:
        return None

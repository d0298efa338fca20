"""Readers for every public sentiment data format the project meets, and for a user's own files.

Every reader returns a list of plain ``dict`` records whose ``text`` field holds the input text; the
other fields depend on the format (``label``, ``target``, ``aspects``, ``quads``, ``opinions``,
``triplets``, ``id``...). Bad rows raise :class:`~sentidistill.errors.InputError` naming the file, the
line (for JSON lists: the item index) and the field; with ``skip_bad=True`` they are skipped and
counted in ``stats["skipped"]`` instead, so nothing is lost silently.

Every record is read as written or the reader stops with an error naming the file and the line:

- Text is decoded strictly (:func:`read_text_file`): UTF-8, or the encoding a byte-order mark names
  (UTF-8/16/32), or an explicit ``encoding``; a byte that does not decode is an error naming its line and
  column (never replaced, never dropped).
- Records are split on ``\n`` only (``\r\n`` is fine): a tweet holding U+2028 or U+0085 stays one record.
- TSV: one record per line, fields split on tabs, quote characters are text (a tweet may begin with
  ``"``); ``quoting="csv"`` reads CSV-style quoted TSV instead. CSV: RFC 4180 quoting, read strictly (a
  quote that does not close where a field ends is an error, not a merge of the rows after it). In both, a
  record with more or fewer fields than the header is an error.
"""

from __future__ import annotations

import ast
import codecs
import csv
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentidistill.errors import InputError

log = logging.getLogger(__name__)

Record = dict[str, Any]
Stats = dict[str, int]


class _BadRow(Exception):
    """Raised inside a row converter; turned into an InputError (or a skip) by :func:`_convert`."""

    def __init__(self, message: str, field: str | None = None, expected: str | None = None, got: Any = None):
        super().__init__(message)
        self.field, self.expected, self.got = field, expected, got


#: Option name -> (accepted Python types, what it is): every option a reader takes from a task's
#: ``loader.options``. Each reader declares its own with :func:`takes_options`.
OPTION_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "text_field": ((str,), "the column holding the text (a string)"),
    "label_field": ((str,), "the column holding the label (a string)"),
    "encoding": ((str,), "a Python codec name such as utf-8, cp1252"),
    "quoting": ((str,), "'none' or 'csv'"),
    "label_names": ((dict,), "a mapping raw label -> label name"),
    "mapping_path": ((str,), "the path of a TweetEval mapping.txt"),
}


def takes_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the ``loader.options`` a reader takes (names from :data:`OPTION_TYPES`); stored on the
    function as ``options`` and checked when a task file is loaded (:func:`sentidistill.data.loading.check_options`)."""
    unknown = [n for n in names if n not in OPTION_TYPES]
    if unknown:
        raise ValueError(f"undeclared reader options {unknown}; add them to OPTION_TYPES")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.options = tuple(names)  # type: ignore[attr-defined]
        return fn

    return mark


def _skip(stats: Stats | None) -> None:
    if stats is not None:
        stats["skipped"] = stats.get("skipped", 0) + 1


def _convert(
    rows: list[tuple[int, Any]],
    fn: Callable[[Any], Record],
    path: Path,
    *,
    skip_bad: bool,
    stats: Stats | None,
    item_word: str = "line",
) -> list[Record]:
    out: list[Record] = []
    for where, raw in rows:
        try:
            out.append(fn(raw))
        except _BadRow as exc:
            if skip_bad:
                _skip(stats)
                continue
            msg = str(exc) if item_word == "line" else f"item {where}: {exc}"
            raise InputError(
                msg, path=path, line=where if item_word == "line" else None, field=exc.field,
                expected=exc.expected, got=exc.got,
            ) from None
    if stats is not None:
        stats["read"] = stats.get("read", 0) + len(out)
    return out


def _need_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    return path


def _text(obj: dict, field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _BadRow("missing or empty text", field=field, expected="a non-empty string", got=value)
    return value


_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_text_file(path: str | Path, encoding: str | None = None) -> str:
    """The text of ``path``, decoded strictly.

    ``encoding=None``: the encoding a byte-order mark names (UTF-8, UTF-16, UTF-32; the mark is removed),
    else UTF-8. Raises :class:`InputError` naming the file, the line and the column of the first byte that
    does not decode (with a hint: pass ``encoding``, e.g. ``cp1252``), or saying that a file full of NUL
    bytes is UTF-16/32 without a byte-order mark.
    """
    path = Path(path)
    raw = path.read_bytes()
    if encoding is None:
        encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), None)
        if encoding is None:
            if raw[:4096].count(0) > len(raw[:4096]) // 8:
                raise InputError("the file looks like UTF-16 or UTF-32 text without a byte-order mark", path=path,
                                 expected="UTF-8 text, or pass encoding='utf-16-le' (or the file's encoding)")
            encoding = "utf-8"
    try:
        return raw.decode(encoding)
    except LookupError:
        raise InputError(f"unknown encoding '{encoding}'", path=path, field="encoding",
                         expected="a Python codec name such as utf-8, cp1252, latin-1, utf-16") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        raise InputError(
            f"not {encoding} text: byte(s) {bad} at column {col} do not decode ({exc.reason})", path=path,
            line=line, expected=f"{encoding} text, or pass encoding= the file's encoding (e.g. cp1252, latin-1)",
        ) from None


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) split on ``\n`` only, ``\r`` before it removed."""
    return [(i, ln[:-1] if ln.endswith("\r") else ln) for i, ln in enumerate(text.split("\n"), start=1)]


def _read_json_list(path: Path, encoding: str | None = None) -> list[Any]:
    try:
        data = json.loads(read_text_file(path, encoding))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    if not isinstance(data, list):
        raise InputError("expected a JSON list of objects", path=path, expected="[{...}, ...]",
                         got=type(data).__name__)
    return data


def read_json_list(path: str | Path) -> list[Any]:
    """The items of a JSON list file (UTF-8, BOM tolerated); InputError for a missing file, bad UTF-8 or JSON
    (with the line), or a top level that is not a list. The one JSON-list reader (SentiBench, FSA)."""
    return _read_json_list(_need_file(path))


# -- SentiBench JSON lists ---------------------------------------------------------------------------

def _sentibench_item(item: Any) -> Record:
    if not isinstance(item, dict):
        raise _BadRow("not a JSON object", expected="an object with 'sentence'", got=type(item).__name__)
    rec: Record = {"text": _text(item, "sentence")}
    for key in ("ID", "sent_id", "id"):
        if key in item:
            rec["id"] = str(item[key])
            break
    if "label" in item:
        if not isinstance(item["label"], str | int) or isinstance(item["label"], bool):
            raise _BadRow("label must be a string or an integer", field="label", got=item["label"])
        rec["label"] = str(item["label"])
    if "target" in item:
        if not isinstance(item["target"], str):
            raise _BadRow("target must be a string", field="target", got=item["target"])
        rec["target"] = item["target"]
    if "label_score" in item:
        rec["label_score"] = item["label_score"]
    if "aspects" in item:
        rec["aspects"] = _aspects(item["aspects"], "aspects")
    if "quards" in item or "quads" in item:
        key = "quards" if "quards" in item else "quads"
        rec["quads"] = _quads(item[key], key)
    if "opinions" in item:
        rec["opinions"] = _opinions(item["opinions"])
    return rec


def _aspects(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _BadRow("expected a list", field=field, expected="a list of aspect objects", got=value)
    out = []
    for j, a in enumerate(value):
        if not isinstance(a, dict) or "polarity" not in a:
            raise _BadRow(f"aspect {j} lacks 'polarity'", field=f"{field}[{j}]",
                          expected="{target, category, polarity, ...}", got=a)
        target = a.get("target")
        out.append(
            {
                # null and "NULL" both mean an implicit aspect (no target term in the sentence).
                "target": None if target in (None, "NULL", "") else str(target),
                "category": a.get("category"),
                "polarity": str(a["polarity"]),
                "from": a.get("from"),
                "to": a.get("to"),
                "opinion_words": a.get("opinion_words"),
            }
        )
    return out


def _quads(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _BadRow("expected a list", field=field, expected="a list of quadruple objects", got=value)
    out = []
    for j, q in enumerate(value):
        if not isinstance(q, dict) or not all(k in q for k in ("aspect", "category", "sentiment", "opinion")):
            raise _BadRow(f"quadruple {j} is incomplete", field=f"{field}[{j}]",
                          expected="{aspect, category, sentiment, opinion}", got=q)
        out.append({k: str(q[k]) if q[k] is not None else "NULL" for k in ("aspect", "category", "sentiment", "opinion")})
    return out


def _opinions(value: Any) -> list[dict[str, Any]]:
    """OpeNER / structured-sentiment opinions: each role is ``[[texts], ["b:e", ...]]``."""
    if not isinstance(value, list):
        raise _BadRow("expected a list", field="opinions", got=value)
    out = []
    for j, op in enumerate(value):
        if not isinstance(op, dict):
            raise _BadRow(f"opinion {j} is not an object", field=f"opinions[{j}]", got=op)
        rec: dict[str, Any] = {}
        for role in ("Source", "Target", "Polar_expression"):
            pair = op.get(role, [[], []])
            if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, list) for p in pair)
                    or len(pair[0]) != len(pair[1])):
                raise _BadRow("expected [[texts], [char spans 'b:e']]", field=f"opinions[{j}].{role}", got=pair)
            spans = []
            for s in pair[1]:
                try:
                    b, e = (int(x) for x in str(s).split(":"))
                except ValueError:
                    raise _BadRow("bad char span", field=f"opinions[{j}].{role}", expected="'begin:end'",
                                  got=s) from None
                spans.append((b, e))
            rec[role] = {"texts": [str(t) for t in pair[0]], "spans": spans}
        if "Polarity" not in op:
            raise _BadRow("missing polarity", field=f"opinions[{j}].Polarity", got=None)
        rec["Polarity"] = str(op["Polarity"])
        rec["Intensity"] = op.get("Intensity")
        out.append(rec)
    return out


@takes_options()
def read_sentibench_json(path: str | Path, *, skip_bad: bool = False, stats: Stats | None = None) -> list[Record]:
    """A SentiBench / FSA JSON list (UTF-8, BOM tolerated) of ``{sentence, label|aspects|quards|opinions...}``.

    FSA files (atsa/acsa with ``aspects`` and ``opinion_words``) share this reader.
    """
    path = _need_file(path)
    data = _read_json_list(path)
    return _convert(list(enumerate(data)), _sentibench_item, path, skip_bad=skip_bad, stats=stats, item_word="item")


read_fsa_json = read_sentibench_json


# -- TweetEval ---------------------------------------------------------------------------------------

def read_tweeteval_mapping(path: str | Path) -> dict[int, str]:
    path = _need_file(path)
    mapping: dict[int, str] = {}
    for lineno, line in _lines(read_text_file(path)):
        if not line.strip():
            continue
        parts = line.strip().split("\t") if "\t" in line else line.strip().split(maxsplit=1)
        if len(parts) != 2 or not parts[0].strip().lstrip("-").isdigit():
            raise InputError("bad mapping line", path=path, line=lineno, expected="'<int>\\t<label>'", got=line)
        mapping[int(parts[0])] = parts[1].strip()
    return mapping


@takes_options("mapping_path")
def read_tweeteval(
    folder: str | Path,
    split: str,
    *,
    mapping_path: str | Path | None = None,
    skip_bad: bool = False,
    stats: Stats | None = None,
) -> list[Record]:
    """TweetEval: ``{split}_text.txt`` + ``{split}_labels.txt`` (integers) + ``mapping.txt`` (id<TAB>label).

    The mapping is looked up in the folder, then in its parent (TweetEval stance keeps one mapping for
    all five targets).
    """
    folder = Path(folder)
    text_path = _need_file(folder / f"{split}_text.txt")
    label_path = _need_file(folder / f"{split}_labels.txt")
    if mapping_path is None:
        mapping_path = folder / "mapping.txt"
        if not mapping_path.exists() and (folder.parent / "mapping.txt").exists():
            mapping_path = folder.parent / "mapping.txt"
    mapping = read_tweeteval_mapping(mapping_path)
    # Split on "\n" only: tweets may hold other Unicode line separators that str.splitlines would cut.
    texts = read_text_file(text_path).rstrip("\n").split("\n")
    labels = read_text_file(label_path).rstrip("\n").split("\n")
    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels", path=label_path,
                         expected=f"one label per line of {text_path.name}")

    def conv(pair: tuple[str, str]) -> Record:
        text, lab = pair
        text = text.rstrip("\r").strip()
        if not text:
            raise _BadRow("empty text", field="text", expected="a non-empty tweet")
        try:
            idx = int(lab.strip())
        except ValueError:
            raise _BadRow("label is not an integer", field="label", expected=f"one of {sorted(mapping)}",
                          got=lab) from None
        if idx not in mapping:
            raise _BadRow("label id not in mapping.txt", field="label", expected=f"one of {sorted(mapping)}", got=idx)
        return {"text": text, "label": mapping[idx]}

    return _convert(list(enumerate(zip(texts, labels, strict=True), start=1)), conv, label_path,
                    skip_bad=skip_bad, stats=stats)


# -- SST / MR line format ----------------------------------------------------------------------------

@takes_options("label_names")
def read_label_lines(
    path: str | Path,
    *,
    label_names: dict[int | str, str] | None = None,
    skip_bad: bool = False,
    stats: Stats | None = None,
) -> list[Record]:
    """``LABEL TEXT`` per line (SST-2/SST-5 ``stsa.*``, MR ``rt-polarity.all``); Latin-1 bytes are tolerated."""
    path = _need_file(path)
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # rt-polarity was published in Windows-1252/Latin-1; decode it rather than fail the whole file,
        # but say so (every non-ASCII character of the file is read as Latin-1).
        log.warning("%s: not UTF-8 (first bad byte on line %d); read as Latin-1", path,
                    raw.count(b"\n", 0, exc.start) + 1)
        content = raw.decode("latin-1")
    names = {str(k): v for k, v in (label_names or {}).items()}

    def conv(line: str) -> Record:
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise _BadRow("expected a label, a space and the text", field="text", got=line.strip()[:60])
        lab, text = parts
        if names and lab not in names:
            raise _BadRow("unknown label", field="label", expected=f"one of {sorted(names)}", got=lab)
        return {"text": text.strip(), "label": names.get(lab, lab)}

    rows = [(i, line) for i, line in enumerate(content.split("\n"), start=1) if line.strip()]
    return _convert(rows, conv, path, skip_bad=skip_bad, stats=stats)


# -- ASTE-Data-V2 ------------------------------------------------------------------------------------

ASTE_POLARITY = {"POS": "positive", "NEG": "negative", "NEU": "neutral"}


@takes_options()
def read_aste(path: str | Path, *, skip_bad: bool = False, stats: Stats | None = None) -> list[Record]:
    """``sentence####[([aspect ids], [opinion ids], 'POS'), ...]``; ids index the space-split sentence.

    The tuple list is parsed with :func:`ast.literal_eval` (never ``eval``). Each record gets
    ``triplets``: ``[{aspect, opinion, polarity, aspect_ids, opinion_ids}]`` with the words joined back.
    """
    path = _need_file(path)

    def conv(line: str) -> Record:
        if "####" not in line:
            raise _BadRow("missing '####' separator", field="triplets", expected="sentence####[(...)]")
        sentence, _, tail = line.rstrip("\r\n").partition("####")
        if not sentence.strip():
            raise _BadRow("empty sentence", field="text")
        try:
            triples = ast.literal_eval(tail.strip())
        except (ValueError, SyntaxError):
            raise _BadRow("unparseable triplet list", field="triplets",
                          expected="[([ids], [ids], 'POS'|'NEG'|'NEU'), ...]", got=tail.strip()[:80]) from None
        words = sentence.split()
        out = []
        if not isinstance(triples, list):
            raise _BadRow("not a list", field="triplets", got=type(triples).__name__)
        for t in triples:
            if (not isinstance(t, tuple | list) or len(t) != 3 or t[2] not in ASTE_POLARITY
                    or not all(isinstance(i, int) and 0 <= i < len(words) for i in [*t[0], *t[1]])):
                raise _BadRow("bad triplet", field="triplets",
                              expected=f"([ids < {len(words)}], [ids], 'POS'|'NEG'|'NEU')", got=t)
            out.append(
                {
                    "aspect": " ".join(words[i] for i in t[0]),
                    "opinion": " ".join(words[i] for i in t[1]),
                    "polarity": ASTE_POLARITY[t[2]],
                    "aspect_ids": list(t[0]),
                    "opinion_ids": list(t[1]),
                }
            )
        return {"text": sentence.strip(), "triplets": out}

    rows = [(i, line) for i, line in _lines(read_text_file(path)) if line.strip()]
    return _convert(rows, conv, path, skip_bad=skip_bad, stats=stats)


# -- teacher sample, JSONL / CSV / Parquet -----------------------------------------------------------

@takes_options()
def read_teacher_sample(path: str | Path, *, skip_bad: bool = False, stats: Stats | None = None) -> list[Record]:
    """The released teacher sample: JSON lines ``{ID, Text, Overall (1-5 stars), mixtral_response}``.

    Records: ``text``, ``label`` (the star rating as a string "1".."5"), ``analysis`` (the teacher text), ``id``.
    """
    path = _need_file(path)

    def conv(obj: dict) -> Record:
        text = _text(obj, "Text")
        overall = obj.get("Overall")
        try:
            stars = int(float(overall))
        except (TypeError, ValueError):
            raise _BadRow("not a star rating", field="Overall", expected="a number 1-5", got=overall) from None
        if not 1 <= stars <= 5:
            raise _BadRow("star rating out of range", field="Overall", expected="1-5", got=overall)
        rec: Record = {"text": text, "label": str(stars), "id": str(obj.get("ID", ""))}
        if isinstance(obj.get("mixtral_response"), str):
            rec["analysis"] = obj["mixtral_response"].strip()
        return rec

    rows = _jsonl_rows(path, skip_bad=skip_bad, stats=stats)
    return _convert(rows, conv, path, skip_bad=skip_bad, stats=stats)


def _jsonl_rows(path: Path, *, skip_bad: bool, stats: Stats | None,
                encoding: str | None = None) -> list[tuple[int, Any]]:
    """(line number, object) pairs of a JSON-lines file; a line that is not JSON raises or is skipped."""
    out: list[tuple[int, Any]] = []
    for lineno, line in _lines(read_text_file(path, encoding)):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except ValueError as exc:
            if skip_bad:
                _skip(stats)
                continue
            raise InputError(f"not valid JSON ({exc})", path=path, line=lineno,
                             expected="one JSON object per line") from None
    return out


def _delimited_rows(path: Path, delimiter: str, quoting: str, encoding: str | None,
                    text_field: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of a CSV/TSV file with a header line (see the module doc)."""
    text = read_text_file(path, encoding)
    kind = "tab" if delimiter == "\t" else "comma"
    records: list[tuple[int, list[str]]] = []
    if quoting == "none":
        # Only blank lines are skipped; a line of empty fields is a record (and then an error naming it).
        records = [(i, ln.split(delimiter)) for i, ln in _lines(text) if ln.strip() or delimiter in ln]
    elif quoting == "csv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        start = 1
        try:
            for fields in reader:
                if fields:  # csv yields [] for a blank line only
                    records.append((start, fields))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise InputError(
                f"unreadable {kind}-separated record starting on line {start} ({exc}): a quote character opens a "
                f"field that does not close where the field ends", path=path, line=start,
                expected="quoted fields closed before the next delimiter"
                + ("; if quotes are plain text in this file, pass quoting='none'" if kind == "tab" else
                   "; a field holding quotes must be quoted with the quotes doubled (\"she said \"\"hi\"\"\")"),
            ) from None
    else:
        raise InputError("unknown quoting", field="quoting", expected="'none' or 'csv'", got=quoting)
    if not records:
        raise InputError("empty file: no header line", path=path, expected=f"a header naming the columns ({text_field}, ...)")
    header_line, header = records[0]
    header = [h.strip() for h in header]
    if text_field not in header:
        raise InputError("text column not found", path=path, line=header_line, field=text_field,
                         expected=f"one of the columns {header}")
    out = []
    for lineno, fields in records[1:]:
        if len(fields) != len(header):
            hint = ("; a field holding a tab or a line break must be quoted, pass quoting='csv'" if kind == "tab"
                    and quoting == "none" else "; a field holding a comma must be quoted (\"a, b\")")
            raise InputError(f"{len(fields)} {kind}-separated fields, but the header has {len(header)}{hint}",
                             path=path, line=lineno, expected=f"the columns {header}",
                             got=delimiter.join(fields)[:80])
        out.append((lineno, dict(zip(header, fields, strict=True))))
    return out


@takes_options("text_field", "label_field", "encoding", "quoting")
def read_table(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str | None = None,
    keep_fields: bool = True,
    skip_bad: bool = False,
    stats: Stats | None = None,
    encoding: str | None = None,
    quoting: str | None = None,
) -> list[Record]:
    """A user's JSONL, CSV/TSV or Parquet file. ``text_field`` (and ``label_field``) name the columns.

    ``encoding``: the text encoding (default: UTF-8, or what a byte-order mark says). ``quoting``:
    ``"none"`` (the default for .tsv: fields split on tabs, quotes are text) or ``"csv"`` (the default for
    .csv: RFC 4180 quoted fields). See the module doc for what is an error."""
    path = _need_file(path)
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        rows: list[tuple[int, Any]] = _jsonl_rows(path, skip_bad=skip_bad, stats=stats, encoding=encoding)
    elif suffix == ".json":
        rows = list(enumerate(_read_json_list(path, encoding)))
    elif suffix in {".csv", ".tsv"}:
        default = "none" if suffix == ".tsv" else "csv"
        rows = _delimited_rows(path, "\t" if suffix == ".tsv" else ",", quoting or default, encoding, text_field)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise InputError("text column not found", path=path, field=text_field,
                             expected=f"one of the columns {table.column_names}")
        rows = [(i + 1, r) for i, r in enumerate(table.to_pylist())]
    else:
        raise InputError("unsupported file type", path=path, expected=".jsonl, .json, .csv, .tsv or .parquet",
                         got=path.suffix)

    def conv(obj: Any) -> Record:
        if not isinstance(obj, dict):
            raise _BadRow("not an object", got=type(obj).__name__)
        rec: Record = dict(obj) if keep_fields else {}
        rec["text"] = _text(obj, text_field)
        if label_field is not None:
            if obj.get(label_field) in (None, ""):
                raise _BadRow("missing label", field=label_field, expected="a label")
            rec["label"] = str(obj[label_field])
        return rec

    return _convert(rows, conv, path, skip_bad=skip_bad, stats=stats,
                    item_word="item" if suffix == ".json" else "line")


@takes_options("encoding")
def read_text_lines(path: str | Path, *, encoding: str | None = None, skip_bad: bool = False,
                    stats: Stats | None = None) -> list[Record]:
    """A plain text file, one text per line (format ``text``): records ``{"text", "id"}``, no labels.

    Lines are split on ``\n`` only (a text holding U+2028 or U+0085 stays one text); a trailing ``\r`` is
    removed; blank lines are skipped (and counted in ``stats["blank"]``). Decoding as in
    :func:`read_text_file` (strict; ``encoding`` or a byte-order mark). Raises :class:`InputError` for a
    missing file or a file with no non-blank line."""
    path = _need_file(path)
    out: list[Record] = []
    blank = 0
    for lineno, line in _lines(read_text_file(path, encoding)):
        line = line.removesuffix("\r")
        if not line.strip():
            blank += 1
            continue
        out.append({"text": line, "id": f"{path.stem}-{lineno}"})
    if not out:
        raise InputError("no text in the file", path=path, expected="one text per line")
    if stats is not None:
        stats["read"] = stats.get("read", 0) + len(out)
        if blank:
            stats["blank"] = stats.get("blank", 0) + blank
    del skip_bad  # a line of text cannot be malformed
    return out


@takes_options("text_field", "label_field")
def read_hf(
    spec: str,
    split: str = "train",
    *,
    text_field: str = "text",
    label_field: str | None = None,
    skip_bad: bool = False,
    stats: Stats | None = None,
) -> list[Record]:
    """``hf:NAME[:CONFIG]`` through :func:`datasets.load_dataset` (needs the hub or a local HF cache).

    Integer ``ClassLabel`` labels are mapped to their names.
    """
    import datasets

    body = spec[3:] if spec.startswith("hf:") else spec
    name, _, config = body.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # the hub raises many types; the user needs one clear message
        raise InputError(f"cannot load HF dataset '{body}' split '{split}': {type(exc).__name__}: {exc}"[:400],
                         path=spec) from None
    if text_field not in ds.column_names:
        raise InputError("text column not found", path=spec, field=text_field,
                         expected=f"one of the columns {ds.column_names}")
    label_names = None
    if label_field and isinstance(ds.features.get(label_field), datasets.ClassLabel):
        label_names = ds.features[label_field].names

    def conv(obj: dict) -> Record:
        rec: Record = {"text": _text(obj, text_field)}
        if label_field:
            value = obj.get(label_field)
            if value is None:
                raise _BadRow("missing label", field=label_field)
            rec["label"] = label_names[value] if label_names is not None else str(value)
        return rec

    return _convert(list(enumerate(ds)), conv, Path(spec), skip_bad=skip_bad, stats=stats, item_word="item")

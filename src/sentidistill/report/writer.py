"""Write report.md and a self-contained report.html (inline CSS, plots as base64 PNG) from metrics files.

Scores are shown ×100 (mean ± std over seeds when there are several). Each model is one column.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_bytes, atomic_write_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.6em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.sum td{font-weight:600;background:#fafafa}
td.best{background:#e6f4ea}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5;padding:0 .2em}
.meta{color:#666;font-size:.9em}
"""


def load_metrics(item: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A metrics dict, a metrics.json file, or a run/bench folder containing metrics.json files."""
    if isinstance(item, dict):
        return item
    path = Path(item)
    if path.is_dir():
        found = sorted(path.glob("**/metrics.json"))
        if len(found) != 1:
            raise InputError(f"expected one metrics.json under the folder, found {len(found)}", path=path,
                             expected="a metrics.json file (pass each one)")
        path = found[0]
    if not path.is_file():
        raise InputError("metrics file not found", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    if not isinstance(data, dict) or "tasks" not in data:
        raise InputError("not a benchmark metrics file", path=path, field="tasks", expected="the output of `sentidistill bench`")
    return data


def expand_metrics_paths(items: Sequence[str | Path]) -> list[Path]:
    """Folders expand to every metrics.json below them (a run folder holds one per evaluated model)."""
    out: list[Path] = []
    for it in items:
        p = Path(it)
        out.extend(sorted(p.glob("**/metrics.json")) if p.is_dir() else [p])
    return out


def _fmt(v: float | None, sd: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{100 * v:.1f}"
    if sd:
        s += f" ± {100 * sd:.1f}"
    return s


def _model_names(runs: list[dict[str, Any]]) -> list[str]:
    names, seen = [], {}
    for r in runs:
        n = str(r.get("model", {}).get("name") or "model")
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return names


def _table(runs: list[dict[str, Any]], names: list[str]) -> tuple[list[str], list[list[str]], list[int], list[list[float | None]]]:
    """Header, rows of cells, which rows are summary rows, and the raw values (for highlighting)."""
    tasks: list[str] = []
    cats: dict[str, str] = {}
    for r in runs:
        for t, e in r["tasks"].items():
            if t not in tasks:
                tasks.append(t)
                cats[t] = e.get("category", "other")
    header = ["task", "metric", *names]
    rows, raw, summary = [], [], []
    for t in tasks:
        metric = next((r["tasks"][t]["metric"] for r in runs if t in r["tasks"]), "")
        vals = [r["tasks"].get(t, {}).get("score") for r in runs]
        stds = [r["tasks"].get(t, {}).get("score_std") for r in runs]
        rows.append([t, metric, *(_fmt(v, s) for v, s in zip(vals, stds, strict=True))])
        raw.append(vals)
    for c in dict.fromkeys(cats.values()):
        vals = [r.get("categories", {}).get(c) for r in runs]
        summary.append(len(rows))
        rows.append([f"{c} (mean)", "", *(_fmt(v) for v in vals)])
        raw.append(vals)
    vals = [r.get("sentibench_score") for r in runs]
    stds = [r.get("sentibench_score_std") for r in runs]
    summary.append(len(rows))
    rows.append(["score (mean of tasks)", "", *(_fmt(v, s) for v, s in zip(vals, stds, strict=True))])
    raw.append(vals)
    return header, rows, summary, raw


def _plots(runs: list[dict[str, Any]], names: list[str]) -> dict[str, str]:
    """PNG plots as base64 strings: per-task bars, score vs parameters, score vs latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def b64(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    out: dict[str, str] = {}
    tasks = list(dict.fromkeys(t for r in runs for t in r["tasks"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) * max(1, len(runs)) / 2 + 3), 3.8))
    width = 0.8 / max(1, len(runs))
    for i, (r, n) in enumerate(zip(runs, names, strict=True)):
        vals = [100 * (r["tasks"].get(t, {}).get("score") or 0) for t in tasks]
        errs = [100 * (r["tasks"].get(t, {}).get("score_std") or 0) for t in tasks]
        ax.bar([j + i * width for j in range(len(tasks))], vals, width, yerr=errs, label=n, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=40, ha="right")
    ax.set_ylabel("score (×100)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Per-task scores")
    out["tasks"] = b64(fig)

    for key, label, getter, logx in [
        ("params", "parameters", lambda r: r.get("model", {}).get("params"), True),
        ("latency", "seconds per item", lambda r: r.get("s_per_item"), True),
    ]:
        pts = [(getter(r), r.get("sentibench_score"), n) for r, n in zip(runs, names, strict=True)]
        pts = [(x, y, n) for x, y, n in pts if x and y is not None and not math.isnan(y)]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for x, y, n in pts:
            ax.scatter([x], [100 * y], s=40)
            ax.annotate(n, (x, 100 * y), fontsize=8, xytext=(4, 4), textcoords="offset points")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("score (×100)")
        ax.set_title(f"Score vs {label}")
        out[key] = b64(fig)
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    metrics: Sequence[str | Path | dict[str, Any]],
    out_dir: str | Path,
    title: str = "SentiBench report",
    extra_sections: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Compare the runs in ``metrics`` (files, folders or dicts); write report.md and report.html.

    ``extra_sections``: (heading, Markdown-ish text) pairs appended to both files (e.g. a fine-tuning
    section); in HTML the text is escaped and shown preformatted unless it starts with ``<``.
    """
    items: list[str | Path | dict[str, Any]] = []
    for m in metrics:
        items.extend(expand_metrics_paths([m]) if isinstance(m, str | Path) and Path(m).is_dir() else [m])
    runs = [load_metrics(m) for m in items]
    if not runs:
        raise InputError("nothing to report", expected="at least one metrics.json")
    names = _model_names(runs)
    header, rows, summary, raw = _table(runs, names)
    plots = _plots(runs, names)
    out = Path(out_dir)

    info_rows = []
    for r, n in zip(runs, names, strict=True):
        c = r.get("config", {})
        params = r.get("model", {}).get("params")
        info_rows.append([
            n, f"{params / 1e6:.1f}M" if params else "–", str(c.get("shots")), ",".join(map(str, c.get("seeds", []))),
            str(c.get("limit") or "all"), str(c.get("scoring")), _fmt(r.get("unparseable_rate")),
            f"{r.get('items_per_s') or 0:.2f}", str(r.get("created", "")),
        ])
    info_header = ["model", "params", "shots", "seeds", "limit", "scoring", "unparseable %", "items/s", "created"]

    md = [f"# {title}", "",
          "Scores ×100: macro-F1 (classification), micro-F1 over exact tuples (ATSA/ACSA/ASQP/ASTE), "
          "sentiment-graph F1 (OpeNER); mean ± std over seeds. The score is the unweighted mean over the tasks run.",
          "", "## Results", "", _md_table(header, rows), "", "## Runs", "", _md_table(info_header, info_rows), ""]
    for key, caption in [("tasks", "Per-task scores"), ("params", "Score vs parameters"),
                         ("latency", "Score vs latency")]:
        if key in plots:
            # Markdown gets PNG files beside it (the HTML embeds the same images inline).
            atomic_write_bytes(out / "plots" / f"{key}.png", base64.b64decode(plots[key]))
            md += [f"![{caption}](plots/{key}.png)", ""]
    for heading, body in extra_sections:
        md += [f"## {heading}", "", body, ""]
    atomic_write_text(out / "report.md", "\n".join(md))

    def html_table(hdr: list[str], body: list[list[str]], sums: list[int] = (), vals: list[list[float | None]] | None = None) -> str:
        h = "<tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in hdr) + "</tr>"
        trs = []
        for i, row in enumerate(body):
            best = None
            if vals is not None and len(runs) > 1:
                nums = [v for v in vals[i] if isinstance(v, int | float) and not math.isnan(v)]
                best = max(nums) if nums else None
            cells = []
            for j, cell in enumerate(row):
                cls = ""
                if best is not None and j >= 2 and vals[i][j - 2] == best:
                    cls = ' class="best"'
                cells.append(f"<td{cls}>{html.escape(cell)}</td>")
            row_cls = ' class="sum"' if i in sums else ""
            trs.append(f"<tr{row_cls}>" + "".join(cells) + "</tr>")
        return f"<table>{h}{''.join(trs)}</table>"

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p class='meta'>Scores ×100: macro-F1 (classification), micro-F1 over exact tuples, sentiment-graph F1 "
             "(OpeNER); mean ± std over seeds; best per row highlighted. The score is the unweighted mean over the "
             "tasks run.</p>", "<h2>Results</h2>", html_table(header, rows, summary, raw),
             "<h2>Runs</h2>", html_table(info_header, info_rows)]
    for key, caption in [("tasks", "Per-task scores"), ("params", "Score vs parameters"),
                         ("latency", "Score vs latency")]:
        if key in plots:
            parts.append(f"<h2>{caption}</h2><img alt='{caption}' src='data:image/png;base64,{plots[key]}'>")
    for heading, body in extra_sections:
        content = body if body.lstrip().startswith("<") else f"<pre>{html.escape(body)}</pre>"
        parts.append(f"<h2>{html.escape(heading)}</h2>{content}")
    parts.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(parts))
    return {"markdown": out / "report.md", "html": out / "report.html"}

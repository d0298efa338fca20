"""Write report.md and a self-contained report.html (inline CSS, plots as base64 PNG) from metrics files.

Scores are shown ×100 (mean ± std over seeds when there are several) with their 95% bootstrap interval
``[low, high]`` when the bench computed one. Each model is one column. A "paired difference" section
compares every model with a reference model on the same test items (paired bootstrap, see
:mod:`sentidistill.bench.stats`), read from the ``predictions/`` folder beside each metrics.json.
Plots use one colour per model throughout (:func:`model_colours`) and always span the full score range
(0-100), so noise never reads as a trend.
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

from sentidistill.bench import stats as S
from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_bytes, atomic_write_text, read_jsonl

# Fixed colours of the pipeline's models (matplotlib's tab10); any other model takes the next unused one.
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]
FIXED_COLOURS = {"teacher": "#1f77b4", "student_before": "#7f7f7f", "student_knowdist": "#9467bd",
                 "student_after": "#d62728"}
SCORE_AXIS = (0.0, 100.0)  # every score axis spans the whole range

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.6em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.sum td{font-weight:600;background:#fafafa}
td.best{background:#e6f4ea}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5;padding:0 .2em}
.meta{color:#666;font-size:.9em}h3{font-size:1.05em;margin-top:1.2em}
.swatch{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .8em;vertical-align:middle;border-radius:2px}
"""


def _metrics_path(item: str | Path) -> Path:
    path = Path(item)
    if path.is_dir():
        found = sorted(path.glob("**/metrics.json"))
        if len(found) != 1:
            raise InputError(f"expected one metrics.json under the folder, found {len(found)}", path=path,
                             expected="a metrics.json file (pass each one)")
        path = found[0]
    return path


def load_metrics(item: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A metrics dict, a metrics.json file, or a run/bench folder containing metrics.json files."""
    if isinstance(item, dict):
        return item
    path = _metrics_path(item)
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


def _fmt(v: float | None, sd: float | None = None, lo: float | None = None, hi: float | None = None) -> str:
    """×100 with one decimal; `` ± sd`` over seeds and `` [lo, hi]`` (95% interval) when known."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{100 * v:.1f}"
    if sd:
        s += f" ± {100 * sd:.1f}"
    if lo is not None and hi is not None:
        s += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return s


def _fmt_diff(d: S.Interval) -> str:
    return f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


def model_colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per model for every plot: the pipeline's models always get the same colour
    (:data:`FIXED_COLOURS`); other names take unused palette colours in order of appearance."""
    out: dict[str, str] = {}
    used = {FIXED_COLOURS[n] for n in names if n in FIXED_COLOURS}
    free = [c for c in _PALETTE if c not in used]
    k = 0
    for n in names:
        if n in out:
            continue
        if n in FIXED_COLOURS:
            out[n] = FIXED_COLOURS[n]
        else:
            out[n] = free[k % len(free)] if free else _PALETTE[k % len(_PALETTE)]
            k += 1
    return out


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
        entries = [r["tasks"].get(t, {}) for r in runs]
        vals = [e.get("score") for e in entries]
        rows.append([t, metric, *(_fmt(e.get("score"), e.get("score_std"), e.get("ci_low"), e.get("ci_high"))
                                  for e in entries)])
        raw.append(vals)
    for c in dict.fromkeys(cats.values()):
        vals = [r.get("categories", {}).get(c) for r in runs]
        cis = [r.get("categories_ci", {}).get(c) or (None, None) for r in runs]
        summary.append(len(rows))
        rows.append([f"{c} (mean)", "", *(_fmt(v, None, *ci) for v, ci in zip(vals, cis, strict=True))])
        raw.append(vals)
    vals = [r.get("sentibench_score") for r in runs]
    summary.append(len(rows))
    rows.append(["score (mean of tasks)", "", *(_fmt(r.get("sentibench_score"), r.get("sentibench_score_std"),
                                                     r.get("sentibench_score_ci_low"), r.get("sentibench_score_ci_high"))
                                                for r in runs)])
    raw.append(vals)
    return header, rows, summary, raw


def _err(value: float | None, lo: float | None, hi: float | None, sd: float | None) -> tuple[float, float]:
    """Error bar below/above ``value`` (×100): the 95% interval when known, else ± std over seeds."""
    if value is None:
        return 0.0, 0.0
    if lo is not None and hi is not None:
        return max(0.0, 100 * (value - lo)), max(0.0, 100 * (hi - value))
    return 100 * (sd or 0.0), 100 * (sd or 0.0)


def figures(runs: list[dict[str, Any]], names: list[str], colours: dict[str, str] | None = None) -> dict[str, Any]:
    """The report's matplotlib figures: per-task bars, score vs parameters, score vs latency.

    Every model keeps its colour from ``colours`` (default :func:`model_colours`) in every figure; error
    bars are the 95% bootstrap intervals (± std over seeds for runs without them); every score axis spans
    :data:`SCORE_AXIS` (0-100) whatever the scores, so a difference of a few tenths looks as small as it is.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = colours or model_colours(names)
    out: dict[str, Any] = {}
    tasks = list(dict.fromkeys(t for r in runs for t in r["tasks"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) * max(1, len(runs)) / 2 + 3), 3.8))
    width = 0.8 / max(1, len(runs))
    for i, (r, n) in enumerate(zip(runs, names, strict=True)):
        entries = [r["tasks"].get(t, {}) for t in tasks]
        vals = [100 * (e.get("score") or 0) for e in entries]
        errs = [_err(e.get("score"), e.get("ci_low"), e.get("ci_high"), e.get("score_std")) for e in entries]
        ax.bar([j + i * width for j in range(len(tasks))], vals, width, label=n, color=colours[n],
               yerr=[[lo for lo, _ in errs], [hi for _, hi in errs]], capsize=2, ecolor="#333333")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=40, ha="right")
    ax.set_ylabel("score (×100), 95% interval")
    ax.set_ylim(*SCORE_AXIS)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # never over a bar
    ax.set_title("Per-task scores")
    out["tasks"] = fig

    for key, label, getter in [
        ("params", "parameters", lambda r: r.get("model", {}).get("params")),
        ("latency", "seconds per item", lambda r: r.get("s_per_item")),
    ]:
        pts = [(getter(r), r, n) for r, n in zip(runs, names, strict=True)]
        pts = [(x, r, n) for x, r, n in pts
               if x and r.get("sentibench_score") is not None and not math.isnan(r["sentibench_score"])]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for x, r, n in pts:
            y = r["sentibench_score"]
            lo, hi = _err(y, r.get("sentibench_score_ci_low"), r.get("sentibench_score_ci_high"),
                          r.get("sentibench_score_std"))
            ax.errorbar([x], [100 * y], yerr=[[lo], [hi]], fmt="o", color=colours[n], ecolor=colours[n],
                        capsize=3, markersize=6, label=n)
            ax.annotate(n, (x, 100 * y), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_ylim(*SCORE_AXIS)
        ax.set_xlabel(label)
        ax.set_ylabel("score (×100), 95% interval")
        ax.set_title(f"Score vs {label}")
        out[key] = fig
    return out


def _plots(runs: list[dict[str, Any]], names: list[str], colours: dict[str, str]) -> dict[str, str]:
    """The figures as base64 PNG strings."""
    import matplotlib.pyplot as plt

    out = {}
    for key, fig in figures(runs, names, colours).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        out[key] = base64.b64encode(buf.getvalue()).decode("ascii")
    return out


# -- paired differences -------------------------------------------------------------------------------

def load_items(run: dict[str, Any], folder: Path) -> dict[str, list[S.ItemScores]]:
    """Per task, the per-seed ItemScores of a bench run from ``folder/predictions/<task>.seed<s>.jsonl``.

    Raises FileNotFoundError when a predictions file is missing, ValueError when one lacks what the
    bootstrap needs (ids, labels in metrics.json, ``score_parts`` of tuple tasks).
    """
    out: dict[str, list[S.ItemScores]] = {}
    for task, e in run["tasks"].items():
        seeds = list(e.get("seeds") or {})
        if not seeds:
            raise ValueError(f"{folder / 'metrics.json'}: task '{task}' lists no seeds")
        per_seed = []
        for seed in seeds:
            path = folder / "predictions" / f"{task}.seed{seed}.jsonl"
            if not path.is_file():
                raise FileNotFoundError(str(path))
            per_seed.append(S.items_from_predictions(list(read_jsonl(path)), e["metric"], e.get("labels"),
                                                     where=str(path)))
        out[task] = per_seed
    return out


def paired_section(runs: list[dict[str, Any]], folders: list[Path | None], names: list[str], reference: str,
                   n_resamples: int) -> tuple[list[str], list[tuple[str, list[list[str]]]]]:
    """Notes, and per compared model (name, table rows) of the paired differences model − ``reference``.

    Rows: task, n, reference score, model score, difference [95% interval], whether it excludes 0; the
    last row is the mean over the tasks both ran. Raises InputError when two runs were scored on
    different items of a task.
    """
    ref = names.index(reference)
    notes: list[str] = []
    items: dict[int, dict[str, list[S.ItemScores]]] = {}
    for k, (r, folder) in enumerate(zip(runs, folders, strict=True)):
        if folder is None:
            notes.append(f"{names[k]}: given as a dict, no predictions to pair.")
            continue
        try:
            items[k] = load_items(r, folder)
        except FileNotFoundError as exc:
            notes.append(f"{names[k]}: no paired differences, a predictions file is missing ({exc}).")
        except ValueError as exc:
            notes.append(f"{names[k]}: no paired differences ({exc}).")
    tables: list[tuple[str, list[list[str]]]] = []
    if ref not in items:
        return notes, tables
    for k in items:
        if k == ref:
            continue
        try:
            per_task, mean = S.paired_difference(items[ref], items[k], n_resamples=n_resamples,
                                                 where_a=names[ref], where_b=names[k])
        except ValueError as exc:
            raise InputError(f"paired difference {names[k]} − {names[ref]}: {exc}",
                             expected="runs benched on the same items (or `report --bootstrap 0` to skip "
                             "paired differences)") from None
        rows = []
        for task, d in per_task.items():
            rows.append([task, str(d.n), _fmt(runs[ref]["tasks"][task].get("score")),
                         _fmt(runs[k]["tasks"][task].get("score")), _fmt_diff(d), "yes" if d.excludes_zero else "no"])
        if mean is not None:
            a = sum(runs[ref]["tasks"][t]["score"] for t in per_task) / len(per_task)
            b = sum(runs[k]["tasks"][t]["score"] for t in per_task) / len(per_task)
            rows.append([f"mean of {mean.n} task{'s' if mean.n > 1 else ''}", "", _fmt(a), _fmt(b), _fmt_diff(mean),
                         "yes" if mean.excludes_zero else "no"])
        tables.append((names[k], rows))
    return notes, tables


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    metrics: Sequence[str | Path | dict[str, Any]],
    out_dir: str | Path,
    title: str = "SentiBench report",
    extra_sections: Sequence[tuple[str, str]] = (),
    reference: str | None = None,
    bootstrap: int | None = S.DEFAULT_RESAMPLES,
) -> dict[str, Path]:
    """Compare the runs in ``metrics`` (files, folders or dicts); write report.md and report.html.

    ``extra_sections``: (heading, Markdown-ish text) pairs appended to both files (e.g. a fine-tuning
    section); in HTML the text is escaped and shown preformatted unless it starts with ``<``.
    ``reference``: the model every other one is compared with in the paired-difference tables (default:
    ``teacher`` when present, else the first run); ``bootstrap``: resamples for those (None or 0: no
    paired differences). Raises InputError for an unknown reference or runs scored on different items.
    """
    items: list[str | Path | dict[str, Any]] = []
    for m in metrics:
        items.extend(expand_metrics_paths([m]) if isinstance(m, str | Path) and Path(m).is_dir() else [m])
    runs = [load_metrics(m) for m in items]
    if not runs:
        raise InputError("nothing to report", expected="at least one metrics.json")
    folders = [None if isinstance(m, dict) else _metrics_path(m).parent for m in items]
    names = _model_names(runs)
    if reference is not None and reference not in names:
        raise InputError("unknown reference model", field="--reference", expected=" | ".join(names), got=reference)
    ref_name = reference or ("teacher" if "teacher" in names else names[0])
    header, rows, summary, raw = _table(runs, names)
    colours = model_colours(names)
    plots = _plots(runs, names, colours)
    out = Path(out_dir)
    notes: list[str] = []
    paired: list[tuple[str, list[list[str]]]] = []
    if bootstrap and len(runs) > 1:
        notes, paired = paired_section(runs, folders, names, ref_name, bootstrap)
    paired_header = ["task", "n", ref_name, "model", "difference [95% interval]", "excludes 0"]
    small = sorted({e.get("n") for r in runs for e in r["tasks"].values() if (e.get("n") or 0) < 200})
    has_ci = any("ci_low" in e for r in runs for e in r["tasks"].values())
    intro = ("Scores ×100: macro-F1 (classification), micro-F1 over exact tuples (ATSA/ACSA/ASQP/ASTE), "
             "sentiment-graph F1 (OpeNER); mean ± std over seeds"
             + ("; [low, high] is the 95% percentile bootstrap interval over the test items (for the mean: items "
                "resampled within each task)" if has_ci else "")
             + ". The score is the unweighted mean over the tasks run.")
    if small:
        intro += (f" Some tasks were scored on fewer than 200 items (n = {', '.join(map(str, small))}): "
                  "their intervals are wide.")
    paired_intro = (f"Each model minus **{ref_name}** on the same test items: the difference of scores (×100) and "
                    "its 95% paired bootstrap interval (both models scored on the same resampled items, "
                    f"{bootstrap} resamples). An interval that excludes 0 is a difference larger than the "
                    "test-set noise.")

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

    md = [f"# {title}", "", intro, "", "## Results", "", _md_table(header, rows), ""]
    if paired or notes:
        md += [f"## Paired difference vs {ref_name}", "", paired_intro, ""]
        for name, prow in paired:
            md += [f"### {name} − {ref_name}", "", _md_table([*paired_header[:3], name, *paired_header[4:]], prow), ""]
        md += [f"- {n}" for n in notes] + ([""] if notes else [])
    md += ["## Runs", "", _md_table(info_header, info_rows), ""]
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
             f"<p class='meta'>{html.escape(intro)} Best per row highlighted.</p>",
             "<h2>Results</h2>", html_table(header, rows, summary, raw)]
    if paired or notes:
        parts.append(f"<h2>Paired difference vs {html.escape(ref_name)}</h2>"
                     f"<p class='meta'>{html.escape(paired_intro).replace('**', '')}</p>")
        for name, prow in paired:
            parts.append(f"<h3>{html.escape(name)} − {html.escape(ref_name)}</h3>"
                         + html_table([*paired_header[:3], name, *paired_header[4:]], prow,
                                      [len(prow) - 1] if prow else []))
        parts += [f"<p class='meta'>{html.escape(n)}</p>" for n in notes]
    legend = " ".join(f"<span class='swatch' style='background:{c}'></span>{html.escape(n)}"
                      for n, c in colours.items())
    parts += ["<h2>Runs</h2>", html_table(info_header, info_rows), f"<p class='meta'>Colours: {legend}</p>"]
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

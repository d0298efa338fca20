"""The fine-tuning evaluation as a report section: tables, paired statistics, data-efficiency curves.

:func:`finetune_report_section` returns ``(markdown, html)`` for embedding in the run report;
:func:`write_finetune_report` writes them standalone (``finetune_report.md`` / ``.html``, curves as PNG).
"""

from __future__ import annotations

import base64
import html as html_lib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from sentidistill.finetune.stats import mean_std, paired_difference
from sentidistill.utils.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from sentidistill.finetune.results import FinetuneResults

SUBSETS = [("all", "test+hard"), ("hard_test", "hard"), ("implicit", "implicit"), ("multi_polarity", "multi-pol.")]


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def score_table(results: FinetuneResults) -> tuple[list[str], list[list[str]]]:
    """Rows: model x dataset x fraction; columns: F1 (x100, mean ± std over seeds) per subset, P, R, and the
    cells' epochs and mean wall time (read from the cells, so a run that trimmed epochs per fraction says so)."""
    header = (["model", "dataset", "train %", "seeds"] + [f"F1 {label}" for _, label in SUBSETS]
              + ["P", "R", "epochs", "wall s/cell"])
    rows = []
    for m in results.models:
        for d in results.datasets:
            for f in results.train_fractions:
                cells = [c for c in results.cells if c["model"] == m and c["dataset"] == d
                         and abs(c["train_fraction"] - f) < 1e-9]
                if not cells:
                    continue
                row = [m, d, f"{100 * f:g}", str(len(cells))]
                for key, _ in SUBSETS:
                    vals = [100 * c["metrics"][key]["f1"] for c in cells if key in c["metrics"]]
                    row.append(_fmt(*mean_std(vals), len(vals)) if vals else "–")
                for key in ("precision", "recall"):
                    vals = [100 * c["metrics"]["all"][key] for c in cells]
                    row.append(_fmt(*mean_std(vals), len(vals)))
                epochs = sorted({_cell_epochs(c) for c in cells}, key=str)
                walls = [c["wall_seconds"] for c in cells if c.get("wall_seconds") is not None]
                row += ["/".join(f"{e:g}" if isinstance(e, float) else str(e) for e in epochs),
                        f"{sum(walls) / len(walls):.0f}" if walls else "–"]
                rows.append(row)
    return header, rows


def _cell_epochs(cell: dict) -> float | str:
    epochs = (cell.get("config") or {}).get("epochs")
    return float(epochs) if epochs is not None else "?"


def difference_table(results: FinetuneResults, subset: str = "all") -> tuple[list[str], list[list[str]], list[dict]]:
    """Each model against the baseline per dataset and fraction: B − A, bootstrap CI, t-interval."""
    base = results.settings.get("baseline") or results.models[0]
    header = ["comparison", "dataset", "train %", "seeds", "A", "B", "B − A", "95% bootstrap CI",
              "95% t-interval", "p (paired t)", "significant"]
    rows, raw = [], []
    for m in results.models:
        if m == base:
            continue
        for d in results.datasets:
            for f in results.train_fractions:
                a, b = results.scores(base, d, f, subset), results.scores(m, d, f, subset)
                if not set(a) & set(b):
                    continue
                pd = paired_difference(a, b)
                raw.append({"baseline": base, "model": m, "dataset": d, "train_fraction": f, **pd.as_dict()})
                ci = f"[{pd.boot_low:+.2f}, {pd.boot_high:+.2f}]" if pd.boot_low is not None else "n/a (1 seed)"
                ti = f"[{pd.t_low:+.2f}, {pd.t_high:+.2f}]" if pd.t_low is not None else "n/a"
                rows.append([f"{m} vs {base}", d, f"{100 * f:g}", str(pd.n), f"{pd.mean_a:.2f}", f"{pd.mean_b:.2f}",
                             f"{pd.mean_diff:+.2f}", ci, ti, f"{pd.p_value:.3f}" if pd.p_value is not None else "n/a",
                             "significant" if pd.significant else "not significant"])
    return header, rows, raw


def curve_png(results: FinetuneResults, dataset: str) -> bytes:
    """F1 (mean ± std over seeds) against the training fraction, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    for m in results.models:
        xs, ys, es = [], [], []
        for f in sorted(results.train_fractions):
            vals = list(results.scores(m, dataset, f).values())
            if vals:
                mu, sd = mean_std(vals)
                xs.append(100 * f)
                ys.append(mu)
                es.append(sd)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
    ax.set_xlabel("training data used (%)")
    ax.set_ylabel("micro-F1 (test + hard)")
    ax.set_title(dataset)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html_lib.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html_lib.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


_NOTES = (
    "Micro-F1 (x100) over (sentence, term, polarity) pairs on test + hard_test, mean ± std over seeds; "
    "subsets as in paper 2's code: *hard* = hard_test alone, *implicit* = a sentence with an aspect that has "
    "no opinion words, *multi-pol.* = a sentence whose aspects disagree. A predicted pair counts only if it "
    "parses and its term occurs in the sentence (case and spacing ignored). B − A is paired by seed; "
    "*significant* means both the 95% bootstrap interval (10,000 resamples) and the 95% t-interval exclude 0 "
    "(with few seeds the percentile bootstrap alone is too narrow)."
)


HEADING = "Fine-tuning evaluation (FSA)"


def finetune_report_section(results: FinetuneResults, *, curves: bool = True, png_dir: str | Path | None = None,
                            heading: bool = True) -> tuple[str, str]:
    """(markdown, html) of the fine-tuning evaluation. HTML embeds the curves (base64 PNG); Markdown
    links them when ``png_dir`` is given (files ``curve_<dataset>.png`` are written there).
    ``heading=False`` leaves out the section's own ``##`` / ``<h2>`` title (for a writer that adds it)."""
    s = results.settings
    epochs = sorted({_cell_epochs(c) for c in results.cells}, key=str) or [s.get("epochs")]
    cfg = (f"epochs {'/'.join(map(str, epochs))}{' (per cell, see the table)' if len(epochs) > 1 else ''}, "
           f"lr {s.get('learning_rate')}, batch {s.get('batch_size')}, "
           f"weight decay {s.get('weight_decay')}, seeds {', '.join(map(str, results.seeds))}")
    h1, r1 = score_table(results)
    h2, r2, _ = difference_table(results)
    md = ([f"## {HEADING}", ""] if heading else []) + [_NOTES, "", f"Settings: {cfg}.", "", _table(h1, r1), ""]
    ht = ([f"<h2>{HEADING}</h2>"] if heading else []) + [
        f"<p>{html_lib.escape(_NOTES)}</p>", f"<p>Settings: {html_lib.escape(cfg)}.</p>", _html_table(h1, r1)]
    if r2:
        md += ["### Paired differences", "", _table(h2, r2), ""]
        ht += ["<h3>Paired differences</h3>", _html_table(h2, r2)]
    if results.failed:
        md += ["### Failed cells", ""] + [f"- {f['cell']}: {f['error']}" for f in results.failed] + [""]
        ht += ["<h3>Failed cells</h3><ul>"] + [f"<li>{html_lib.escape(f['cell'] + ': ' + f['error'])}</li>"
                                               for f in results.failed] + ["</ul>"]
    if curves and len(results.train_fractions) > 1 and results.cells:
        md += ["### Data efficiency", ""]
        ht += ["<h3>Data efficiency</h3>"]
        for d in results.datasets:
            png = curve_png(results, d)
            if png_dir is not None:
                atomic_write_bytes(Path(png_dir) / f"curve_{d}.png", png)
                md.append(f"![F1 vs training data, {d}](curve_{d}.png)")
            b64 = base64.b64encode(png).decode("ascii")
            ht.append(f'<img alt="F1 vs training data, {html_lib.escape(d)}" src="data:image/png;base64,{b64}">')
        md.append("")
    return "\n".join(md), "\n".join(ht)


def as_extra_section(results: FinetuneResults) -> tuple[str, str]:
    """``(heading, html)`` for ``sentidistill.report.write_report(..., extra_sections=[...])``, whose
    single body is used as HTML when it starts with ``<`` (Markdown viewers render it as inline HTML)."""
    return HEADING, finetune_report_section(results, heading=False)[1]


def write_finetune_report(results: FinetuneResults, out_dir: str | Path) -> tuple[Path, Path]:
    """Standalone ``finetune_report.md`` and self-contained ``finetune_report.html`` in ``out_dir``."""
    out_dir = Path(out_dir)
    md, body = finetune_report_section(results, png_dir=out_dir)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Fine-tuning evaluation</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
            f"</style></head><body>{body}</body></html>")
    atomic_write_text(out_dir / "finetune_report.md", md + "\n")
    atomic_write_text(out_dir / "finetune_report.html", page)
    return out_dir / "finetune_report.md", out_dir / "finetune_report.html"

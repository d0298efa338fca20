"""Reports: Markdown + one self-contained HTML page comparing any number of benchmark runs."""

from sentidistill.report.writer import load_metrics, write_report

__all__ = ["load_metrics", "write_report"]

"""The README stays a short front page whose Python example works, and every relative link in the README and
docs/ resolves (file and heading anchor)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", flags=re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", flags=re.S)
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)", flags=re.S)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links inside code are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.lower()  # backticks go with the other punctuation below
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not m:
            continue
        s = slug(m.group(1))
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file does not exist or whose ``#anchor`` is no heading there."""
    bad = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    return bad


def test_relative_links_resolve():
    bad = [b for page in PAGES for b in broken_links(page)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_link_checker_sees_a_broken_file_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## The quickstart (`run --x`)\n\n## Same\n\n## Same\n")
    page.write_text("# Page\n\n[ok](other.md#the-quickstart-run---x) [ok2](other.md#same-1) [self](#page)\n"
                    "[no file](missing.md) [no anchor](other.md#nope) `[in code](missing2.md)`\n"
                    "```\n[in a fence](missing3.md)\n```\n[web](https://example.com/x.md)\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        bad = broken_links(page)
    finally:
        ROOT = old
    assert bad == ["page.md: missing.md (no such file)", "page.md: other.md#nope (no heading #nope in other.md)"]


def test_readme_is_a_front_page():
    """At most ~200 lines and no line over 300 characters: results and references live in docs/."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move details to docs/"
    long = [f"line {i}: {len(x)} characters" for i, x in enumerate(lines, 1) if len(x) > 300]
    assert not long, "README.md lines over 300 characters:\n" + "\n".join(long)


def test_readme_python_example_runs(tmp_path):
    """The README's Python example, on a tiny classifier student saved where the quickstart saves its student."""
    from sentidistill.testing import build_tiny_classifier

    block = re.search(r"```python\n(.+?)```", README.read_text(encoding="utf-8"), flags=re.S).group(1)
    path = "runs/quickstart/models/classifier/final"
    assert path in block
    labels = ["negative", "positive"]
    model = build_tiny_classifier(tmp_path / "final", tasks=[{"name": "sst2", "labels": labels}])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.replace(path, str(model)), "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    assert len(printed) == 2 and all(line.split(" ", 1)[0] in labels for line in printed), printed
    assert all("'negative':" in line and "'positive':" in line for line in printed), printed

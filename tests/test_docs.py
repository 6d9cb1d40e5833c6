"""The documentation is checked as code: the site builds with `mkdocs build --strict` (a broken link, a missing page or
an unresolved reference fails it), and every Python example of README.md and docs/ runs against the local Hub.

The examples use placeholder repo ids (`"me/my-run"`, `"hf://buckets/me/logs"`): each is replaced by a fresh repo id
of the test user, the same one throughout a page, whose blocks run in order in one namespace (a page may log in one
block and read back in the next), in a temporary working folder (relative logdirs land there). After a page runs,
every repo and bucket it named must hold the scalars it logged, read back with `read_scalars`.

A block that cannot run as it stands (a fragment that needs the reader's own model) is preceded by the line
`<!-- docs-test: skip (why) -->`; keep them rare.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_summary.testing import LocalHub

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP_MARKER = "<!-- docs-test: skip"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_PLACEHOLDER = re.compile(r"""(["'])(hf://buckets/)?me/([\w.-]+)\1""")
_fresh = itertools.count()


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """Each ```python / ```py block of `page`: its first line's number, its code, and whether it is marked to skip."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) not in ("python", "py"):
            continue
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(2), before.startswith(SKIP_MARKER)))
    return blocks


def test_examples_are_found() -> None:
    """The extraction itself: the pages hold examples to run, and the skip marker is kept for the rare fragment."""
    blocks = {page: python_blocks(page) for page in PAGES}
    run = [block for page_blocks in blocks.values() for block in page_blocks if not block[2]]
    skipped = [block for page_blocks in blocks.values() for block in page_blocks if block[2]]
    assert blocks[ROOT / "README.md"], "README.md has no Python example"
    assert len(run) >= 10 and len(skipped) <= 4, (len(run), len(skipped))
    for page in PAGES:  # a marker that precedes no Python block is a typo that would run nothing
        assert page.read_text().count(SKIP_MARKER) == sum(skip for _, _, skip in blocks[page]), page


def _pages_with_examples() -> list[Path]:
    return [page for page in PAGES if any(not skip for _, _, skip in python_blocks(page))]


@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda page: str(page.relative_to(ROOT)))
def test_examples_run(page: Path, hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hf_summary

    monkeypatch.chdir(tmp_path)
    sources: dict[str, str] = {}

    def fresh(match: re.Match[str]) -> str:
        quote, bucket, name = match.groups()
        placeholder = f"{bucket or ''}me/{name}"
        if placeholder not in sources:
            sources[placeholder] = f"{bucket or ''}{hub.user}/{name}-docs-{next(_fresh)}"
        return f"{quote}{sources[placeholder]}{quote}"

    namespace: dict[str, object] = {"__name__": "__docs__"}
    for line, code, skip in python_blocks(page):
        if skip:
            continue
        code = _PLACEHOLDER.sub(fresh, code)
        exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)  # noqa: S102 - the docs' own code
    hf_summary.finish()  # an init() a page left open would push from the next page's working folder

    for placeholder, source in sources.items():
        scalars = hf_summary.read_scalars(source)
        assert len(scalars) > 0, f"{page.name}: nothing logged reached {placeholder!r} ({source})"


def test_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: every page in the nav, every link and anchor, every API reference resolves; and the
    command line's reference is written from its parser (the hook ran: each command's usage is on the page)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("sync", "watch", "status", "show", "share", "export"):
        assert f"usage: hf-summary {command}" in cli_page, command
    assert 'id="hf_summary.HFSummaryWriter"' in (site / "reference" / "api" / "index.html").read_text()


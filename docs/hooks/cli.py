"""MkDocs hook: the command line's reference, written from `hf-summary`'s own argument parser at build time.

A page holding the line `<!-- cli-reference -->` gets, in its place, the `--help` text of the command and of each
subcommand, so that the reference never is a second, hand-written copy of the options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# The checkout being documented, ahead of any installed copy of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    """The `--help` of `hf-summary` and of each of its subcommands, as Markdown sections."""
    from hf_summary.cli import _parser

    parser = _parser()
    sections = [f"## `hf-summary`\n\n```text\n{_help(parser)}```\n"]
    for action in parser._actions:  # argparse lists its subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections.append(f"## `hf-summary {name}`\n\n```text\n{_help(sub)}```\n")
    return "\n".join(sections)


def _help(parser: argparse.ArgumentParser) -> str:
    # A fixed width: the page must not change with the terminal that builds it.
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
    return parser.format_help()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())

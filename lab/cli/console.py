"""The command line's one pair of consoles and its progress line: results on stdout, progress,
notes and errors on stderr, so a command's output can be piped or parsed."""

from __future__ import annotations

import sys

from rich.console import Console

# Reports are read in CI logs too: do not wrap them at 80 columns there.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def progress(message: str, highlight: bool = True) -> None:
    """One step of a long command (the `progress` callback domain functions take)."""
    err.print(f"[dim]·[/] {message}", highlight=highlight)

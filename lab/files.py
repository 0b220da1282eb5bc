"""Files the lab writes: private (0600) and atomic, because they may hold pre-shared keys."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lab.errors import LabError


def write_private(path: Path, text: str) -> None:
    """Mode 0600 from the first byte, and atomic: a reader never sees a half-written file. A
    path that cannot be written is a LabError naming it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LabError(f"{path}: cannot write ({exc.strerror or exc})") from None

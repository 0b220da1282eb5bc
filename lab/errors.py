from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class LabError(Exception):
    """A user-facing error: printed without a traceback."""


MAX_CONFIG_BYTES = 1 << 20  # specs, configs, API JSON and matrix files are a few KB


def read_text(path: str | Path, what: str, label: str | None = None,
              limit: int | None = MAX_CONFIG_BYTES) -> str:
    """A user's file as UTF-8 text (a leading BOM is dropped).

    An unreadable file, one larger than `limit` bytes or one that is not UTF-8 is a LabError
    naming the file (`label`, default the path: e.g. `--customer-config FILE`) and `what` it
    was read as, never a traceback (nor minutes spent parsing a huge file).
    """
    path = Path(path)
    label = label or str(path)
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as exc:
        raise LabError(f"{label}: cannot read {what} ({exc.strerror or exc})") from None
    if limit is not None and len(data) > limit:
        raise LabError(f"{label}: {what} is larger than {limit // 1024} KiB; a lab reads at most "
                       "that much (is it the right file?)")
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        raise LabError(f"{label}: {what} is not UTF-8 text (byte 0x{data[at]:02x} at offset "
                       f"{at}); save it as UTF-8") from None


def read_yaml(path: str | Path, what: str) -> Any:
    """A user's YAML file (`read_text`'s rules, then the YAML parser's errors as a LabError)."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabError(f"{path}: not valid YAML ({exc})") from None

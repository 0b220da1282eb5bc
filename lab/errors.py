from __future__ import annotations

from pathlib import Path


class LabError(Exception):
    """A user-facing error: printed without a traceback."""


def read_text(path: str | Path, what: str, label: str | None = None) -> str:
    """A user's file as UTF-8 text (a leading BOM is dropped).

    An unreadable file or one that is not UTF-8 is a LabError naming the file (`label`, default
    the path: e.g. `--customer-config FILE`) and `what` it was read as, never a traceback.
    """
    path = Path(path)
    label = label or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabError(f"{label}: cannot read {what} ({exc.strerror or exc})") from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        raise LabError(f"{label}: {what} is not UTF-8 text (byte 0x{data[at]:02x} at offset "
                       f"{at}); save it as UTF-8") from None

"""Reads swanctl.conf (strongSwan's settings syntax) into the dictionaries VICI takes.

swanctl itself does this before talking VICI; doing it here keeps the templates the single
source of configuration while the orchestrator loads connections over VICI, per case.
"""

from __future__ import annotations

import base64
import glob
import re
from pathlib import Path
from typing import Any

from lab.errors import LabError, read_text

# Keys swanctl sends as lists (comma separated in the file).
LIST_KEYS = {
    "local_addrs", "remote_addrs", "proposals", "esp_proposals", "ah_proposals",
    "local_ts", "remote_ts", "vips", "pools", "groups", "cert_policy", "certs", "pubkeys",
}
# Names: any printable but space, braces, '=' and '#' (strongswan.conf's filelog sections are paths).
SECTION = re.compile(r"^([^\s{}=#]+)\s*\{$")
SETTING = re.compile(r"^([^\s{}=#]+)\s*=\s*(.*)$")
INCLUDE = re.compile(r"^include\s+(\S+)$")
MAX_INCLUDE_DEPTH = 10


def parse(text: str, source: str = "swanctl.conf", base: Path | None = None,
          _depth: int = 0) -> dict[str, Any]:
    """`include PATTERN` (strongSwan's settings syntax) is resolved relative to `base`, the
    directory of the including file, and merged where it stands (later values win, sections
    merge); without `base` an include is an error, as before includes were supported."""
    root: dict[str, Any] = {}
    stack = [root]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = strip_comment(raw).strip()
        if not line:
            continue
        if m := INCLUDE.match(line):
            _merge(stack[-1], _include(m.group(1), source, number, base, _depth))
        elif line == "}":
            if len(stack) == 1:
                raise LabError(f"{source}:{number}: '}}' without an open section")
            stack.pop()
        elif m := SECTION.match(line):
            stack.append(stack[-1].setdefault(m.group(1), {}))
        elif m := SETTING.match(line):
            key, value = m.group(1), _unquote(m.group(2).strip())
            stack[-1][key] = [v.strip() for v in value.split(",") if v.strip()] \
                if key in LIST_KEYS else value
        else:
            raise LabError(f"{source}:{number}: cannot read {line!r}")
    if len(stack) != 1:
        raise LabError(f"{source}: a section is not closed")
    return root


def _include(pattern: str, source: str, number: int, base: Path | None,
             depth: int) -> dict[str, Any]:
    if base is None:
        raise LabError(f"{source}:{number}: include {pattern}: read the file from a path so that "
                       "includes can be resolved")
    if depth >= MAX_INCLUDE_DEPTH:
        raise LabError(f"{source}:{number}: include nesting deeper than {MAX_INCLUDE_DEPTH}")
    merged: dict[str, Any] = {}
    for included in include_paths(pattern, base):
        text = read_text(included, "the included file", f"{source}:{number}: include {included}")
        _merge(merged, parse(text, str(included), included.parent, depth + 1))
    return merged


def include_paths(pattern: str, base: Path) -> list[Path]:
    """The files an `include` line names, as strongSwan finds them: a glob, relative to the
    including file's directory unless absolute, in sorted order."""
    path = Path(pattern)
    return [Path(m) for m in sorted(glob.glob(str(path if path.is_absolute() else base / path)))]


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Sections merge recursively, settings are replaced (strongSwan's rule for repeats)."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def strip_comment(line: str) -> str:
    """The line without its `#` comment (a `#` inside double quotes is kept; inside quotes a
    backslash escapes the next character, `\\"` included)."""
    quoted = escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _unquote(value: str) -> str:
    """A double-quoted value as strongSwan's settings lexer reads it: `\\n`, `\\t`, `\\r`, `\\b`,
    `\\f` are control characters, a backslash before any other character is that character."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    out, chars = [], iter(value[1:-1])
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(ESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def secret_bytes(value: str) -> bytes:
    """swanctl's encodings: 0s base64, 0x hex, else the literal string."""
    if value.startswith("0s"):
        return base64.b64decode(value[2:])
    if value.startswith("0x"):
        return bytes.fromhex(value[2:])
    return value.encode()


def shared_secrets(config: dict[str, Any]) -> list[dict[str, Any]]:
    """`secrets { ike-* {...} }` as VICI load-shared messages (id = unique secret name)."""
    out = []
    for name, section in config.get("secrets", {}).items():
        if not name.startswith("ike"):
            continue
        owners = [v for k, v in section.items() if k.startswith("id")]
        out.append({"id": name, "type": "IKE", "data": secret_bytes(section["secret"]),
                    "owners": owners})
    return out

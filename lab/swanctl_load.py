"""A user's swanctl.conf read by strongSwan's own parser: what `swanctl --load-all` sends.

The lab does not read users' swanctl.conf files itself: strongSwan's settings parser decides
what a file means (includes and their globs, sections opened and a setting on one line,
quoting, repeated keys). `swanctl --load-all --file PATH` runs against a VICI socket of the
lab's own, in a private directory, that records each `load-conn` and `load-shared` message and
answers it as a daemon would; those messages are exactly what the user's daemon would be given,
so the lab loads the same into the customer gateway's daemon and reads its view from them.

The recording socket answers every load with success: the values are judged by the daemon
they are loaded into (`up`), or, before any lab runs (`advise`), by a scratch daemon (`judge`).
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from vici.exception import CommandException
from vici.protocol import FiniteStream, Message, Packet

from lab import scratch
from lab.errors import LabError
from lab.swanctl import include_paths
from lab.timing import patience

SWANCTL_TIMEOUT = patience(30.0)
# What --load-all also looks for beside the file (certificate and key directories): their
# absence is normal for a PSK configuration and not worth a word.
QUIET = ("opening directory",)
REFUSED = ("invalid config file", "syntax error", "failed to", "not found")
MAX_MESSAGE = 4 * 1024 * 1024
INCLUDE = re.compile(r"^\s*include\s+(\S+)", re.MULTILINE)
MAX_INCLUDE_DEPTH = 10


def read(path: str | Path, option: str) -> dict[str, Any]:
    """The swanctl tree (`connections`, `secrets`, and any `pools`/`authorities`) strongSwan's
    swanctl makes of `path`; a file it refuses raises LabError with its own words."""
    path = Path(path).resolve()
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-swanctl-") as directory:  # mode 0700
        sock = Path(directory) / "vici"
        recorder = _Recorder(sock)
        try:
            done = subprocess.run(
                ["swanctl", "--load-all", "--noprompt", "--file", str(path),
                 "--uri", f"unix://{sock}"],
                capture_output=True, text=True, timeout=SWANCTL_TIMEOUT, check=False)
        except FileNotFoundError:
            raise LabError(f"{option}: strongSwan's swanctl is not installed (make setup "
                           "installs it): the lab reads swanctl.conf files with it") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"{option}: swanctl did not finish reading {path} within "
                           f"{SWANCTL_TIMEOUT:.0f} s") from None
        finally:
            recorder.close()
    said = [line.strip() for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and not line.strip().startswith(QUIET)]
    # swanctl exits 0 on a file it cannot parse: its words say so
    refused = [line for line in said if any(word in line for word in REFUSED)]
    if done.returncode != 0 or refused:
        included = _included(path)
        raise LabError(f"{option}: strongSwan's swanctl refused {path}:\n  "
                       + "\n  ".join(refused or said or [f"exit code {done.returncode}"])
                       + ("\nfiles it read through include: " + ", ".join(included)
                          if included else "")
                       + "\n(the lab reads swanctl.conf exactly as swanctl does: fix what it names)")
    if recorder.error:
        raise LabError(f"{option}: reading {path} through swanctl failed: {recorder.error}")
    return recorder.tree()


def _included(path: Path, depth: int = 0) -> list[str]:
    """The files `include` lines pull in, for an error whose words name no file (swanctl names
    the file and line of a syntax error in the top file only); one not UTF-8 is marked so."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    out = []
    for match in INCLUDE.finditer(raw.decode("utf-8", "replace")):
        for included in include_paths(match.group(1), path.parent):
            try:
                included.read_bytes().decode("utf-8")
                out.append(str(included))
            except UnicodeDecodeError:
                out.append(f"{included} (it is not UTF-8)")
            except OSError:
                out.append(f"{included} (unreadable)")
            if depth < MAX_INCLUDE_DEPTH:
                out += _included(included, depth + 1)
    return out


class _Recorder:
    """A VICI responder for one swanctl run: records the load messages, answers like charon."""

    def __init__(self, path: Path):
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.error = ""
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(2)
        self.server.settimeout(SWANCTL_TIMEOUT)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept (a close alone does not)
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed once swanctl is done, or its time-out
                return
            with conn:
                try:
                    while self._answer(conn):
                        pass
                except (OSError, ValueError, IndexError, struct.error) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"

    def _answer(self, conn: socket.socket) -> bool:
        header = conn.recv(4, socket.MSG_WAITALL)
        if len(header) < 4:
            return False
        (length,) = struct.unpack("!I", header)
        if length > MAX_MESSAGE:
            raise ValueError(f"a {length}-byte message")
        data = conn.recv(length, socket.MSG_WAITALL)
        kind, size = data[0], data[1]
        name = data[2:2 + size].decode()
        if kind == Packet.CMD_REQUEST:
            body = data[2 + size:]
            message = Message.deserialize(FiniteStream(body)) if body else {}
            self.messages.append((name, message))
            answer = {} if name.startswith(("get-", "list-")) else {"success": "yes"}
            reply = bytes([Packet.CMD_RESPONSE]) + Message.serialize(answer)
        elif kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
            reply = bytes([Packet.EVENT_CONFIRM])
        else:
            reply = bytes([Packet.CMD_UNKNOWN])
        conn.sendall(struct.pack("!I", len(reply)) + reply)
        return True

    def tree(self) -> dict[str, Any]:
        """The messages as the swanctl tree the lab loads over VICI (lab.control.Vici.load)."""
        out: dict[str, Any] = {"connections": {}, "secrets": {}}
        for name, message in self.messages:
            if name == "load-conn":
                out["connections"].update(_text(message))
            elif name == "load-shared":
                owners = [_str(o) for o in message.get("owners", [])]
                section: dict[str, Any] = {f"id-{n}": o for n, o in enumerate(owners)}
                # hex keeps every byte of the secret as it was (lab.swanctl.secret_bytes)
                section["secret"] = "0x" + bytes(message.get("data", b"")).hex()
                out["secrets"][_str(message.get("id", f"{_str(message.get('type'))}-"))] = section
            elif name == "load-pool":
                out.setdefault("pools", {}).update(_text(message))
            elif name == "load-authority":
                out.setdefault("authorities", {}).update(_text(message))
            elif name in ("load-key", "load-token", "load-cert"):
                out.setdefault("keys and certificates", {})[str(len(out.get(
                    "keys and certificates", {})))] = {"type": _str(message.get("type", ""))}
        return out


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def _text(value: Any) -> Any:
    if isinstance(value, dict):
        return {_str(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return _str(value)


def judge(tree: dict[str, Any], path: str | Path, option: str) -> str | None:
    """Each connection of `tree` loaded into a scratch daemon (lab.scratch): strongSwan's own
    refusal of a value raises LabError with its words. Returns a note when no scratch daemon
    can run here (the values then go unjudged until a lab runs them)."""
    if (why := scratch.available()) is not None:
        return f"{path}: the values were not judged by a strongSwan daemon: {why}"
    refused = []
    with scratch.scratch_daemon() as vici:
        for name, conn in (tree.get("connections") or {}).items():
            try:
                vici.session.load_conn({name: conn})
            except CommandException as exc:
                refused.append(f"connection {name!r}: {exc}")
    if refused:
        raise LabError(f"{option}: strongSwan's daemon refused what {path} says:\n  "
                       + "\n  ".join(refused))
    return None

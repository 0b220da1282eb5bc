"""Driving one strongSwan daemon over VICI: load, initiate, list SAs, rekey, wait on events.

Every call is bounded in time; VICI's byte strings become str at this edge so the rest of the
lab deals in plain dictionaries.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vici
from vici.exception import CommandException, SessionException
from vici.protocol import Message, Packet

from lab.errors import LabError
from lab.swanctl import shared_secrets
from lab.timing import patience


def decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


class InitiateFailed(LabError):
    """Negotiation failed; `log` holds the daemon's log lines from the attempt."""

    def __init__(self, message: str, log: list[str]):
        super().__init__(message)
        self.log = log


class Vici:
    """A VICI session to one daemon (a unix socket on the host's file system)."""

    def __init__(self, path: Path, timeout: float = patience(30.0)):
        self.path = path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise LabError(f"cannot reach strongSwan over VICI at {path}: {exc.strerror}") from None
        self.session = vici.Session(self._sock)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Vici:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration -------------------------------------------------------------------
    def load(self, config: dict[str, Any]) -> list[str]:
        """Load the secrets and connections of a parsed swanctl.conf; returns connection names."""
        for secret in shared_secrets(config):
            self.session.load_shared(secret)
        names = []
        for name, conn in config.get("connections", {}).items():
            try:
                self.session.load_conn({name: conn})
            except CommandException as exc:
                raise LabError(f"strongSwan refused connection {name!r}: {exc}") from None
            names.append(name)
        return names

    def unload(self, name: str) -> None:
        self.session.unload_conn({"name": name})

    def connections(self) -> list[str]:
        return decode(self.session.get_conns()).get("conns", [])

    def shared_secrets(self) -> list[str]:
        """The unique IDs of the shared secrets loaded over VICI (never their values)."""
        return decode(self.session.get_shared()).get("keys", [])

    # -- SAs -------------------------------------------------------------------------------
    def initiate(self, child: str, ike: str, timeout: float = patience(15.0)) -> list[str]:
        """Negotiate a CHILD_SA (and its IKE_SA if needed); raises InitiateFailed with the log."""
        log: list[str] = []
        request = {"child": child, "ike": ike, "timeout": int(timeout * 1000), "loglevel": 1,
                   "init-limits": "no"}
        try:
            for event in self.session.initiate(request):
                log.append(decode(event).get("msg", ""))
        except CommandException as exc:
            raise InitiateFailed(f"initiating {child!r} failed: {exc}", log) from None
        except (SessionException, OSError) as exc:
            raise InitiateFailed(f"initiating {child!r}: VICI error {exc}", log) from None
        return log

    def terminate_ike(self, ike: str, timeout: float = patience(10.0)) -> None:
        request = {"ike": ike, "timeout": int(timeout * 1000), "loglevel": -1}
        try:
            for _ in self.session.terminate(request):
                pass
        except CommandException as exc:
            if "no matching SAs" not in str(exc):
                raise LabError(f"terminating {ike!r} failed: {exc}") from None

    def rekey_child(self, child: str) -> None:
        try:
            self.session.rekey({"child": child})
        except CommandException as exc:
            raise LabError(f"rekeying {child!r} failed: {exc}") from None

    def sas(self) -> list[dict[str, Any]]:
        """`list-sas` as a list of IKE_SA dicts, each with its name under 'name'."""
        out = []
        for entry in self.session.list_sas():
            for name, sa in decode(entry).items():
                sa["name"] = name
                out.append(sa)
        return out

    @contextmanager
    def events(self, kinds: list[str]) -> Iterator[Callable[[float], tuple[str, dict] | None]]:
        """A second session registered for events; yields `next_event(deadline)`.

        Registration happens here, before the caller acts, so no event falls between the act
        and the wait (vici's own `listen` registers lazily, on the first read).
        """
        listener = Vici(self.path, self.timeout)
        session = listener.session
        for kind in kinds:
            session._register_unregister(kind, True)

        def next_event(deadline: float) -> tuple[str, dict] | None:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    packet = Packet.parse(session.transport.receive(min(left, 1.0)))
                except TimeoutError:
                    continue
                if packet.response_type == Packet.EVENT:
                    return decode(packet.event_type), decode(Message.deserialize(packet.payload))
            return None

        try:
            yield next_event
        finally:
            listener.close()


def wait_socket(path: Path, deadline: float, alive: Callable[[], bool], daemon: str = "strongSwan",
                log: str = "charon.log") -> None:
    """Wait until a daemon's control socket (VICI, or pluto's) accepts connections (it is
    created late in start-up)."""
    while time.monotonic() < deadline:
        if not alive():
            raise LabError(f"{daemon} exited during start-up (see {path.parent / log})")
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.02)
    raise LabError(f"{daemon}'s control socket {path} did not appear in time")

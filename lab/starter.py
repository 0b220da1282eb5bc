"""strongSwan's starter as the judge of a user's ipsec.conf.

The lab translates ipsec.conf to VICI itself (one daemon per gateway, no starter), but what a
gateway's strongSwan makes of the file is starter's call: its parser runs on the same file, and
any error it reports is shown in its own words before the lab's explanation. starter comes from
this machine's strongSwan packages, unpacked into a cache (never installed: installing would
start a daemon on the host), and runs in mount and network namespaces of its own, where a stub
stands in for charon, so it parses and starts nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lab.errors import LabError
from lab.files import write_private
from lab.timing import patience

CACHE = Path("/var/cache/ipsec-lab/starter")
PACKAGES = ("strongswan-starter", "strongswan-charon")
STARTER = "usr/lib/ipsec/starter"
# the stub charon: starter waits for its daemon's PID file; this one writes it, then only sleeps
# until it is stopped (the file is on the namespace's own tmpfs /run)
STUB = "#!/bin/sh\necho $$ > /var/run/charon.pid\nexec sleep 60\n"
STRONGSWAN_CONF = "starter {\n  load_warning = no\n}\n"
RUN_TIMEOUT = patience(20.0)
_DONE = re.compile(r"^(charon \(\d+\) started|unable to start strongSwan|charon is already running)")
_SUMMARY = re.compile(r"^### (\d+) parsing errors? \((\d+) fatal\) ###$")
_NOISE = re.compile(r"^(Starting strongSwan|charon \(\d+\) started|connecting to |failed to connect)")

T = TypeVar("T")


class Unavailable(LabError):
    """starter cannot run here (no package, no root, no namespaces): the lab reads alone."""


@dataclass
class Verdict:
    """What starter said about one file: its words, and whether it counted errors."""

    messages: list[str] = field(default_factory=list)
    errors: int = 0
    fatal: bool = False

    @property
    def refused(self) -> bool:
        return self.fatal or self.errors > 0


def version() -> str | None:
    """This machine's strongSwan package version (starter must be the daemon's own)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libstrongswan"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


def packages() -> Path:
    """starter and charon of this machine's strongSwan, unpacked once into the cache."""
    if os.geteuid() != 0:
        raise Unavailable("strongSwan's starter runs in namespaces of its own: that needs root")
    found = version()
    if found is None:
        raise Unavailable("no Debian strongSwan package here (dpkg-query libstrongswan): starter's "
                       "version cannot be matched")
    root = CACHE / found
    if (root / STARTER).exists():
        _stub(root)
        return root
    debs = CACHE / f"{found}.debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        got = subprocess.run(["apt-get", "download", *(f"{p}={found}" for p in PACKAGES)],
                             cwd=debs, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"apt-get download {' '.join(PACKAGES)} failed: {exc}") from None
    if got.returncode != 0:
        said = (got.stderr.strip().splitlines() or ["no message"])[-1]
        raise Unavailable(f"apt-get download {' '.join(PACKAGES)}={found} failed: {said}")
    partial = CACHE / f"{found}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True,
                           capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"unpacking {' '.join(PACKAGES)} failed: {exc}") from None
    partial.rename(root)
    _stub(root)
    return root


def _stub(root: Path) -> None:
    charon = root / "stub" / "charon"
    if not charon.exists() or charon.read_text() != STUB:
        charon.parent.mkdir(exist_ok=True)
        charon.write_text(STUB)
        charon.chmod(0o755)


def sandbox(root: Path, command: list[str], stub: bool = True) -> list[str]:
    """argv running `command` in mount and network namespaces of its own: a tmpfs on /run
    (starter's hard-coded paths) and the unpacked /usr/lib/ipsec laid over the host's, with the
    stub charon on top unless the real one should run."""
    layers = [f"{root}/stub"] * stub + [f"{root}/usr/lib/ipsec", "/usr/lib/ipsec"]
    setup = ("mount -t tmpfs tmpfs /run && mount -t overlay overlay -o "
             f"lowerdir={':'.join(layers)} /usr/lib/ipsec && exec \"$@\"")
    return ["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c", setup,
            "sh", *command]


def judge(path: Path) -> Verdict:
    """starter's parser over `path` (its includes resolved as on a gateway)."""
    root = packages()
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-starter-") as directory:  # mode 0700
        conf = Path(directory) / "strongswan.conf"
        write_private(conf, STRONGSWAN_CONF)
        try:
            proc = subprocess.Popen(
                sandbox(root, [f"/{STARTER}", "--nofork", "--conf", str(path.resolve())]),
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                     "STRONGSWAN_CONF": str(conf)},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", start_new_session=True)
        except OSError as exc:
            raise Unavailable(f"unshare: {exc}") from None
        lines: list[str] = []
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if _DONE.match(lines[-1]) or time.monotonic() > deadline:
                    break
        finally:
            # nothing in the sandbox needs a clean stop (its /run vanishes with the namespace);
            # SIGKILL to the group, because starter answers SIGTERM by waiting for its charon
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=patience(10.0))
    if not any(line.startswith("Starting strongSwan") for line in lines):  # the sandbox failed
        raise Unavailable("its sandbox did not start: " + " / ".join(lines[-3:] or ["no output"]))
    if not any(_DONE.match(line) for line in lines):
        raise LabError(f"strongSwan's starter gave no verdict on {path}: "
                       + " / ".join(lines[-5:] or ["no output"]))
    verdict = Verdict()
    for line in lines:
        if (summary := _SUMMARY.match(line)):
            verdict.errors = int(summary.group(1))
            verdict.fatal = verdict.fatal or int(summary.group(2)) > 0
        elif line.startswith("unable to start strongSwan"):
            verdict.fatal = True
        elif line.strip() and not _NOISE.match(line):
            verdict.messages.append(line.strip())
    return verdict


def checked(path: Path, translate: Callable[[], T]) -> tuple[T, list[str]]:
    """The lab's translation of `path`, judged by starter first.

    starter refuses (any parsing error): a LabError with starter's words, then the lab's. starter
    accepts but the lab refuses: the lab's error, saying starter took the file. starter cannot
    run here: the translation stands alone, and a note says so."""
    try:
        verdict = judge(path)
    except Unavailable as why:
        return translate(), [f"{path}: read by the lab's translator only; strongSwan's starter "
                             f"could not check it ({why})"]
    ours: LabError | None = None
    try:
        result = translate()
    except LabError as exc:
        ours = exc
    if verdict.refused:
        words = "\n".join(f"  {m}" for m in verdict.messages) or "  (no message)"
        kind = "cannot start with" if verdict.fatal else "ignores parts of"
        where = "".join(f"\nipsec-lab: {spot}" for spot in _locate(path, verdict.messages))
        lab = where + (f"\nipsec-lab: {ours}" if ours else (
            "\nipsec-lab: a gateway would run without what starter ignored; fix the file so "
            "that starter reports no parsing error"))
        raise LabError(f"{path}: strongSwan's starter {kind} it; it says:\n{words}{lab}")
    if ours is not None:
        raise LabError(f"{ours} (strongSwan's starter itself reads the file without complaint)")
    return result, []


_UNKNOWN = re.compile(r"^# unknown keyword '([^']+)'")
_BAD = re.compile(r"^# bad (?:[a-z]+ )?value: ([^=\s]+)=(.*)$")


def _locate(path: Path, messages: list[str]) -> list[str]:
    """File and line for starter's messages that name none (its non-fatal ones name a keyword):
    the first line of `path` that sets it."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    spots = []
    for message in messages:
        if (found := _UNKNOWN.match(message) or _BAD.match(message)) is None:
            continue
        setting = rf"\s*{re.escape(found.group(1))}\s*="
        if found.re is _BAD:  # the value too: the key may be set validly elsewhere
            setting += rf"\s*\"?{re.escape(found.group(2).strip())}"
        for number, line in enumerate(lines, 1):
            if re.match(setting, line):
                spots.append(f"{path}:{number}: {line.strip()} ({message.lstrip('# ')})")
                break
    return spots

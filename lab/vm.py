"""A guest with a stock distribution kernel: the kernel XFRM dataplane where the host has none.

Users' hosts have ESP in their kernels, so the lab runs on the kernel's XFRM dataplane there; a
host without it (this project's own machines) cannot test that path. This harness boots QEMU
with the distribution's kernel (fetched with apt and unpacked into a cache, never installed),
over the host's own root file system exported read-only through 9p under a tmpfs overlay: the
guest sees every package, venv and checkout of the host, can write anywhere, and changes nothing
on the host. It runs one command, streams its output and returns its exit code.

KVM where a short boot probe shows it works, TCG (software emulation) otherwise. The guest has
no network device: labs live in its own namespaces.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2

from lab.dataplane import kernel_has_esp
from lab.errors import LabError
from lab.render import environment

CACHE = Path(os.environ.get("IPSEC_LAB_VM_CACHE", "/var/cache/ipsec-lab/vm"))
META_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
# what the initramfs loads before it can mount the host's root (their dependencies come from
# modules.dep); everything else the guest loads from the mounted root with modprobe
EARLY_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]
GUEST_MODULES = ["xfrm_user", "xfrm_algo", "esp4", "ah4", "xfrm4_tunnel", "xfrm_interface",
                 "ip_vti", "af_key", "tun", "veth", "bridge", "nf_tables", "nft_chain_nat",
                 "nf_nat", "nft_ct", "nf_conntrack", "dummy"]
KVM_PROBE_SECONDS = 20.0
EXIT_NO_RESULT = 125
EXIT_TIMEOUT = 124
# measured: Python runs ~20x slower under TCG than on the host; the lab's bounded waits (not
# its protocol timers) are stretched by this much there unless IPSEC_LAB_SLOWDOWN says otherwise
TCG_SLOWDOWN = 10
# host variables the guest command must not inherit (they describe the host's session)
ENV_SKIP = {"PWD", "OLDPWD", "SHLVL", "_", "TERM_PROGRAM", "DISPLAY", "SSH_AUTH_SOCK",
            "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Kernel:
    package: str
    version: str  # the module directory's name, e.g. 6.1.0-57-amd64
    root: Path  # the unpacked package: boot/vmlinuz-*, lib/modules/<version>
    initrd: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules"


# -- the kernel, fetched and cached -----------------------------------------------------------------
def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed (scripts/setup --vm installs it)") from exc
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def kernel_package() -> str:
    """The package the distribution's kernel meta-package points at now (package lists are
    refreshed once when apt does not know it yet)."""
    for attempt in range(2):
        with contextlib.suppress(LabError):
            found = re.search(r"Depends:\s+(linux-image-\S+)",
                              _run(["apt-cache", "depends", META_PACKAGE]))
            if found:
                return found.group(1)
        if attempt == 0:
            _run(["apt-get", "update", "-qq"])
    raise LabError(f"apt knows no {META_PACKAGE} (is this Debian or Ubuntu with its package "
                   "sources?)")


def fetch_kernel(progress: Progress = lambda _: None) -> Kernel:
    """The cached kernel, downloading and unpacking it the first time (nothing is installed)."""
    package = kernel_package()
    home = CACHE / package
    if (home / "ready").exists():
        return _cached(package, home)
    progress(f"fetching {package} with apt-get download (cached in {home})")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, mode=0o755)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        os.chmod(tmp, 0o755)  # apt's download user must be able to write there
        _run(["apt-get", "download", "-q", package], cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise LabError(f"apt-get download {package} gave {len(debs)} packages")
        _run(["dpkg-deb", "-x", str(debs[0]), str(home / "root")])
    versions = [p.name for p in (home / "root" / "lib" / "modules").iterdir()]
    if len(versions) != 1:
        raise LabError(f"{package}: expected one module directory, found {versions}")
    _run(["depmod", "-b", str(home / "root"), versions[0]])
    kernel = Kernel(package, versions[0], home / "root", home / "initrd.img")
    build_initrd(kernel)
    (home / "ready").write_text(versions[0] + "\n")
    return kernel


def _cached(package: str, home: Path) -> Kernel:
    version = (home / "ready").read_text().strip()
    return Kernel(package, version, home / "root", home / "initrd.img")


def load_order(modules_dir: Path, names: list[str]) -> list[str]:
    """Module paths (relative to modules_dir) in an order insmod accepts, deps first."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    builtin = (modules_dir / "modules.builtin").read_text() if \
        (modules_dir / "modules.builtin").exists() else ""
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in names:
        found = by_name.get(name.replace("-", "_"))
        if found is None:
            if f"/{name}.ko" in builtin:
                continue
            raise LabError(f"kernel module {name} is neither a module nor built in")
        visit(found)
    return order


def build_initrd(kernel: Kernel) -> None:
    """A tiny initramfs: static busybox, the early modules and the first-stage init."""
    if not BUSYBOX.exists():
        raise LabError(f"{BUSYBOX} is missing (scripts/setup --vm installs busybox-static)")
    mod_dir = kernel.modules / kernel.version
    order = load_order(mod_dir, EARLY_MODULES)
    archive = _Newc()
    for d in ("bin", "dev", "proc", "sys", "lower", "upper", "newroot", "modules"):
        archive.directory(d)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for i, mod in enumerate(order):
        archive.file(f"modules/{i:02d}-{Path(mod).name}", (mod_dir / mod).read_bytes(), 0o644)
    archive.file("init", _template("vm/init.sh.j2").render(
        modules=f"/{kernel.modules.relative_to('/')}").encode(), 0o755)
    kernel.initrd.write_bytes(archive.finish())


class _Newc:
    """A cpio archive in the kernel's newc format (no cpio tool needed)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.out.write(name.encode() + b"\0")
        self.out.write(b"\0" * (-self.out.tell() % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"")

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return self.out.getvalue()


def _template(name: str) -> jinja2.Template:
    return environment().get_template(name)


# -- accelerator -------------------------------------------------------------------------------------
def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return "unknown"


def kvm_usable() -> tuple[bool, str]:
    """Whether /dev/kvm can run a guest; a negative probe result is cached per host boot."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    marker = CACHE / f"kvm-{_boot_id()}"
    if marker.exists():
        verdict = marker.read_text().strip()
        return verdict == "yes", f"KVM {'works' if verdict == 'yes' else 'did not boot a guest'} " \
                                 "(probed earlier since this host booted)"
    return True, "KVM: /dev/kvm is there (to be probed)"


def _record_kvm(works: bool) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"kvm-{_boot_id()}").write_text("yes\n" if works else "no\n")


# -- one run -----------------------------------------------------------------------------------------
@dataclass
class Guest:
    cpus: int = 2
    memory_mb: int = 4096
    timeout: float = 3600.0
    accel: str = "auto"  # auto | kvm | tcg
    shares: tuple[Path, ...] = ()  # host directories the guest may write (at the same path)


def run(argv: list[str], guest: Guest, cwd: Path | None = None,
        progress: Progress = lambda _: None, out=None) -> int:
    """Boot, run `argv` in `cwd` (default: the current directory), stream its output, power off.

    Returns the command's exit code (EXIT_NO_RESULT if the guest ended without one,
    EXIT_TIMEOUT on the time-out). The guest is killed on every way out of this function.
    """
    if not argv:
        raise LabError("vm run: give the command to run in the guest after --")
    if shutil.which("qemu-system-x86_64") is None:
        raise LabError("qemu-system-x86_64 is not installed (scripts/setup --vm installs it)")
    for share in guest.shares:
        if not share.is_dir():
            raise LabError(f"--share: {share} is not a directory")
    out = out or sys.stdout
    kernel = fetch_kernel(progress)
    cwd = (cwd or Path.cwd()).resolve()
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-vm-") as tmp:
        job = Path(tmp)
        os.chmod(job, 0o700)
        accel = guest.accel
        if accel == "auto":
            usable, why = kvm_usable()
            accel = "kvm" if usable else "tcg"
            if accel == "tcg":
                progress(f"accelerator: TCG (software emulation; {why})")
        if accel == "kvm":
            result = _boot(job, argv, cwd, kernel, guest, "kvm", progress, out,
                           probe=guest.accel == "auto" and not (CACHE / f"kvm-{_boot_id()}").exists())
            if result is not None:
                return result
            progress("accelerator: TCG (a KVM guest printed nothing: "
                     f"{_qemu_said(job) or f'silent for {KVM_PROBE_SECONDS:.0f} s'})")
            accel = "tcg"
        result = _boot(job, argv, cwd, kernel, guest, accel, progress, out, probe=False)
        return EXIT_NO_RESULT if result is None else result


def _write_job(job: Path, argv: list[str], cwd: Path, kernel: Kernel, guest: Guest,
               accel: str) -> None:
    env = {k: v for k, v in os.environ.items() if ENV_NAME.match(k) and k not in ENV_SKIP}
    env["IPSEC_LAB_VM"] = accel
    if accel == "tcg":  # emulated: the lab's waits for its own processes stretch (lab.timing)
        env.setdefault("IPSEC_LAB_SLOWDOWN", str(TCG_SLOWDOWN))
    script = _template("vm/job.sh.j2").render(
        env=sorted(env.items()), cwd=str(cwd), command=shlex.join(argv), job=str(job),
        modules=GUEST_MODULES, kernel_modules=str(kernel.modules),
        shares=[(f"share{i}", str(p.resolve())) for i, p in enumerate(guest.shares)],
        quote=shlex.quote,
    )
    (job / "job.sh").write_text(script)


def _qemu_argv(job: Path, kernel: Kernel, guest: Guest, accel: str) -> list[str]:
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-nic", "none", "-m", str(guest.memory_mb), "-smp", str(guest.cpus),
            "-kernel", str(kernel.vmlinuz), "-initrd", str(kernel.initrd),
            "-append", f"console=ttyS0 panic=-1 quiet mitigations=off ilab.job={job}",
            "-serial", f"file:{job}/console.log", "-serial", f"file:{job}/output.log",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={job},mount_tag=job,security_model=none,multidevs=remap"]
    for i, share in enumerate(guest.shares):
        argv += ["-virtfs", f"local,path={share.resolve()},mount_tag=share{i},"
                            "security_model=none,multidevs=remap"]
    if accel == "kvm":
        argv += ["-accel", "kvm", "-cpu", "max"]
    else:
        argv += ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return argv


def _boot(job: Path, argv: list[str], cwd: Path, kernel: Kernel, guest: Guest, accel: str,
          progress: Progress, out, probe: bool) -> int | None:
    """One boot. With `probe`, gives up (None) when the console stays silent: KVM that opens
    but never runs a guest (nested virtualisation that is not really there)."""
    for name in ("console.log", "output.log", "qemu.log", "rc"):
        (job / name).unlink(missing_ok=True)
    _write_job(job, argv, cwd, kernel, guest, accel)
    started = time.monotonic()
    with (job / "qemu.log").open("w") as qemu_log:
        proc = subprocess.Popen(_qemu_argv(job, kernel, guest, accel), stdin=subprocess.DEVNULL,
                                stdout=qemu_log, stderr=subprocess.STDOUT, start_new_session=True)
    progress(f"guest booting: {kernel.package} ({kernel.version}), {accel.upper()}, "
             f"{guest.cpus} vCPUs, {guest.memory_mb} MiB, pid {proc.pid}")
    stop = threading.Event()
    streamer = threading.Thread(target=_stream, args=(job / "output.log", out, stop), daemon=True)
    streamer.start()
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)
           if threading.current_thread() is threading.main_thread()}
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if probe and elapsed > KVM_PROBE_SECONDS:
                if _console_size(job):
                    _record_kvm(True)
                    probe = False
                else:
                    _record_kvm(False)
                    return None
            if elapsed > guest.timeout:
                progress(f"guest timed out after {guest.timeout:.0f} s: killed")
                _show_console(job, progress)
                return EXIT_TIMEOUT
            time.sleep(0.2)
        if probe:  # ended within the probe's time: KVM worked only if the guest printed
            works = _console_size(job) > 0
            _record_kvm(works)
            if not works:
                return None
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for s, handler in old.items():
            signal.signal(s, handler)
        stop.set()
        streamer.join(timeout=5)
    qemu_says = _qemu_said(job)
    rc_file = job / "rc"
    if rc_file.exists() and rc_file.read_text().strip().lstrip("-").isdigit():
        code = int(rc_file.read_text().strip())
        progress(f"guest exited: command returned {code} after {time.monotonic() - started:.1f} s")
        return code
    progress("the guest ended without the command's exit code"
             + (f"; qemu said: {qemu_says}" if qemu_says else ""))
    _show_console(job, progress)
    return EXIT_NO_RESULT


def _qemu_said(job: Path) -> str:
    log = job / "qemu.log"
    return log.read_text(errors="replace").strip()[-400:] if log.exists() else ""


def _console_size(job: Path) -> int:
    console = job / "console.log"
    return console.stat().st_size if console.exists() else 0


class Interrupted(LabError):
    """SIGTERM while a guest runs: the guest is killed on the way out."""


def _interrupt(signum: int, _frame) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(f"stopped by signal {signum}; the guest was killed")


def _show_console(job: Path, progress: Progress) -> None:
    console = job / "console.log"
    if console.exists():
        tail = console.read_text(errors="replace").replace("\r", "").strip().splitlines()[-25:]
        progress("guest console (last lines):\n" + "\n".join(f"  {ln}" for ln in tail))


def _stream(path: Path, out, stop: threading.Event) -> None:
    """Copy the guest's second serial port (a file) to `out` as it grows."""
    for chunk in _follow(path, stop):
        out.write(chunk.replace("\r", ""))
        out.flush()


def _follow(path: Path, stop: threading.Event) -> Iterator[str]:
    while not path.exists() and not stop.is_set():
        time.sleep(0.1)
    if not path.exists():
        return
    with path.open("r", errors="replace") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if stop.is_set():
                rest = f.read()
                if rest:
                    yield rest
                return
            time.sleep(0.1)


def needed() -> tuple[bool, str]:
    """Whether kernel-dataplane tests need the guest: the host kernel has no ESP."""
    esp, why = kernel_has_esp()
    return not esp, why

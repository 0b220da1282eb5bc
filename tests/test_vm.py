"""The kernel VM harness: a real QEMU guest with the distribution's kernel, run as users run it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import vm
from lab.errors import LabError

ROOT = Path(__file__).resolve().parent.parent


def _needs_qemu() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the guest's kernel is fetched with apt into a root-owned cache")
    if shutil.which("qemu-system-x86_64") is None or not vm.BUSYBOX.exists():
        pytest.skip("QEMU or busybox-static is not installed (make setup-vm installs them)")


def test_load_order_puts_dependencies_first(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        "kernel/net/9p/9pnet.ko:\nkernel/fs/netfs/netfs.ko:\n"
        "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko\n")
    (tmp_path / "modules.builtin").write_text("kernel/fs/overlayfs/overlay.ko\n")
    order = vm.load_order(tmp_path, ["9pnet_virtio", "9p", "overlay"])
    assert order == ["kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko",
                     "kernel/fs/netfs/netfs.ko", "kernel/fs/9p/9p.ko"]
    with pytest.raises(LabError, match="neither a module nor built in"):
        vm.load_order(tmp_path, ["no_such_module"])


def test_newc_archive_is_what_the_kernel_reads(tmp_path):
    archive = vm._Newc()
    archive.directory("bin")
    archive.file("bin/hello", b"hi\n", 0o755)
    (tmp_path / "a.cpio").write_bytes(archive.finish())
    # busybox's cpio is an independent reader of the same format
    done = subprocess.run([str(vm.BUSYBOX), "cpio", "-t", "-F", str(tmp_path / "a.cpio")],
                          capture_output=True, text=True, check=False) \
        if vm.BUSYBOX.exists() else None
    if done is None:
        pytest.skip("busybox-static is not installed (make setup-vm)")
    assert done.stdout.split() == ["bin", "bin/hello"]


def test_a_command_runs_in_the_guest_with_its_output_and_exit_code():
    _needs_qemu()
    out = io.StringIO()
    code = vm.run(["sh", "-c", "uname -r; test -e /proc/sys/net/ipv4/ip_forward && echo guest-ok; "
                   "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 "
                   "enc 'cbc(aes)' 0x00000000000000000000000000000000 && echo esp-ok; "
                   "pwd; exit 7"], vm.Guest(timeout=600), cwd=ROOT, out=out)
    text = out.getvalue()
    kernel = vm.fetch_kernel()
    assert code == 7, text
    assert kernel.version in text and "guest-ok" in text and "esp-ok" in text
    assert str(ROOT) in text.splitlines()  # the current directory is the same checkout
    assert os.uname().release not in text.splitlines()  # not the host's kernel


def test_a_guest_that_runs_too_long_is_killed_and_leaves_nothing():
    _needs_qemu()
    before = subprocess.run(["pgrep", "-x", "qemu-system-x86"], capture_output=True, text=True).stdout
    code = vm.run(["sleep", "600"], vm.Guest(timeout=5), cwd=ROOT, out=io.StringIO())
    assert code == 124
    after = subprocess.run(["pgrep", "-x", "qemu-system-x86"], capture_output=True, text=True).stdout
    assert sorted(after.split()) == sorted(before.split())


def test_cli_needs_a_command_and_valid_options():
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", "vm", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)

    bad = cli("run", "--accel", "hvf", "--", "true")
    assert bad.returncode == 2 and "--accel: must be auto, kvm or tcg" in bad.stderr
    assert cli("run", "--memory", "10", "--", "true").returncode == 2

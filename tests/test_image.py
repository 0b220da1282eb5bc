"""Real tests of the Docker engine handling and the strongSwan image (no mocks).

The integration tests start dockerd if none runs (and leave it running: other tests
use it) and build the image if it is missing, which takes about a minute once.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from lab.backends.docker import engine, image

REPO = Path(__file__).resolve().parent.parent

# A minimal strongswan.conf that keeps Debian's plugin set and turns on the userland
# dataplane (Debian ships kernel-libipsec with load = no).
LIBIPSEC_CONF = textwrap.dedent(
    """\
    charon {
      load_modular = yes
      plugins {
        include /etc/strongswan.d/charon/*.conf
        kernel-libipsec {
          load = yes
        }
      }
    }
    """
)


# --- quick checks of the recipe, no engine needed --------------------------------------


def test_compose_dockerfile_is_the_rendered_one() -> None:
    """compose/Dockerfile must stay the Dockerfile the build path uses (and hashes)."""
    assert (REPO / "compose" / "Dockerfile").read_text() == image.render_dockerfile()


def test_tag_is_stable_and_tracks_the_recipe() -> None:
    tag = image.image_tag()
    assert tag == f"{image.IMAGE_REPO}:{image.image_version()}"
    assert image.image_tag() == tag
    assert image.image_version((*image.PACKAGES, "strace")) != image.image_version()


def test_host_sources_deb822_and_one_line(tmp_path: Path) -> None:
    """Debian entries are kept and mapped to bookworm; third-party and disabled ones go."""
    apt = tmp_path / "etc/apt"
    (apt / "sources.list.d").mkdir(parents=True)
    keyring = tmp_path / "usr/share/keyrings/debian-archive-keyring.gpg"
    keyring.parent.mkdir(parents=True)
    keyring.write_bytes(b"")
    (apt / "sources.list").write_text(
        "# comment\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.invalid/debian trixie main contrib\n"
        "deb-src http://mirror.invalid/debian trixie main\n"
        "deb http://thirdparty.invalid/apt cloud-sdk-bookworm main\n"
    )
    (apt / "sources.list.d/debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://mirror.invalid/debian\n"
        "Suites: trixie trixie-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://security.invalid/debian-security\n"
        "Suites: trixie-security\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/missing.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://disabled.invalid/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "Enabled: no\n"
    )
    (apt / "sources.list.d/node.sources").write_text(
        "Types: deb\nURIs: https://node.invalid/node_20.x\nSuites: nodistro\nComponents: main\n"
    )
    (apt / "sources.list.d/off.list.disabled").write_text("deb http://off.invalid/d bookworm main\n")

    found = image.host_debian_sources(tmp_path)
    got = [(s.uris, s.suites, s.components, s.signed_by) for s in found]
    assert got == [
        (
            ["http://mirror.invalid/debian"],
            ["bookworm"],
            ["main", "contrib"],
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
        (
            ["http://mirror.invalid/debian"],
            ["bookworm-updates"],
            ["main"],
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
        (["http://security.invalid/debian-security"], ["bookworm-security"], ["main"], None),
    ]
    text = image.render_sources(found)
    assert "Suites: bookworm-security" in text
    assert "invalid/node" not in text and "thirdparty" not in text


# --- integration: a real engine and the real image ---------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    messages: list[str] = []
    c = engine.ensure_engine(messages.append)
    yield c
    c.close()


@pytest.fixture(scope="module")
def tag(client: docker.DockerClient) -> str:
    return image.build_image(client, "auto", progress=lambda _m: None)


@pytest.fixture
def container(client: docker.DockerClient, tag: str) -> Iterator[Container]:
    """A gateway-like container: the capabilities the lab gives its gateways, no more."""
    ctr = client.containers.run(
        tag,
        detach=True,
        cap_add=["NET_ADMIN"],
        devices=["/dev/net/tun:/dev/net/tun:rwm"],
        network_mode="none",
        labels={"ipsec-lab.test": "test_image"},
    )
    try:
        yield ctr
    finally:
        ctr.remove(force=True)


def _sh(ctr: Container, script: str) -> tuple[int, str]:
    code, out = ctr.exec_run(["sh", "-c", script])
    return code, out.decode(errors="replace")


@pytest.mark.integration
def test_engine_answers_and_leaves_the_firewall_alone(client: docker.DockerClient) -> None:
    assert client.ping()
    assert engine.engine_client() is not None
    pid = engine.recorded_pid()
    if pid is not None:  # a dockerd we started must run with the hands-off flags
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--iptables=false" in argv and b"--ip-forward=false" in argv
        ruleset = subprocess.run(
            ["nft", "list", "ruleset"], capture_output=True, text=True, check=False
        ).stdout
        assert "DOCKER" not in ruleset


@pytest.mark.integration
def test_second_build_reuses_the_image(client: docker.DockerClient, tag: str) -> None:
    assert tag == image.image_tag()
    first = client.images.get(tag)
    messages: list[str] = []
    again = image.build_image(client, "auto", progress=messages.append)
    second = client.images.get(again)
    assert again == tag
    assert second.id == first.id
    assert second.attrs["Created"] == first.attrs["Created"]
    assert any("up to date" in m for m in messages), messages  # its speed: bench/bench_image.py


@pytest.mark.integration
def test_image_labels_and_default_command(client: docker.DockerClient, tag: str) -> None:
    img = client.images.get(tag)
    assert img.labels[image.LABEL] == "1"
    assert img.labels[image.VERSION_LABEL] == image.image_version()
    assert img.attrs["Config"]["Cmd"] == list(image.DEFAULT_CMD)


@pytest.mark.integration
def test_image_has_the_lab_tools(container: Container) -> None:
    container.reload()
    assert container.status == "running"  # the default command keeps it up
    checks = {
        "charon-systemd": "test -x /usr/sbin/charon-systemd",
        "swanctl": "command -v swanctl",
        "kernel-libipsec": "test -f /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so",
        "scapy": 'python3 -c "import scapy.all"',
        "nft": "nft --version",
        "tcpdump": "tcpdump --version",
        "ip": "ip -V",
        "ping": "command -v ping",
        "ps": "ps -e",
    }
    failed = {name: out for name, cmd in checks.items() if (out := _sh(container, cmd))[0] != 0}
    assert not failed, failed


@pytest.mark.integration
def test_charon_runs_with_kernel_libipsec(container: Container) -> None:
    """charon-systemd starts without systemd and kernel-libipsec opens its TUN device."""
    code, out = container.exec_run(
        ["sh", "-c", 'printf "%s" "$CONF" > /etc/ipsec-lab-test.conf'],
        environment={"CONF": LIBIPSEC_CONF},
    )
    assert code == 0, out
    container.exec_run(
        ["/usr/sbin/charon-systemd"],
        environment={"STRONGSWAN_CONF": "/etc/ipsec-lab-test.conf"},
        detach=True,
    )
    deadline = time.monotonic() + 15
    code, stats = 1, ""
    while time.monotonic() < deadline:
        code, stats = _sh(container, "swanctl --stats")
        if code == 0:
            break
        time.sleep(0.2)
    assert code == 0, stats
    assert "kernel-libipsec" in stats.split("loaded plugins:")[1]
    code, out = _sh(container, "ip -o link show ipsec0")
    assert code == 0 and "ipsec0" in out, out


@pytest.mark.integration
@pytest.mark.skipif(os.environ.get("IPSEC_LAB_TEST_REBUILD") != "1", reason="slow: ~1 min")
def test_forced_rebuild_replaces_the_image(client: docker.DockerClient, tag: str) -> None:
    before = client.images.get(tag)
    assert image.build_image(client, "auto", force=True) == tag
    after = client.images.get(tag)
    assert after.id != before.id

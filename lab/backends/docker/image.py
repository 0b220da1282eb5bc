"""Build the lab's strongSwan image, once per recipe.

Two ways to the same image:

* ``dockerfile``: a plain Dockerfile ``FROM debian:bookworm-slim`` (also kept as
  ``compose/Dockerfile``), for machines that reach a container registry;
* ``mmdebstrap``: for air-gapped machines that only reach a Debian mirror. The
  root filesystem is built by ``mmdebstrap`` from the mirror in the *host's* apt
  configuration (read at run time, so no mirror is ever written into the repo) and
  loaded with ``docker import``.

The tag is ``ipsec-lab/strongswan:<version>``, where version hashes the package list
and the build recipe: an unchanged recipe reuses the image, a changed one builds anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
import docker.errors
from docker.models.images import Image

from lab.backends.docker.engine import apt_install
from lab.errors import LabError

Method = Literal["auto", "dockerfile", "mmdebstrap"]
Progress = Callable[[str], None]

IMAGE_REPO = "ipsec-lab/strongswan"
LABEL = "ipsec-lab.image"
VERSION_LABEL = "ipsec-lab.version"
METHOD_LABEL = "ipsec-lab.build-method"
SUITE = "bookworm"
BASE_IMAGE = "debian:bookworm-slim"

#: What a gateway container needs: strongSwan (charon without systemd, swanctl, the
#: plugins incl. kernel-libipsec), the lab's tools for links, firewall impairment and
#: capture, and python3-scapy for traffic probes.
PACKAGES: tuple[str, ...] = (
    "charon-systemd",
    "strongswan-swanctl",
    "libcharon-extra-plugins",
    "libstrongswan-extra-plugins",
    "libstrongswan-standard-plugins",
    "iproute2",
    "nftables",
    "tcpdump",
    "python3",
    "python3-scapy",
    "procps",
    "iputils-ping",
)

#: A container of the image must keep running with no command of its own: the lab
#: starts charon and friends inside it with ``exec``.
DEFAULT_CMD = ("sleep", "infinity")
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Trim docs/man/locales like debian:*-slim does (keep licences), so both paths are alike.
DPKG_OPTS: tuple[str, ...] = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)

#: Bump when the recipe changes in a way the texts below do not show.
RECIPE_REVISION = "1"

#: Host apt options passed on to mmdebstrap (which ignores the host's apt.conf.d): a
#: proxy, or a mirror snapshot with expired Release files, must work there too.
_FORWARDED_APT_OPTS = (
    "Acquire::http::Proxy",
    "Acquire::https::Proxy",
    "Acquire::Check-Valid-Until",
    "Acquire::Check-Date",
)

# Debian suite names a host's apt sources may use; third-party repositories use other
# suite names (e.g. "nodistro", "cloud-sdk-bookworm") and are left out of the image.
_DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}  # fmt: skip
_POCKET_RE = re.compile(r"^(?P<base>[a-z]+)(?:[-/](?P<pocket>updates|security))?$")

PULL_TIMEOUT = 20.0  # a pull with no registry fails in well under this


def render_dockerfile(packages: Sequence[str] = PACKAGES) -> str:
    """The Dockerfile text; ``compose/Dockerfile`` holds the same text."""
    package_lines = " \\\n        ".join(packages)
    cmd = json.dumps(list(DEFAULT_CMD))
    return (
        "# Generated from lab/image.py (render_dockerfile); keep the two identical.\n"
        "# The lab's strongSwan gateway image; `ipsec-lab` builds and tags it itself.\n"
        "# Build with host networking (docker build --network host) when dockerd runs\n"
        "# with --iptables=false, as the lab starts it: its bridge has no NAT outwards.\n"
        f"FROM {BASE_IMAGE}\n"
        "ARG DEBIAN_FRONTEND=noninteractive\n"
        "RUN apt-get update \\\n"
        "    && apt-get install -y --no-install-recommends \\\n"
        f"        {package_lines} \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
        f'LABEL {LABEL}="1"\n'
        f"CMD {cmd}\n"
    )


def import_changes() -> list[str]:
    """Dockerfile instructions applied by ``docker import`` (an imported tarball has
    no CMD or ENV, so a container of it would exit at once)."""
    return [
        f"ENV PATH={PATH_ENV}",
        f"CMD {json.dumps(list(DEFAULT_CMD))}",
        f'LABEL {LABEL}="1"',
    ]


def image_version(packages: Sequence[str] | None = None) -> str:
    """Short hash of the package list and both recipes: the tag's version part.

    ``packages`` defaults to PACKAGES (other lists only show how the hash reacts).
    """
    packages = PACKAGES if packages is None else tuple(packages)
    recipe = {
        "revision": RECIPE_REVISION,
        "suite": SUITE,
        "packages": list(packages),
        "dockerfile": render_dockerfile(packages),
        "import_changes": import_changes(),
        "dpkg_opts": list(DPKG_OPTS),
        "variant": "apt",
    }
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def image_tag() -> str:
    """``ipsec-lab/strongswan:<version>`` for the current recipe."""
    return f"{IMAGE_REPO}:{image_version()}"


def find_image(client: docker.DockerClient) -> Image | None:
    """The image for the current recipe if it is present (built by us), else None."""
    try:
        image = client.images.get(image_tag())
    except docker.errors.ImageNotFound:
        return None
    return image if image.labels.get(LABEL) == "1" else None


def build_image(
    client: docker.DockerClient,
    method: Method = "auto",
    progress: Progress = lambda _msg: None,
    force: bool = False,
) -> str:
    """Make sure the image for the current recipe exists; return its tag.

    An existing image is reused unless ``force``. ``auto`` uses the Dockerfile when
    the base image is local or can be pulled, else mmdebstrap.
    """
    if method not in ("auto", "dockerfile", "mmdebstrap"):
        raise LabError(f"unknown image build method {method!r}: use auto, dockerfile or mmdebstrap")
    tag = image_tag()
    old = find_image(client)
    if old is not None and not force:
        progress(f"image {tag} is up to date ({old.short_id})")
        return tag

    if method == "auto":
        method = "dockerfile" if base_image_available(client, progress) else "mmdebstrap"
    progress(f"building {tag} with {method}")

    started = time.monotonic()
    if method == "dockerfile":
        if not base_image_available(client, progress):
            raise LabError(
                f"the base image {BASE_IMAGE} is not local and cannot be pulled; "
                "build with method 'mmdebstrap' (needs only a Debian mirror)"
            )
        _build_dockerfile(client, tag, progress, nocache=force)
    else:
        _build_mmdebstrap(client, tag, progress)
    new = client.images.get(tag)
    progress(f"built {tag} ({new.short_id}) in {time.monotonic() - started:.0f} s")

    if old is not None and old.id != new.id:
        # The forced rebuild left the previous image untagged; drop it if nothing uses it.
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(old.id, noprune=False)
    return tag


# --- dockerfile path ------------------------------------------------------------------


def base_image_available(client: docker.DockerClient, progress: Progress) -> bool:
    """True when BASE_IMAGE is local or a pull of it succeeds within PULL_TIMEOUT."""
    try:
        client.images.get(BASE_IMAGE)
        return True
    except docker.errors.ImageNotFound:
        pass
    progress(f"trying to pull {BASE_IMAGE}")
    repo, _, tag = BASE_IMAGE.partition(":")
    result: dict[str, object] = {}

    def pull() -> None:
        # A client of its own (same engine, from the environment like engine_client):
        # a stalled registry must not hold the caller's connection. The SDK pulls with
        # no timeout, hence the thread and join() deadline.
        try:
            api = docker.from_env(timeout=PULL_TIMEOUT).api
        except docker.errors.DockerException as exc:
            result["error"] = str(exc)
            return
        try:
            for event in api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    result["error"] = event["error"]
                    return
            result["ok"] = True
        except Exception as exc:  # connection/timeout/API errors all mean "no pull"
            result["error"] = getattr(exc, "explanation", None) or str(exc)
        finally:
            api.close()

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(PULL_TIMEOUT + 5)
    if result.get("ok"):
        progress(f"pulled {BASE_IMAGE}")
        return True
    reason = str(result.get("error", f"no answer in {PULL_TIMEOUT:.0f} s")).strip()
    progress(f"cannot pull {BASE_IMAGE}: {reason.splitlines()[0][:200] if reason else '?'}")
    return False


def _build_dockerfile(client: docker.DockerClient, tag: str, progress: Progress, nocache: bool) -> None:
    """Classic-builder build from the rendered Dockerfile (buildx may be absent).

    RUN steps use the host's network: a dockerd started with --iptables=false gives
    its bridge no NAT, so apt inside a bridged build container could not reach a mirror.
    """
    tail: deque[str] = deque(maxlen=20)
    stream = client.api.build(
        fileobj=io.BytesIO(render_dockerfile().encode()),
        tag=tag,
        labels={LABEL: "1", VERSION_LABEL: image_version(), METHOD_LABEL: "dockerfile"},
        rm=True,
        forcerm=True,
        pull=False,
        nocache=nocache,
        network_mode="host",
        decode=True,
    )
    for event in stream:
        if "error" in event:
            log = "\n".join(tail)
            raise LabError(f"docker build of {tag} failed: {event['error']}\n{log}")
        text = str(event.get("stream", "")).rstrip()
        if text:
            tail.append(text)
            if text.startswith("Step "):
                progress(text)


# --- mmdebstrap path ------------------------------------------------------------------


@dataclass
class AptSource:
    """One Debian archive entry from the host's apt configuration."""

    uris: list[str]
    suites: list[str]
    components: list[str]
    signed_by: str | None = None


def host_debian_sources(root: Path = Path("/")) -> list[AptSource]:
    """Debian archive entries from the host's apt sources (one-line and deb822 files),
    with their suites mapped to SUITE, SUITE-updates and SUITE-security.

    Entries of other suites (third-party repositories, backports) are dropped; so are
    disabled stanzas and files apt itself would ignore.
    """
    apt = root / "etc/apt"
    found: list[AptSource] = []
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            found.extend(_parse_one_line(path.read_text(errors="replace")))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        found.extend(_parse_deb822(path.read_text(errors="replace")))

    mapped: list[AptSource] = []
    seen: set[tuple[str, str]] = set()
    for src in found:
        suites: list[str] = []
        for suite in src.suites:
            match = _POCKET_RE.match(suite)
            if not match or match["base"] not in _DEBIAN_SUITES:
                continue
            target = SUITE if not match["pocket"] else f"{SUITE}-{match['pocket']}"
            if target not in suites:
                suites.append(target)
        uris = [u.rstrip("/") for u in src.uris]
        suites = [s for s in suites if all((u, s) not in seen for u in uris)]
        if not suites or not uris:
            continue
        seen.update((u, s) for u in uris for s in suites)
        signed_by = src.signed_by
        if signed_by and signed_by.startswith("/") and not (root / signed_by[1:]).exists():
            signed_by = None
        mapped.append(AptSource(uris, suites, src.components or ["main"], signed_by))
    return mapped


def _parse_one_line(text: str) -> list[AptSource]:
    """``deb [opt=val ...] URI SUITE COMPONENT...`` lines."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            for item in opts.split():
                key, _, value = item.partition("=")
                options[key.lower()] = value
        parts = rest.split()
        if len(parts) < 2:
            continue
        out.append(AptSource([parts[0]], [parts[1]], parts[2:], options.get("signed-by")))
    return out


def _parse_deb822(text: str) -> list[AptSource]:
    """deb822 ``*.sources`` stanzas (fields case-insensitive, continuation lines)."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + raw.strip()
                continue
            name, sep, value = raw.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        signed_by = fields.get("signed-by", "").strip()
        # An inline key block cannot be passed as a path; let mmdebstrap use its keyrings.
        signed_by_path = signed_by if signed_by and "\n" not in signed_by else None
        out.append(
            AptSource(
                fields.get("uris", "").split(),
                fields.get("suites", "").split(),
                fields.get("components", "").split(),
                signed_by_path,
            )
        )
    return out


def render_sources(sources: Iterable[AptSource]) -> str:
    """deb822 text for mmdebstrap (it pastes it into the image's sources list)."""
    stanzas = []
    for src in sources:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(src.uris)}",
            f"Suites: {' '.join(src.suites)}",
            f"Components: {' '.join(src.components)}",
        ]
        if src.signed_by:
            lines.append(f"Signed-By: {src.signed_by}")
        stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas) + "\n"


def _host_apt_opts() -> list[str]:
    """Selected host apt options, as mmdebstrap --aptopt values."""
    if shutil.which("apt-config") is None:
        return []
    opts = []
    for name in _FORWARDED_APT_OPTS:
        # `apt-config shell VAR NAME` prints VAR='value' only when NAME has a value.
        result = subprocess.run(
            ["apt-config", "shell", "V", name], capture_output=True, text=True, check=False
        )
        line = result.stdout.strip()
        if result.returncode == 0 and line.startswith("V="):
            value = " ".join(shlex.split(line[2:]))
            if value:
                opts.append(f'{name} "{value}";')
    return opts


def _build_mmdebstrap(client: docker.DockerClient, tag: str, progress: Progress) -> None:
    """mmdebstrap a rootfs tarball into a temp dir, ``docker import`` it, delete it."""
    if shutil.which("mmdebstrap") is None:
        apt_install(["mmdebstrap"], progress)
    override = os.environ.get("IPSEC_LAB_APT_SOURCES")
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        if override:
            # A sources file, or one-line "deb URI SUITE COMP" entry, chosen by the user.
            mirrors = [override]
        else:
            sources = host_debian_sources()
            if not sources:
                raise LabError(
                    "no Debian archive found in the host's apt sources "
                    "(/etc/apt/sources.list, /etc/apt/sources.list.d/); set "
                    "IPSEC_LAB_APT_SOURCES to a sources file or a 'deb URI SUITE main' line"
                )
            sources_file = Path(tmp) / "ipsec-lab.sources"
            sources_file.write_text(render_sources(sources))
            mirrors = [str(sources_file)]
        cmd = [
            "mmdebstrap",
            "--variant=apt",
            "--format=tar",
            f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt={opt}" for opt in DPKG_OPTS),
            *(f"--aptopt={opt}" for opt in _host_apt_opts()),
            SUITE,
            str(tarball),
            *mirrors,
        ]
        progress(f"building the root filesystem with mmdebstrap ({len(PACKAGES)} packages)")
        started = time.monotonic()
        _run_streaming(cmd, progress, prefix="mmdebstrap: ")
        size_mb = tarball.stat().st_size / 1e6
        progress(f"root filesystem: {size_mb:.0f} MB in {time.monotonic() - started:.0f} s")

        progress(f"importing it as {tag}")
        repository, _, version = tag.partition(":")
        changes = [
            *import_changes(),
            f'LABEL {VERSION_LABEL}="{image_version()}"',
            f'LABEL {METHOD_LABEL}="mmdebstrap"',
        ]
        try:  # the SDK streams the file and waits with no timeout
            reply = client.api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=changes
            )
        except docker.errors.APIError as exc:
            raise LabError(f"docker import of the root filesystem failed: {exc}") from exc
        if isinstance(reply, str) and '"error"' in reply:
            raise LabError(f"docker import of the root filesystem failed: {reply.strip()}")


def _run_streaming(cmd: list[str], progress: Progress, prefix: str) -> None:
    """Run ``cmd``, relaying its "I:" status lines; on failure raise with its last lines."""
    tail: deque[str] = deque(maxlen=25)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        tail.append(line)
        if line.startswith("I: "):
            progress(prefix + line[3:])
    if proc.wait() != 0:
        log = "\n".join(tail)
        raise LabError(f"{cmd[0]} failed (exit {proc.returncode}):\n{log}")

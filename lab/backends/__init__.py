"""Backends materialise a lab plan: `netns` (Linux network namespaces) or `docker` (containers).

One interface, several engines (Kathara's manager split): the orchestrator, checks and scenarios
only talk to `Backend` (lab.backends.base), never to namespaces or containers directly.
"""

from __future__ import annotations

from lab.backends.base import AGENT, Backend, Progress
from lab.errors import LabError

__all__ = ["AGENT", "Backend", "Progress", "choose_backend", "get_backend"]


def get_backend(name: str) -> Backend:
    if name == "netns":
        from lab.backends.netns import NetnsBackend

        return NetnsBackend()
    if name == "docker":
        from lab.backends.docker import DockerBackend

        return DockerBackend()
    raise ValueError(name)


def choose_backend(requested: str) -> tuple[Backend, str]:
    """The backend `--backend` asks for, and why: `auto` takes docker when an engine answers."""
    if requested == "netns":
        return get_backend("netns"), "asked for with --backend netns"
    if requested == "docker":
        return get_backend("docker"), "asked for with --backend docker"
    if requested != "auto":
        raise LabError(f"--backend: must be netns, docker or auto (got {requested!r})")
    try:
        from lab.backends.docker.engine import engine_client

        client = engine_client()
    except ImportError:
        client = None
    if client is not None:
        return get_backend("docker"), "auto: a Docker engine answered"
    return get_backend("netns"), "auto: no Docker engine answered, using network namespaces"

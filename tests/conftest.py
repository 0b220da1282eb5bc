"""Shared fixtures: the backends integration tests run on, and example paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "configs" / "examples"


def _docker_unavailable() -> str | None:
    """Only a missing engine skips: the backend's own import is a hard dependency."""
    from lab.backends.docker.engine import engine_client

    if engine_client() is None:
        return "no Docker engine answers (make lab-up or .ci/run starts one)"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    """`make test-kernel` sets IPSEC_LAB_EXPECT_DATAPLANE=kernel: a guest or host where the
    lab would not pick the kernel dataplane must fail the run, not test libipsec again."""
    want = os.environ.get("IPSEC_LAB_EXPECT_DATAPLANE")
    if want and os.geteuid() == 0:
        from lab.dataplane import detect

        got = detect()
        if got.name != want:
            pytest.exit(f"IPSEC_LAB_EXPECT_DATAPLANE={want}, but the lab detects {got.name} "
                        f"({got.reason})", returncode=3)


@pytest.fixture(params=["netns", "docker"])
def backend(request: pytest.FixtureRequest) -> str:
    """Integration tests run on both backends; docker skips only where no engine runs."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    if request.param == "docker" and (why := _docker_unavailable()):
        pytest.skip(why)
    return request.param


@pytest.fixture
def examples() -> Path:
    return EXAMPLES

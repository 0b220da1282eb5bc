"""strongSwan's own parser as the oracle: every swanctl.conf the lab renders means to `swanctl`
what it means to the lab. Each render is loaded twice into the same scratch daemon, once the
lab's way (lab.swanctl.parse, then VICI load-conn/load-shared) and once with strongSwan's own
`swanctl --load-all --file`, and the daemon's `list-conns` and `get-shared` must be equal.

Renders: every gateway of every example spec, and matrix cases across the whole menu (both IKE
versions, both exchange modes, FQDN IDs, every negative reason)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from lab import lifecycle
from lab.control import Vici, decode
from lab.dataplane import Dataplane
from lab.errors import LabError
from lab.matrix import cases as mc
from lab.matrix.runner import case_plan
from lab.plan import build_plan
from lab.render import render_gateway
from lab.spec import load_spec
from lab.swanctl import parse
from tests.conftest import EXAMPLES

SCRATCH = "default.yaml"  # the lab whose cloud gateway's daemon is the scratch daemon


def _renders(plan_dataplane) -> list[tuple[str, str]]:
    """(label, swanctl.conf text) of every gateway of the examples and of sampled matrix cases."""
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "env:" in path.read_text():
            continue  # its key comes from the environment
        try:
            plan = build_plan(load_spec(path), "oracle", plan_dataplane)
        except LabError:
            continue  # an example the lab refuses to run (e.g. an SM4 menu): nothing rendered
        assert data
        # a libreswan gateway's ipsec.conf has libreswan's own reader (tests/test_libreswan.py)
        out += [(f"{path.name}:{gw.node}", render_gateway(plan, gw, f"/run/x/{gw.node}")[
            "swanctl.conf"]) for gw in plan.gateways if not gw.pluto]
    base = load_spec(EXAMPLES / SCRATCH)
    dims = mc.default_dimensions()
    sample = [*mc.pairwise(dims)[::7], *mc.negatives(mc.default_base()),
              *mc.negatives({**mc.default_base(), "ike_version": "v2"})]
    for case in sample:
        if case.unsupported:
            continue
        plan, _ = case_plan(base, case, "oracle", None)
        out += [(f"{case.id}:{gw.node}", render_gateway(plan, gw, f"/run/x/{gw.node}")[
            "swanctl.conf"]) for gw in plan.gateways]
    return out


def _quiet(text: str) -> str:
    """Loaded into a daemon that must not negotiate with anyone: no start or trap actions (the
    same text goes both ways, so the comparison stays fair)."""
    return text.replace("start_action = start", "start_action = none").replace(
        "start_action = trap", "start_action = none")


def _loaded(v: Vici) -> tuple[list, list]:
    conns = [decode(c) for c in v.session.list_conns()]
    return sorted(conns, key=lambda c: sorted(c)), sorted(v.shared_secrets())


def _clear(v: Vici) -> None:
    for name in v.connections():
        v.unload(name)
    for key in v.shared_secrets():
        v.session.unload_shared({"id": key})


@pytest.fixture(scope="module")
def scratch():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    name = f"orc{os.getpid() % 1000}"
    lifecycle.down(name)
    lab = lifecycle.up(EXAMPLES / SCRATCH, name, "netns")
    try:
        node = lab.plan.gateways[0].node
        with lab.vici(node) as v:
            for sa in v.sas():
                v.terminate_ike(sa["name"])
            _clear(v)
        yield lab, node
    finally:
        lifecycle.down(name)


@pytest.mark.integration
def test_every_render_means_the_same_to_swanctl(scratch, tmp_path):
    lab, node = scratch
    socket = lab.backend.host_dir(lab.state.name, node) / "charon.vici"
    renders = _renders(lab.plan.dataplane)
    assert len(renders) > 40
    if lab.plan.dataplane.name != "kernel":  # route-based children (if_id) exist on the kernel's
        plan = build_plan(load_spec(EXAMPLES / "destination-route-mixed.yaml"), "oracle",
                          Dataplane("kernel", "oracle"))
        renders += [(f"route-based:{gw.node}", render_gateway(plan, gw, "/run/x")["swanctl.conf"])
                    for gw in plan.gateways]
    differ = []
    for label, text in renders:
        text = _quiet(text)
        path = tmp_path / "swanctl.conf"
        path.write_text(text)
        with Vici(socket) as v:
            v.load(parse(text, label))
            ours = _loaded(v)
            _clear(v)
            done = subprocess.run(["swanctl", "--load-all", "--noprompt", "--file", str(path),
                                   "--uri", f"unix://{socket}"], capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, f"{label}: swanctl refused it: {done.stdout}{done.stderr}"
            theirs = _loaded(v)
            _clear(v)
        if ours != theirs:
            differ.append((label, ours, theirs))
    assert not differ, differ[:2]


def test_the_oracle_sees_a_difference_when_there_is_one(scratch, tmp_path):
    """The comparison is not vacuous: a value the lab would read differently shows."""
    lab, node = scratch
    socket = lab.backend.host_dir(lab.state.name, node) / "charon.vici"
    text = ("connections {\n  c {\n    remote_addrs = 192.0.2.7\n    local {\n      auth = psk\n"
            "    }\n    remote {\n      auth = psk\n    }\n  }\n}\n")
    (tmp_path / "swanctl.conf").write_text(text)
    with Vici(socket) as v:
        changed = parse(text, "x")
        changed["connections"]["c"]["remote_addrs"] = ["192.0.2.8"]  # a wrong reader's result
        v.load(changed)
        ours = _loaded(v)
        _clear(v)
        subprocess.run(["swanctl", "--load-all", "--noprompt", "--file", str(tmp_path / "swanctl.conf"),
                        "--uri", f"unix://{socket}"], capture_output=True, check=True, timeout=60)
        theirs = _loaded(v)
        _clear(v)
    assert ours != theirs

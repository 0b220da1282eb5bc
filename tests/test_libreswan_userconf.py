"""A user's own libreswan ipsec.conf: recognised by its dialect, read by libreswan's own parser
(readwriteconf: include, %default and also= as pluto reads them) and compared by `advise` in the
user's own keywords. Running it is refused clearly (not built yet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.advise import advise
from lab.customer import OwnConfig
from lab.dataplane import Dataplane
from lab.errors import LabError
from lab.libreswan import userconf
from lab.plan import build_plan
from lab.render import render_gateway
from lab.spec import load_spec
from tests.conftest import EXAMPLES

KEY = "lab-default-psk-change-me"  # the default example's


def _needs_libreswan() -> None:
    try:
        userconf.tool("readwriteconf")
    except LabError as exc:
        pytest.skip(str(exc))


def _write(tmp_path: Path, main: str, included: str = "", secret: str = KEY) -> tuple[Path, Path]:
    (tmp_path / "tunnels.conf").write_text(included)
    conf = tmp_path / "ipsec.conf"
    conf.write_text(main.replace("INCLUDED", str(tmp_path / "tunnels.conf")))
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text(f'198.51.100.2 203.0.113.1 : PSK "{secret}"\n')
    return conf, secrets


MAIN = """\
config setup
    uniqueids=yes

conn %default
    ikelifetime=24h
    salifetime=1h

conn cloud-base
    authby=secret
    left=198.51.100.2
    right=203.0.113.1
    ikev2=yes
    ike=aes128-sha2_256;modp2048
    esp=aes128-sha1
    pfs=yes
    dpddelay=10
    retransmit-timeout=30s
    dpdaction=clear
    type=tunnel

include INCLUDED
"""
MAPPING = """\
conn cloud-m1
    also=cloud-base
    leftsubnet=192.168.1.0/24
    rightsubnet=10.0.1.0/24
    auto=add
"""


def test_the_dialect_is_told_apart() -> None:
    assert userconf.looks_like_libreswan(MAIN)
    assert not userconf.looks_like_libreswan("conn a\n    keyexchange=ikev2\n    pfs=yes\n")
    assert not userconf.looks_like_libreswan("conn a\n    left=1.2.3.4\n    esp=aes128\n")


def test_a_matching_config_across_include_default_and_also_has_no_errors(tmp_path: Path) -> None:
    _needs_libreswan()
    conf, secrets = _write(tmp_path, MAIN, MAPPING)
    config = userconf.load(conf, secrets)
    assert config.dialect == "libreswan" and [c.name for c in config.connections] == ["cloud-m1"]
    conn = config.connections[0]
    # %default, also= and include as libreswan resolved them; pfs=yes takes the IKE group
    assert (conn.version, conn.ike_proposals, conn.children[0].esp_proposals) == (
        2, ["aes128-sha256-modp2048"], ["aes128-sha1-modp2048"])
    assert (conn.ike_lifetime, conn.children[0].life_time, conn.dpd_delay, conn.dpd_timeout) == (
        86400, 3600, 10, 30)
    assert conn.children[0].dpd_action == "clear" and config.ignored == ["cloud-base"]
    items = advise(load_spec(EXAMPLES / "default.yaml"), config)
    assert not [a for a in items if a.severity == "error"], items


def test_mismatches_are_named_in_libreswans_own_keywords(tmp_path: Path) -> None:
    _needs_libreswan()
    wrong = MAIN.replace("ikev2=yes", "ikev2=no").replace("retransmit-timeout=30s", "")
    conf, secrets = _write(tmp_path, wrong, MAPPING, secret="not-the-key")
    items = advise(load_spec(EXAMPLES / "default.yaml"), userconf.load(conf, secrets))
    version = next(a for a in items if a.topic == "ike-version")
    assert version.severity == "error" and version.customer_field.startswith("conn cloud-m1: ikev2=")
    assert version.fix is not None and version.fix.startswith("ikev2=yes")
    assert any(a.topic == "psk" and a.severity == "error" for a in items)
    assert "not-the-key" not in repr(items)


def test_the_ikev2_dpd_timeout_is_libreswans_retransmit_timeout(tmp_path: Path) -> None:
    _needs_libreswan()
    conf, secrets = _write(tmp_path, MAIN.replace("retransmit-timeout=30s", ""), MAPPING)
    items = advise(load_spec(EXAMPLES / "default.yaml"), userconf.load(conf, secrets))
    dpd = next(a for a in items if a.topic == "dpd")
    assert "after 60s (retransmit-timeout" in dpd.message and dpd.fix == "retransmit-timeout=30s"


def test_leftsubnets_give_one_child_per_pair(tmp_path: Path) -> None:
    _needs_libreswan()
    many = MAPPING.replace("leftsubnet=192.168.1.0/24", "leftsubnets={192.168.1.0/24 192.168.2.0/24}")
    conf, _ = _write(tmp_path, MAIN, many)
    (conn,) = userconf.load(conf).connections
    assert [(c.name, c.local_ts, c.remote_ts) for c in conn.children] == [
        ("cloud-m1/0x0", ["192.168.1.0/24"], ["10.0.1.0/24"]),
        ("cloud-m1/1x0", ["192.168.2.0/24"], ["10.0.1.0/24"])]


def test_libreswan_refuses_a_bad_file_in_its_own_words(tmp_path: Path) -> None:
    _needs_libreswan()
    conf, _ = _write(tmp_path, MAIN + "    bogus-key=1\n", MAPPING)
    with pytest.raises(LabError, match=r"libreswan's parser refused it: .*syntax error"):
        userconf.load(conf)


def test_the_labs_own_libreswan_config_advises_clean(tmp_path: Path) -> None:
    """The oracle the other way round: what the lab renders for a libreswan customer gateway,
    read back as a user's file, matches the cloud tunnel it was rendered for."""
    _needs_libreswan()
    spec = load_spec(EXAMPLES / "libreswan.yaml")
    plan = build_plan(spec, "lswadv", Dataplane("kernel", "test"))
    files = render_gateway(plan, plan.gateways[1], str(tmp_path))
    for name in ("ipsec.conf", "ipsec.secrets"):
        (tmp_path / name).write_text(files[name])
    config = userconf.load(tmp_path / "ipsec.conf", tmp_path / "ipsec.secrets")
    assert config.dialect == "libreswan"
    errors = [a for a in advise(spec, config) if a.severity == "error"]
    assert not errors, errors


def test_strongswans_loader_leaves_a_libreswan_file_to_pluto(tmp_path: Path) -> None:
    conf, secrets = _write(tmp_path, MAIN, MAPPING)
    with pytest.raises(LabError, match="is a libreswan ipsec.conf, which runs on libreswan's "
                                       "pluto"):
        OwnConfig.load(conf, secrets)


def test_proposals_left_to_libreswans_defaults_are_not_compared_as_strongswans(
        tmp_path: Path) -> None:
    _needs_libreswan()
    bare = "\n".join(line for line in MAIN.splitlines()
                     if not line.strip().startswith(("ike=", "esp=")))
    conf, secrets = _write(tmp_path, bare + "\n", MAPPING)
    items = advise(load_spec(EXAMPLES / "default.yaml"), userconf.load(conf, secrets))
    found = {a.topic: a for a in items if a.topic.endswith("-proposal")}
    assert found["ike-proposal"].severity == found["esp-proposal"].severity == "warning"
    assert "libreswan proposes and accepts its own default list" in found["ike-proposal"].message
    assert found["ike-proposal"].fix == "ike=aes128-sha256-modp2048"
    assert "strongSwan" not in found["esp-proposal"].message


def test_advise_on_the_command_line_tells_the_dialects_apart(tmp_path: Path) -> None:
    _needs_libreswan()
    import json

    import typer
    from typer.testing import CliRunner

    from lab.cli.inputs import register

    app = typer.Typer()
    register(app)
    conf, secrets = _write(tmp_path, MAIN.replace("ikev2=yes", "ikev2=no"), MAPPING)
    result = CliRunner().invoke(app, ["advise", str(EXAMPLES / "default.yaml"), "--customer-config",
                                      str(conf), "--secrets", str(secrets), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert any(a["fix"] and a["fix"].startswith("ikev2=yes") for a in report["advice"])
    assert any("read by libreswan's own parser" in str(n) for n in report["notes"])

"""Hardening: what a user types cannot break the generated configs, a file that is not UTF-8 is a
clear error, `validate` needs no pre-shared key, and the matrix keeps out of the working tree.

1. Every string field of the spec that reaches a template gets hostile values: each is refused
   with an error naming that field, or, where the rule accepts it, both gateways' configs are
   rendered and read back with the lab's own parsers (lab.swanctl, lab.ipsecconf) and hold exactly
   the intended sections and keys. The cloud JSON import and matrix files too.
2. Files the CLI reads (spec, matrix file, API JSON, customer configs, their includes, results)
   that are not UTF-8 or cannot be read: exit 2, the file named, no traceback.
3. An `env:` pre-shared key whose variable is unset: a note for `validate`, an error naming the
   field and the variable where the key is needed.
4. `ipsec-lab matrix` without --results writes nothing into the current directory.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from lab import lifecycle
from lab import state as labstate
from lab.cloudapi import import_tunnel
from lab.dataplane import Dataplane
from lab.errors import LabError
from lab.ipsecconf import parse_secrets, parse_sections, resolve
from lab.matrix.cases import load_matrix_file
from lab.plan import build_plan
from lab.render import render_gateway
from lab.spec import LabSpec, SpecInvalid, UnsetKey, dump_spec, parse_spec, unset_keys
from lab.swanctl import parse, secret_bytes, shared_secrets
from tests.conftest import EXAMPLES, ROOT

HOSTILE = [
    "a\nb", "a\r\nb", "a}", "a{", "{", "}", "a=b", "a#b", 'a"b', "a'b", "; rm -rf /",
    "a\nb; rm -rf /", "a b", "a\tb", "a,b", "%default", "include", "tünnel", "隧道", "a\u2028b",
    "a\x00b", "-a", "a.", "1.2.3.4", "x" * 300, "y" * 70 + "." + "z" * 70, "",
]
# Valid but at the edges of the rules: they must render and read back exactly.
EDGY = ["a.b_c-D9", "9tunnel", "n" * 60, "1cgw.example", "a" * 63 + ".example",
        "xn--bcher-kva.example", "vpn.cloud.ipsec-lab.test"]

CLOUD_IP, CGW_IP = "203.0.113.1", "198.51.100.2"
BASE: dict[str, Any] = {
    "vpn_gateway": {"public_ip": CLOUD_IP, "vpc_cidr": "10.0.0.0/16"},
    "tunnels": [{
        "name": "t1",
        "customer_gateway": {"public_ip": CGW_IP},
        "pre_shared_key": "k",
        "spd_rules": [{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}],
    }],
}
LIBIPSEC = Dataplane("libipsec", "test")

T = ("tunnels", 0)
# spec path -> (the error's field path, what the field needs around it to mean something)
FIELDS: dict[tuple, tuple[str, dict[tuple, Any]]] = {
    (*T, "name"): ("tunnels[0].name", {}),
    (*T, "ike", "local_id", "value"): ("tunnels[0].ike.local_id.value",
                                       {(*T, "ike", "local_id", "type"): "fqdn"}),
    (*T, "ike", "peer_id", "value"): ("tunnels[0].ike.peer_id.value",
                                      {(*T, "ike", "peer_id", "type"): "fqdn"}),
    (*T, "ike", "local_id", "value", "address"): ("tunnels[0].ike.local_id.value", {}),
    (*T, "ike", "peer_id", "value", "address"): ("tunnels[0].ike.peer_id.value", {}),
    (*T, "customer", "ike", "local_id", "value"): (
        "tunnels[0].customer.ike.local_id.value",
        {(*T, "customer", "ike", "local_id", "type"): "fqdn"}),
    (*T, "customer", "ike", "peer_id", "value"): (
        "tunnels[0].customer.ike.peer_id.value",
        {(*T, "customer", "ike", "peer_id", "type"): "fqdn"}),
    (*T, "pre_shared_key"): ("tunnels[0].pre_shared_key", {}),
    (*T, "customer", "pre_shared_key"): ("tunnels[0].customer.pre_shared_key", {}),
    (*T, "customer_gateway", "site"): ("tunnels[0].customer_gateway.site", {}),
    ("vpn_gateway", "routes", 0, "tunnel"): (
        "vpn_gateway.routes[0].tunnel",
        {("vpn_gateway", "routes", 0, "destination"): "192.168.9.0/24"}),
    ("vpn_gateway", "profile"): ("vpn_gateway.profile", {}),
    ("vpn_gateway", "generation"): ("vpn_gateway.generation", {}),
    (*T, "vpn_gateway"): ("tunnels[0].vpn_gateway", {}),
    # menus: only catalogue values pass (any spelling becomes the console's keyword)
    **{(*T, *path): (f"tunnels[0].{'.'.join(path)}", {}) for path in (
        ("negotiation_type",), ("communication_mode",), ("dpd", "action"), ("ike", "version"),
        ("ike", "encryption"), ("ike", "integrity"), ("ike", "exchange_mode"),
        ("ike", "dh_group"), ("ike", "local_id", "type"), ("ike", "peer_id", "type"),
        ("ipsec", "encryption"), ("ipsec", "integrity"), ("ipsec", "pfs"),
        ("ipsec", "encapsulation"), ("ipsec", "protocol"),
        ("customer", "ike", "encryption"), ("customer", "ike", "version"),
        ("customer", "ipsec", "pfs"), ("customer", "ipsec", "integrity"),
        ("health_check", "policy"), ("customer_gateway", "implementation"),
    )},
}


def set_path(data: dict, path: tuple, value: Any) -> None:
    node: Any = data
    for key, nxt in zip(path, path[1:], strict=False):
        if isinstance(key, int):
            while len(node) <= key:
                node.append({})
            node = node[key]
        else:
            node = node.setdefault(key, [] if isinstance(nxt, int) else {})
    node[path[-1]] = value


def hostile_spec(field: tuple, value: Any) -> dict:
    data = copy.deepcopy(BASE)
    path = field[:-1] if field[-1] == "address" else field
    _, context = FIELDS[field]
    for where, v in context.items():
        set_path(data, where, v)
    set_path(data, path, value)
    return data


def _string_fields(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    """Paths of every string-like field of the spec's models (free-form dicts end in '*')."""
    out: list[tuple] = []
    for name, info in model.model_fields.items():
        todo, seen = [info.annotation], []
        while todo:
            ann = todo.pop()
            origin = typing.get_origin(ann)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out += _string_fields(ann, (*prefix, name, 0) if seen else (*prefix, name))
            elif ann in (str, SecretStr) or origin is typing.Literal:
                out.append((*prefix, name))
            elif origin is dict:
                out.append((*prefix, name, "*"))
            elif origin is list:
                seen.append(ann)
                todo += list(typing.get_args(ann))
            elif origin is not None:
                todo += list(typing.get_args(ann))
    return out


def test_every_string_field_of_the_spec_gets_hostile_values():
    """The table above covers the spec's models: a new string field needs its own entry."""
    covered = {f[:-1] if f[-1] == "address" else f for f in FIELDS}
    for path in _string_fields(LabSpec):
        if path[-1] == "*":
            assert any(c[:len(path) - 1] == path[:-1] for c in covered), path
        else:
            assert path in covered, f"{path}: add it to FIELDS (hostile values for it)"


# -- reading the rendered configs back --------------------------------------------------------

def _shape(tree: Any, names: dict[str, str]) -> Any:
    """Sections and keys of a parsed swanctl.conf, with the tunnel's names as placeholders."""
    if isinstance(tree, dict):
        return {names.get(k, k): _shape(v, names) for k, v in tree.items()}
    return "value"


def _names(name: str) -> dict[str, str]:
    return {name: "<conn>", f"{name}-m1": "<child>", f"ike-{name}": "<secret>"}


def _ids(data: dict) -> dict[str, tuple[str, str]]:
    """Each side's (local ID, remote ID) as the spec intends them."""
    t = data["tunnels"][0]
    ike = t.get("ike", {})
    cloud = (ike.get("local_id", {}).get("value") or CLOUD_IP,
             ike.get("peer_id", {}).get("value") or CGW_IP)
    over = t.get("customer", {}).get("ike", {})
    customer = (over["local_id"].get("value") or CGW_IP if "local_id" in over else cloud[1],
                over["peer_id"].get("value") or CLOUD_IP if "peer_id" in over else cloud[0])
    return {"vpngw": cloud, "cgw1": customer}


def _psks(data: dict) -> dict[str, bytes]:
    t = data["tunnels"][0]
    own = t.get("customer", {}).get("pre_shared_key") or t["pre_shared_key"]  # "": no override
    return {"vpngw": t["pre_shared_key"].encode(), "cgw1": own.encode()}


BASELINE: dict[str, dict[str, Any]] = {}


def _rendered(data: dict) -> dict[str, dict[str, str]]:
    plan = build_plan(parse_spec(data), "t", LIBIPSEC)
    return {gw.node: render_gateway(plan, gw, f"/run/x/{gw.node}") for gw in plan.gateways}


def _baseline() -> dict[str, dict[str, Any]]:
    if not BASELINE:
        for node, files in _rendered(BASE).items():
            BASELINE[node] = {"swanctl": _shape(parse(files["swanctl.conf"]), _names("t1"))}
            if "ipsec.conf" in files:
                sections = parse_sections(files["ipsec.conf"])
                BASELINE[node]["ipsec"] = {n.replace("t1", "<conn>"): sorted(s) for n, s in
                                           resolve(sections).items()}
    return BASELINE


def assert_reads_back(data: dict) -> None:
    """Both gateways' swanctl.conf (and the customer's ipsec.conf/secrets) hold exactly the
    baseline's sections and keys, with the intended names, IDs and keys."""
    name = data["tunnels"][0]["name"]
    ids, psks, base = _ids(data), _psks(data), _baseline()
    for node, files in _rendered(data).items():
        tree = parse(files["swanctl.conf"])
        assert _shape(tree, _names(name)) == base[node]["swanctl"], (node, files["swanctl.conf"])
        conn = tree["connections"][name]
        assert (conn["local"]["id"], conn["remote"]["id"]) == ids[node]
        assert list(conn["children"]) == [f"{name}-m1"]
        [secret] = shared_secrets(tree)
        assert secret["id"] == f"ike-{name}" and secret["data"] == psks[node]
        assert secret["owners"] == list(ids[node])
        if node != "cgw1":
            continue
        sections = parse_sections(files["ipsec.conf"])
        assert [(s.kind, s.name) for s in sections] == [("config", "setup"), ("conn", name),
                                                         ("conn", f"{name}-m1")]
        conns = resolve(sections)
        assert {n.replace(name, "<conn>"): sorted(s) for n, s in conns.items()} == base[node]["ipsec"]
        child = conns[f"{name}-m1"]
        assert (child["leftid"].value.lstrip("@"), child["rightid"].value.lstrip("@")) == ids[node]
        [entry] = parse_secrets(files["ipsec.secrets"])
        assert [s.lstrip("@") for s in entry.selectors] == list(ids[node])
        assert secret_bytes(entry.secret.get_secret_value()) == psks[node]


NAMES_ACCEPTED = {"a.", "1.2.3.4", "a.b_c-D9", "9tunnel", "n" * 60, "1cgw.example",
                  "xn--bcher-kva.example", "vpn.cloud.ipsec-lab.test"}
FQDNS_ACCEPTED = {"include", "9tunnel", "n" * 60, "1cgw.example", "a" * 63 + ".example",
                  "xn--bcher-kva.example", "vpn.cloud.ipsec-lab.test"}
FREE_TEXT = {(*T, "pre_shared_key"), (*T, "customer", "pre_shared_key"),
             (*T, "customer_gateway", "site")}  # keys are rendered base64; the site is no name


def expected_accepted(field: tuple) -> set[str]:
    if field == (*T, "name"):
        return NAMES_ACCEPTED
    if field[-1] == "address":
        return {"1.2.3.4"}
    if field[-1] == "value":
        return FQDNS_ACCEPTED
    if field in FREE_TEXT:
        return {*HOSTILE, *EDGY}
    return set()  # menus, literals and references to a tunnel


@pytest.mark.parametrize("field", list(FIELDS), ids=lambda f: ".".join(map(str, f)))
def test_hostile_values_are_refused_or_read_back_exactly(field):
    where, _ = FIELDS[field]
    accepted = []
    for value in [*HOSTILE, *EDGY]:
        data = hostile_spec(field, value)
        try:
            parse_spec(data)
        except SpecInvalid as exc:
            named = [p for p in exc.problems if p.startswith(f"{where}:")]
            assert named, (value, exc.problems)
            assert all("\n" not in p for p in exc.problems), exc.problems  # one line each
            continue
        accepted.append(value)
        assert_reads_back(data)
    assert set(accepted) == expected_accepted(field)


def test_the_issue_example_is_refused_with_the_rule():
    with pytest.raises(SpecInvalid) as exc:
        parse_spec(hostile_spec((*T, "name"), "a\nb; rm -rf /"))
    [problem] = exc.value.problems
    assert problem.startswith("tunnels[0].name: must be letters, digits, '.', '_' and '-' only")
    assert "'a\\nb; rm -rf /'" in problem  # shown escaped, on one line


def test_fqdn_ids_are_host_names_not_addresses():
    for value in ("cgw.example\n", "1.2.3.4", "10.0.0.1", "cgw..example", "-cgw.example",
                  "cgw.example.", "cgw_1.example", "a" * 64 + ".example"):
        with pytest.raises(SpecInvalid) as exc:
            parse_spec(hostile_spec((*T, "ike", "peer_id", "value"), value))
        assert exc.value.problems[0].startswith("tunnels[0].ike.peer_id.value: an FQDN identity")


def test_customer_overrides_are_checked_like_the_tunnel():
    data = hostile_spec((*T, "customer", "ike", "local_id", "value"), "x\n}y")
    set_path(data, (*T, "customer", "ike", "encryption"), "FOO")
    set_path(data, (*T, "customer", "ipsec", "colour"), "red")
    with pytest.raises(SpecInvalid) as exc:
        parse_spec(data)
    found = exc.value.problems
    assert any(p.startswith("tunnels[0].customer.ike.local_id.value: an FQDN identity")
               for p in found)
    assert any(p.startswith("tunnels[0].customer.ike.encryption: must be one of") for p in found)
    assert "tunnels[0].customer.ipsec.colour: unknown field (not part of the tunnel spec)" in found


def test_names_used_by_the_examples_and_tests_stay_valid(monkeypatch):
    monkeypatch.setenv("IPSEC_LAB_PSK_V1MAIN", "x")
    for path in sorted(EXAMPLES.glob("*.yaml")):
        parse_spec(yaml.safe_load(path.read_text()), str(path))
    for name in ("t", "t1", "t2", "r", "n" * 60, "modern", "tunnel-default", "idc-shanghai"):
        parse_spec(hostile_spec((*T, "name"), name))


# -- the cloud's JSON --------------------------------------------------------------------------

def _body(**changes: Any) -> dict:
    body = json.loads((EXAMPLES / "api" / "create-vpn-connection.json").read_text())
    for path, value in changes.items():
        set_path(body, tuple(path.split("__")), value)
    return body


@pytest.mark.parametrize("value", [*HOSTILE, *EDGY])
def test_import_refuses_a_hostile_connection_name(value):
    """VpnConnectionName: what the spec's name rule accepts imports as it is; the rest is an
    error naming the API field, never a broken spec."""
    if value in NAMES_ACCEPTED:
        spec, _ = import_tunnel(_body(VpnConnectionName=value))
        assert spec["tunnels"][0]["name"] == value
        return
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(_body(VpnConnectionName=value))
    assert any(p.startswith("VpnConnectionName: ") for p in exc.value.problems), exc.value.problems
    assert all("\n" not in p for p in exc.value.problems)


@pytest.mark.parametrize("side", ["Local", "Remote"])
@pytest.mark.parametrize("value", [v for v in [*HOSTILE, *EDGY] if v])
def test_import_refuses_a_hostile_fqdn(side, value):
    body = _body()
    body["IKEOptionsSpecification"].update({f"{side}Identity": "FQDN", f"{side}FqdnName": value})
    if value in FQDNS_ACCEPTED:
        spec, _ = import_tunnel(body)
        side_id = "local_id" if side == "Local" else "peer_id"
        assert spec["tunnels"][0]["ike"][side_id] == {"type": "fqdn", "value": value}
        return
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(body)
    assert any(p.startswith(f"IKEOptionsSpecification.{side}FqdnName: ") for p in exc.value.problems)
    assert all("\n" not in p for p in exc.value.problems)


def test_import_refuses_odd_shapes_and_an_env_key():
    with pytest.raises(LabError, match=r"VpnConnectionSet\[1\]: must be an object"):
        import_tunnel({"VpnConnectionSet": [_body(), "x\ny"]})
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(_body(PreShareKey="env:HOME"))
    assert any(p.startswith("PreShareKey: starts with 'env:'") for p in exc.value.problems)
    with pytest.raises(SpecInvalid) as exc:
        import_tunnel(_body(VpnConnectionName=["a"]))
    assert exc.value.problems[0].startswith("VpnConnectionName: required")
    entries = {"VpnConnectionSet": [{**_body(), "VpnConnectionName": "a\n}"}, _body()]}
    with pytest.raises(LabError) as info:
        import_tunnel(entries)
    assert "\n" not in str(info.value) and "'a\\n}'" in str(info.value)


def _cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600, check=False,
                          env={**os.environ, **(env or {})})


def test_import_notes_from_the_json_cannot_add_spec_lines(tmp_path):
    """Unknown field names and IDs from the JSON are quoted into the spec's comment header."""
    body = _body(VpnGatewayId="vpngw-1\nvpn_gateway: {public_ip: 8.8.8.8}",
                 IKEOptionsSpecification__LocalAddress="")  # so that the note names the ID
    body["Evil\ntunnels: []\n#"] = 1
    source = tmp_path / "body\nvpn_gateway: x.json"
    source.write_text(json.dumps(body))
    out = tmp_path / "spec.yaml"
    run = _cli("import", str(source), "-o", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Evil\\ntunnels" in line for line in header)
    assert any("vpngw-1\\nvpn_gateway" in line for line in header)
    assert any("body\\nvpn_gateway: x.json" in line for line in header)
    data = yaml.safe_load(text)
    assert data["vpn_gateway"]["public_ip"] == CLOUD_IP
    assert data["tunnels"][0]["name"] == "idc-shanghai"
    parse_spec(data)


def test_matrix_file_values_are_menu_values(tmp_path):
    for dims in ({"ike_version": ["v2\n}"]}, {"ike_encryption": ["AES-128 # x"]},
                 {"bad\ndimension": ["v1"]}):
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump({"dimensions": dims}))
        with pytest.raises(LabError) as info:
            load_matrix_file(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


# -- files that are not UTF-8 ------------------------------------------------------------------

LATIN1 = "# café: ISO-8859-1, not UTF-8\n".encode("latin-1")


def _assert_names_file(run: subprocess.CompletedProcess[str], path: Path) -> None:
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(path) in run.stderr.replace("\n", "")
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr


@pytest.fixture
def bad(tmp_path) -> Path:
    path = tmp_path / "latin1.txt"
    path.write_bytes(LATIN1 + b"tunnels: []\n")
    return path


def test_cli_spec_not_utf8_or_unreadable(bad, tmp_path):
    for command in (["validate"], ["render", "-o", str(tmp_path / "out")], ["export"],
                    ["advise", "--customer-config", str(EXAMPLES / "default.yaml")]):
        run = _cli(*command[:1], str(bad), *command[1:])
        _assert_names_file(run, bad)
        assert "is not UTF-8" in run.stderr
    run = _cli("validate", str(tmp_path))  # a directory
    _assert_names_file(run, tmp_path)
    assert "cannot read spec" in run.stderr


def test_cli_other_user_files_not_utf8(bad, tmp_path):
    spec = str(EXAMPLES / "default.yaml")
    _assert_names_file(_cli("import", str(bad), "-o", str(tmp_path / "s.yaml")), bad)
    _assert_names_file(_cli("matrix", spec, "--matrix", str(bad), "--backend", "netns",
                            "--limit", "0"), bad)
    _assert_names_file(_cli("matrix", spec, "--resume", str(bad), "--backend", "netns",
                            "--limit", "0"), bad)
    _assert_names_file(_cli("report", "merge", str(bad)), bad)
    _assert_names_file(_cli("advise", spec, "--customer-config", str(bad)), bad)
    ipsec_conf = EXAMPLES / "customer" / "ipsec.conf"
    _assert_names_file(_cli("advise", spec, "--customer-config", str(ipsec_conf),
                            "--secrets", str(bad)), bad)
    # `up --customer-config`: refused while reading the file, before any lab exists
    _assert_names_file(_cli("up", spec, "--name", "hardeningx", "--backend", "netns",
                            "--customer-config", str(bad)), bad)


def test_includes_not_utf8(bad, tmp_path):
    swanctl = tmp_path / "swanctl.conf"
    swanctl.write_text(f"connections {{\n}}\ninclude {bad}\n")
    ipsec = tmp_path / "ipsec.conf"
    ipsec.write_text(f"include {bad}\nconn x\n    auto=add\n")
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text(f"include {bad.name}\n")
    spec = str(EXAMPLES / "default.yaml")
    for command in (  # `up`: refused while reading the config, before any lab exists
            ["up", spec, "--name", "hardeningx", "--backend", "netns", "--customer-config",
             str(swanctl)],
            ["advise", spec, "--customer-config", str(ipsec)],
            ["advise", spec, "--customer-config", str(EXAMPLES / "customer" / "ipsec.conf"),
             "--secrets", str(secrets)]):
        run = _cli(*command)
        _assert_names_file(run, bad)
        assert "include" in run.stderr and "is not UTF-8" in run.stderr


def test_a_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (EXAMPLES / "default.yaml").read_bytes())
    run = _cli("validate", str(path))
    assert run.returncode == 0, run.stderr


# -- env: pre-shared keys ----------------------------------------------------------------------

V1MAIN = EXAMPLES / "ikev1-main.yaml"


def _unset() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "IPSEC_LAB_PSK_V1MAIN"}


def _cli_unset(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600, check=False,
                          env=_unset())


def test_validate_notes_an_unset_env_key_and_exits_0():
    run = _cli_unset("validate", str(V1MAIN))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout.replace("\n", " ")
    assert "valid" in out
    assert "note: tunnels[0].pre_shared_key: environment variable IPSEC_LAB_PSK_V1MAIN is not " \
           "set" in out


@pytest.mark.parametrize("command", [
    ["render", str(V1MAIN), "-o", "{tmp}/out"],
    ["export", str(V1MAIN), "--include-psk"],
    ["up", str(V1MAIN), "--name", "hardeningx", "--backend", "netns"],
    ["matrix", str(V1MAIN), "--backend", "netns", "--limit", "0"],
    ["scenario", "dpd", str(V1MAIN), "--backend", "netns"],
], ids=lambda c: c[0])
def test_an_unset_env_key_is_an_error_where_the_key_is_needed(command, tmp_path):
    run = _cli_unset(*[c.format(tmp=tmp_path) for c in command], cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    err = run.stderr.replace("\n", " ")
    assert "tunnels[0].pre_shared_key: environment variable IPSEC_LAB_PSK_V1MAIN is not set" in err
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_export_without_the_key_needs_no_variable():
    run = _cli_unset("export", str(V1MAIN))
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["VpnConnectionName"] == "tunnel-ikev1-main"


def test_unset_key_in_a_checked_spec_fails_where_it_is_read(monkeypatch):
    monkeypatch.delenv("MY_PSK", raising=False)
    data = copy.deepcopy(BASE)
    data["tunnels"].append({**copy.deepcopy(BASE["tunnels"][0]), "name": "t2",
                            "pre_shared_key": "env:MY_PSK",
                            "customer_gateway": {"public_ip": "198.51.100.3"},
                            "spd_rules": [{"local": ["10.0.2.0/24"], "peer": ["192.168.2.0/24"]}]})
    spec = parse_spec(data, need_keys=False)
    assert unset_keys(spec) == [("tunnels[1].pre_shared_key", "MY_PSK")]
    key = spec.tunnels[1].pre_shared_key
    assert isinstance(key, UnsetKey)
    with pytest.raises(LabError, match=r"tunnels\[1\].pre_shared_key: environment variable MY_PSK"):
        key.get_secret_value()
    with pytest.raises(LabError, match="MY_PSK"):
        dump_spec(spec)
    with pytest.raises(LabError, match="MY_PSK"):
        build_plan(spec, "t", LIBIPSEC)
    with pytest.raises(SpecInvalid, match="environment variable MY_PSK is not set"):
        parse_spec(data)
    monkeypatch.setenv("MY_PSK", "now-set")
    assert parse_spec(data).tunnels[1].pre_shared_key.get_secret_value() == "now-set"
    assert unset_keys(parse_spec(data, need_keys=False)) == []


# -- matrix results stay out of the working tree -------------------------------------------------

ONE_CASE = ["ike_version=v2", "ike_encryption=AES-128", "ike_integrity=SHA256", "dh_group=DH14",
            "local_id_type=address", "peer_id_type=address", "ipsec_encryption=AES-128",
            "ipsec_integrity=SHA1", "pfs=disable,DH14"]


@pytest.mark.integration
def test_matrix_without_results_writes_nothing_into_the_current_directory(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    prefix = f"hd{os.getpid() % 1000}"
    only = [arg for o in ONE_CASE for arg in ("--only", o)]
    try:
        run = _cli("matrix", "--backend", "netns", "--jobs", "1", "--no-negatives", "--name",
                   prefix, *only, cwd=tmp_path)
    finally:
        lifecycle.down(f"{prefix}-1")
    said = " ".join(run.stdout.split())
    found = [Path(p) for p in re.findall(r"results: (/\S+\.jsonl)", said)]
    records = []
    for path in found:
        if path.parent == labstate.ROOT / "matrix_results" and path.exists():
            records = path.read_text().splitlines()
            path.unlink()
    assert run.returncode == 0, run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == []
    assert found and found[-1].parent == labstate.ROOT / "matrix_results", said
    assert "(the default place; --results FILE chooses)" in said
    assert len(records) == 2


# -- one lab name, two `up`s at once ----------------------------------------------------------------
@pytest.mark.integration
def test_concurrent_up_of_one_name_exactly_one_wins_and_nothing_is_half_built():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    name = f"race{os.getpid() % 1000}"
    lifecycle.down(name)
    argv = [sys.executable, "-c", "from lab.cli import main; main()", "up",
            str(ROOT / "configs" / "examples" / "default.yaml"), "--name", name, "--backend", "netns"]
    try:
        procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        done = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
        codes = sorted(rc for rc, _ in done)
        assert codes == [0, 2], done
        loser = next(err for rc, err in done if rc == 2)
        assert f"lab {name!r} is already up" in loser and "Traceback" not in loser, loser
        # the winner's lab is whole: the loser tore nothing down
        assert labstate.load(name).phase == "up"
        assert _cli("check", "--name", name).returncode == 0
    finally:
        lifecycle.down(name)
    assert name not in lifecycle.all_names()


# -- secrets: where the pre-shared key may be, and where never --------------------------------------
def _private(path: Path, top: Path) -> bool:
    """Only the owner can reach `path`: it is closed to group and others, or a directory between
    it and `top` is."""
    if path.stat().st_mode & 0o077 == 0:
        return True
    return any(d.stat().st_mode & 0o077 == 0 for d in path.parents if top in d.parents)


@pytest.mark.integration
def test_the_pre_shared_key_stays_in_private_files_and_out_of_every_report(tmp_path):
    """After up, check, status, a matrix and a scenario: the key is in no output, report or log,
    and every file holding it is private (0600 in 0700 directories)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    psk = "lab-default-psk-change-me"  # configs/examples/default.yaml
    name, prefix = f"aud{os.getpid() % 1000}", f"ma{os.getpid() % 1000}"
    out = tmp_path / "out"
    runs = []
    try:
        runs.append(_cli("up", "configs/examples/default.yaml", "--name", name, "--backend", "netns"))
        runs.append(_cli("check", "--name", name, "--json"))
        runs.append(_cli("status", "--name", name, "--json"))
        runs.append(_cli("matrix", "--strategy", "sweep", "--limit", "3", "--jobs", "1",
                         "--backend", "netns", "--name", prefix, "--results", str(out / "m.jsonl"),
                         "--json", str(out / "m.json"), "--junit", str(out / "m.xml"),
                         "--html", str(out / "m.html")))
        runs.append(_cli("scenario", "negotiation", "--type", "active", "--name", f"sa{os.getpid() % 1000}",
                         "--json", str(out / "s.json"), "--junit", str(out / "s.xml"),
                         "--html", str(out / "s.html")))
        assert [r.returncode for r in runs] == [0, 0, 0, 0, 0], [r.stderr[-400:] for r in runs]
        for r in runs:
            assert psk not in r.stdout and psk not in r.stderr
        reports = sorted(out.iterdir())
        assert len(reports) == 7
        for path in reports:
            assert psk.encode() not in path.read_bytes(), path
        holding = []
        for path in labstate.ROOT.rglob("*"):
            if path.is_socket():
                assert _private(path, labstate.ROOT), path
            if not path.is_file():
                continue
            if psk.encode() in path.read_bytes():
                holding.append(path.name)
                assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
                assert _private(path.parent, labstate.ROOT), path.parent
            if path.suffix in (".log", ".jsonl", ".json"):
                assert psk.encode() not in path.read_bytes(), path
        assert "spec.yaml" in holding and "swanctl.conf" not in holding  # rendered base64 (0s...)
    finally:
        lifecycle.down(name)


# -- kill -9 of the orchestrator in the middle of its work, then `down` ---------------------------
def _gone(name: str) -> list[str]:
    """What of lab `name` is still there: state, namespaces, processes started for it."""
    from lab.backends import get_backend

    left = get_backend("netns").leftovers(name)
    if labstate.lab_dir(name).exists():
        left.append(f"state directory {labstate.lab_dir(name)}")
    found = subprocess.run(["pgrep", "-f", f"ipsec-lab/{name}/"], capture_output=True, text=True)
    left += [f"process {pid}" for pid in found.stdout.split()]
    return left


KILL_POINTS = {  # command (after `{name}` is filled in) and seconds after its start to kill it
    "check": (["check", "--name", "{name}"], (0.4, 1.2, 2.5)),
    "matrix": (["matrix", "--strategy", "sweep", "--limit", "8", "--jobs", "1", "--backend", "netns",
                "--name", "{name}", "--results", "/dev/null"], (0.8, 2.0, 4.0)),
    "scenario": (["scenario", "negotiation", "--type", "active", "--name", "{name}"], (0.8, 2.0, 4.0)),
}


@pytest.mark.integration
@pytest.mark.parametrize("command", sorted(KILL_POINTS))
def test_kill_9_of_the_orchestrator_then_down_leaves_nothing(command):
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and strongSwan daemons")
    argv, points = KILL_POINTS[command]
    for n, delay in enumerate(points):
        name = f"k{command[:2]}{os.getpid() % 1000}{n}"
        labs = [f"{name}-1"] if command == "matrix" else [name]
        try:
            if command == "check":
                assert _cli("up", "configs/examples/default.yaml", "--name", name, "--backend",
                            "netns").returncode == 0
            proc = subprocess.Popen([sys.executable, "-c", "from lab.cli import main; main()",
                                     *(a.format(name=name) for a in argv)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        finally:
            for lab in labs:
                done = _cli("down", "--name", lab)
                assert done.returncode == 0, done.stderr
        for lab in labs:
            assert _gone(lab) == [], (command, delay, lab)


# -- limits ------------------------------------------------------------------------------------------
def test_a_spec_file_larger_than_the_limit_is_refused_naming_it(tmp_path):
    from lab.errors import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    done = _cli("validate", str(big))
    assert done.returncode == 2 and f"{big}: spec is larger than 1024 KiB" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_more_tunnels_than_a_lab_runs_is_refused_before_anything_exists():
    from lab.plan import MAX_TUNNELS, build_plan

    data = yaml.safe_load((ROOT / "configs" / "examples" / "default.yaml").read_text())
    one = data["tunnels"][0]
    data["tunnels"] = [{**one, "name": f"t{i}",
                        "customer_gateway": {**one["customer_gateway"],
                                             "public_ip": f"198.51.100.{i + 2}"},
                        "spd_rules": [{"local": [f"10.0.{i}.0/24"], "peer": [f"192.168.{i}.0/24"]}]}
                       for i in range(MAX_TUNNELS + 1)]
    spec = parse_spec(data)
    with pytest.raises(LabError, match=f"tunnels: {MAX_TUNNELS + 1} tunnels; a lab runs at most"):
        build_plan(spec, "limits", Dataplane("kernel", "test"))

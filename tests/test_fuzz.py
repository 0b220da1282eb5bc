"""Every parser of user input, fuzzed: any input gives a result or a clear LabError (naming the
file, line or field), never another exception; and what the lab writes, its own readers read
back as meant. Property-based (hypothesis), with a fixed seed budget so a run is bounded."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.cloudapi import import_tunnel
from lab.customer.translate import merge_strongswan_conf, settings_text, translate_ipsec_conf
from lab.errors import LabError
from lab.ipsecconf import parse_ipsec_conf, parse_secrets
from lab.matrix.cases import load_matrix_file
from lab.spec import load_spec, parse_spec
from lab.swanctl import LIST_KEYS, parse
from lab.swanctl_load import read as read_swanctl
from tests.conftest import EXAMPLES

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# text that looks like the configs it is fed to: their punctuation, keywords and line breaks
CONFIG_WORDS = st.sampled_from([
    "connections", "children", "secrets", "local", "remote", "include", "conn", "config", "setup",
    "left", "right", "leftsubnet", "rightsubnet", "auto", "add", "start", "route", "also", "%default",
    "ike", "esp", "keyexchange", "ikev1", "ikev2", "proposals", "=", "{", "}", "#", "\"", "\\", ":",
    "PSK", "%any", "10.0.0.0/24", "198.51.100.2", "203.0.113.1", "aes128-sha256-modp2048", "\n",
    "\n  ", "\t", " ", "charon", "plugins", "load", "filelog", "yes", "no", "30s", "1h", "9m",
])
CONFIG_TEXT = st.one_of(
    st.lists(CONFIG_WORDS, max_size=60).map(" ".join),
    st.lists(CONFIG_WORDS, max_size=60).map("".join),
    st.text(max_size=300),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**33, 2**33) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=6),
    max_leaves=30,
)


def _spec_like() -> st.SearchStrategy[dict]:
    """Mostly valid-looking specs with one part replaced by anything."""
    base = json.loads(json.dumps(_default_spec()))
    return st.tuples(st.sampled_from(sorted(_paths(base))), JSON).map(
        lambda pv: _replace(base, pv[0], pv[1]))


def _default_spec() -> dict:
    import yaml

    return yaml.safe_load((EXAMPLES / "default.yaml").read_text())


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*prefix, i))


def _replace(data, path, value):
    data = json.loads(json.dumps(data))
    if not path:
        return value
    holder = data
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return data


def _clear_or_result(call):
    """The call returns, or raises a LabError that says something; nothing else."""
    try:
        return call()
    except LabError as exc:
        assert str(exc).strip(), "an error without a message"
        return None


@FUZZ
@given(_spec_like())
def test_spec_loader_and_rules(data):
    _clear_or_result(lambda: parse_spec(data, "fuzzed.yaml", need_keys=False))


@FUZZ
@given(JSON)
def test_spec_loader_on_anything(data):
    _clear_or_result(lambda: parse_spec(data, "fuzzed.yaml", need_keys=False))


@FUZZ
@given(st.binary(max_size=400))
def test_spec_file_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_bytes(raw)
    _clear_or_result(lambda: load_spec(path, need_keys=False))


@FUZZ
@given(CONFIG_TEXT)
def test_swanctl_reader(text):
    _clear_or_result(lambda: parse(text, "fuzzed-swanctl.conf"))


@FUZZ
@given(CONFIG_TEXT)
def test_users_swanctl_conf_through_swanctl(tmp_path_factory, text):
    """A user's file goes through strongSwan's swanctl: its words, or the tree, never a traceback."""
    path = tmp_path_factory.mktemp("swanctl") / "swanctl.conf"
    path.write_text(text)
    _clear_or_result(lambda: read_swanctl(path, "--customer-config"))


@FUZZ
@given(CONFIG_TEXT)
def test_ipsec_conf_reader_and_translator(text):
    _clear_or_result(lambda: parse_ipsec_conf(text, "fuzzed-ipsec.conf"))
    _clear_or_result(lambda: translate_ipsec_conf(text, "fuzzed-ipsec.conf", None, None))


@FUZZ
@given(CONFIG_TEXT)
def test_ipsec_secrets_reader(text):
    _clear_or_result(lambda: parse_secrets(text, "fuzzed-ipsec.secrets"))


@FUZZ
@given(CONFIG_TEXT)
def test_strongswan_conf_merge(text):
    tree = _clear_or_result(lambda: parse(text, "fuzzed-strongswan.conf"))
    if tree is not None:
        _clear_or_result(lambda: merge_strongswan_conf(tree, "fuzzed-strongswan.conf"))


@FUZZ
@given(JSON)
def test_cloud_json_import(data):
    _clear_or_result(lambda: import_tunnel(data))


@FUZZ
@given(JSON)
def test_matrix_file_loader(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("matrix") / "matrix.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    _clear_or_result(lambda: load_matrix_file(path))


# -- what the lab writes, read back ------------------------------------------------------------
KEY = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=10).filter(
    lambda k: k != "include")
VALUE = st.text(string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
                .replace("\n", ""), max_size=20)
TREE = st.recursive(st.dictionaries(KEY, VALUE, max_size=4),
                    lambda inner: st.dictionaries(KEY, inner | VALUE, max_size=4), max_leaves=12)


@FUZZ
@given(TREE)
def test_settings_text_reads_back_as_written(tree):
    """A settings tree the lab writes (a merged strongswan.conf, a translated swanctl.conf) is
    read back by the lab's swanctl.conf reader as the same tree: quoting holds for any value."""
    assert parse(settings_text(tree), "written") == _as_read(tree)


def _as_read(tree):
    """Values as the reader gives them: surrounding blanks of unquoted values are not kept
    (settings_text quotes those, so nothing changes); a key swanctl sends as a list
    (lab.swanctl.LIST_KEYS, at any depth) is split at its commas."""
    return {k: _as_read(v) if isinstance(v, dict) else
            [p.strip() for p in v.split(",") if p.strip()] if k in LIST_KEYS else v
            for k, v in tree.items()}


def test_fuzzing_covers_the_example_files():
    """The examples themselves load (the fuzzers start from them)."""
    for path in sorted(Path(EXAMPLES).glob("*.yaml")):
        if path.name.startswith("ikev1-main"):
            continue  # its key comes from the environment
        try:
            load_spec(path)
        except LabError as exc:
            pytest.fail(f"{path}: {exc}")

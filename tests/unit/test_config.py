"""Configuration parsing: defaults, every key's type check, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Dict

import pytest

from gtp5g_operator.config import Config, ConfigError, describe_changes
from gtp5g_operator.config import parse_config as parse_with
from gtp5g_operator.config.parse import sections
from gtp5g_operator.service.vocabulary import VOCABULARY, example_config
from gtp5g_operator.service.vocabulary import load as load_config
from testbed.toml_write import toml_value

REPO = Path(__file__).resolve().parents[2]


def parse_config(text: str, source: str = "config.toml") -> Config:
    return parse_with(text, VOCABULARY, source)


def test_empty_file_gives_documented_defaults() -> None:
    cfg = parse_config("")
    assert cfg.trace.pipe == "auto"
    assert cfg.match.comm == ("nr-gnb",) and cfg.match.exe == () and cfg.match.uid == ()
    assert cfg.api.url == "http://127.0.0.1:8080"
    assert cfg.api.public_key == "/etc/gtp5g-operator/jwt_public_key.pem"
    assert cfg.api.timeout == 5.0
    s = cfg.strategy
    assert (s.priority, s.execution_time_ns, s.targets, s.mode) == (True, 20_000_000, "both",
                                                                    "overwrite")
    assert (s.resync_interval, s.liveness_interval, s.clear_on_stop) == (10.0, 5.0, False)


def test_values_are_read() -> None:
    cfg = parse_config("""
[trace]
pipe = "/sys/kernel/debug/tracing/trace_pipe"
[match]
comm = ["nr-gnb", "nr-gnb2"]
exe = ["/usr/bin/nr-gnb"]
uid = [0, 1000]
[api]
url = "https://gthulhu.example:8443/"
timeout = 2
[strategy]
priority = 10
execution_time_ns = 5000000
targets = "tgid"
clear_on_stop = true
""")
    assert cfg.match.uid == (0, 1000) and cfg.match.exe == ("/usr/bin/nr-gnb",)
    assert cfg.api.url == "https://gthulhu.example:8443"  # trailing slash dropped
    assert cfg.api.timeout == 2.0 and isinstance(cfg.api.timeout, float)
    assert cfg.strategy.priority == 10 and cfg.strategy.targets == "tgid"


BAD: Dict[str, str] = {
    'trace.pipe': '[trace]\npipe = "relative/path"',
    'trace.allow_pid_namespace': '[trace]\nallow_pid_namespace = "yes"',
    'match.comm': '[match]\ncomm = "nr-gnb"',
    'match.comm ': '[match]\ncomm = ["a-name-longer-than-15"]',
    'match.comm  ': '[match]\ncomm = []',
    'match.exe': '[match]\nexe = ["nr-gnb"]',
    'match.uid': '[match]\nuid = [-1]',
    'match.uid ': '[match]\nuid = ["root"]',
    'api.url': '[api]\nurl = "ftp://x"',
    'api.public_key': '[api]\npublic_key = 5',
    'api.timeout': '[api]\ntimeout = 0',
    'api.timeout ': '[api]\ntimeout = true',
    'api.ca_file': '[api]\nca_file = "rel.pem"',
    'strategy.priority': '[strategy]\npriority = "high"',
    'strategy.execution_time_ns': '[strategy]\nexecution_time_ns = "20ms"',
    'strategy.execution_time_ns ': '[strategy]\nexecution_time_ns = 0',
    'strategy.targets': '[strategy]\ntargets = "all"',
    'strategy.mode': '[strategy]\nmode = "append"',
    'metrics.listen': '[metrics]\nlisten = "localhost"',
    'metrics.allow_remote': '[metrics]\nallow_remote = "yes"',
    'metrics.textfile': '[metrics]\ntextfile = "x.prom"',
    'strategy.resync_interval': '[strategy]\nresync_interval = -1',
    'strategy.liveness_interval': '[strategy]\nliveness_interval = "5s"',
    'strategy.clear_on_stop': '[strategy]\nclear_on_stop = 1',
    'log.level': '[log]\nlevel = "loud"',
}


@pytest.mark.parametrize("key", sorted(BAD))
def test_wrong_values_name_the_key(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BAD[key], "/etc/x/config.toml")
    message = str(err.value)
    assert message.startswith(f"/etc/x/config.toml: {key.strip()}: expected")
    assert "\n" not in message


def test_error_shows_the_bad_value() -> None:
    with pytest.raises(ConfigError, match=r'execution_time_ns: expected a positive integer '
                                          r'\(nanoseconds\), got "20ms"'):
        parse_config(BAD["strategy.execution_time_ns"])


@pytest.mark.parametrize("key,value", [("password_file", "S3cr3t-Passw0rd!"),
                                       ("username", "S3cr3t-Passw0rd!\x07")])
def test_a_secret_typed_into_a_credential_key_is_not_echoed(key: str, value: str) -> None:
    # The one place a person may paste the password by mistake: the error goes to the
    # journal and into doctor's output, so it names the key and not the value.
    with pytest.raises(ConfigError) as err:
        parse_config(f"[api]\n{key} = {json.dumps(value)}\n", "/etc/x/config.toml")
    message = str(err.value)
    assert message.startswith(f"/etc/x/config.toml: api.{key}: expected")
    assert "S3cr3t" not in message and "not shown" in message


@pytest.mark.parametrize("text,where", [
    ('[strategy]\nexecution_time = 1', "strategy.execution_time: unknown key"),
    ('[stratgy]\npriority = true', "stratgy: unknown section"),
    ('top = 1', "top: unknown key outside any table"),
    # a key above its table's header: it was called an "unknown section"
    ('level = "debug"\n[log]',
     r"level: a key outside any table: put it under \[log\] \(log.level\)"),
    ('strategy = 1', "strategy: expected a table"),
])
def test_unknown_keys_are_errors(text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        parse_config(text)


@pytest.mark.parametrize("text", [
    '[api]\nurl = "http://[fe80::1%eth0]:8080"',
    '[api]\nurl = "http://[fe80::1%25eth0]:8080"',  # RFC 6874's form: interface "25eth0"
    '[api]\nurl = "http://[fe80::1]:8080"',  # link-local without its zone: EINVAL
    '[api]\nurl = "https://[fd00::2%eth0]"',
    '[api]\ndecision_maker_url = "http://[fe80::1%eth0]:8080"',
    '[metrics]\nlisten = "[fe80::1%eth0]:9469"\nallow_remote = true',
    '[metrics]\nlisten = "[fe80::1]:9469"\nallow_remote = true',
])
def test_ipv6_zone_ids_and_link_local_addresses_are_refused(text: str) -> None:
    # socket.connect()/bind() drop the text's zone: every push (or the endpoint) would
    # fail with "Invalid argument" or "Name or service not known" after check-config's ok.
    key = text.split("\n")[0].strip("[]") + "." + text.split("\n")[1].split(" ")[0]
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/x/config.toml")
    assert str(err.value).startswith(f"/etc/x/config.toml: {key}: expected no IPv6 zone id")


@pytest.mark.parametrize("text", [
    '[api]\nurl = "http://[::1]:8080"', '[api]\nurl = "http://[fd00::2]:8080"',
    '[api]\nurl = "http://169.254.1.1:8080"', '[metrics]\nlisten = "[::1]:9469"',
])
def test_other_ip_literals_are_still_taken(text: str) -> None:
    parse_config(text)


@pytest.mark.parametrize("url", ["http://[::1/", "http://[gthulhu]:8080/", "http://]x[:1",
                                 "http://[::1]x:1/", "http://[127.0.0.1]:8080"])
def test_a_url_urlsplit_refuses_is_named_and_shown(url: str) -> None:
    # urlsplit's own words ("Invalid IPv6 URL", "':1' does not appear to be an IPv4 or
    # IPv6 address") showed neither the value nor what is expected.
    with pytest.raises(ConfigError) as err:
        parse_config(f'[api]\nurl = "{url}"', "/etc/x/config.toml")
    assert str(err.value).startswith(
        f'/etc/x/config.toml: api.url: expected an http:// or https:// URL with a host '
        f'(and no user, query or fragment), got "{url}"')


@pytest.mark.parametrize("key", ["url", "decision_maker_url"])
@pytest.mark.parametrize("tail", ["?api_key=s3cr3t", "/?s3cr3t", "#s3cr3t", "/gthulhu?x=1#s3cr3t"])
def test_a_query_or_fragment_is_refused_without_showing_it(key: str, tail: str) -> None:
    # It may hold a gateway's key, and the error goes to the journal (a rejected reload)
    with pytest.raises(ConfigError) as err:
        parse_config(f'[api]\n{key} = "http://127.0.0.1:8080{tail}"', "/etc/x/config.toml")
    head = "http://127.0.0.1:8080" + tail.split("?")[0].split("#")[0]
    assert str(err.value) == (f'/etc/x/config.toml: api.{key}: expected a URL without a query '
                              f'or fragment, got "{head}" followed by one (not shown)')


def test_a_urls_scheme_and_host_are_taken_in_lower_case_and_its_path_as_typed() -> None:
    # "HTTP://" was kept as typed: a reload that only changed the case moved this host
    cfg = parse_config('[api]\nurl = "HTTPS://Gthulhu.Example:8443/Gthulhu/"\n'
                       'decision_maker_url = "HTTP://[FD00::2]:8080"')
    assert cfg.api.url == "https://gthulhu.example:8443/Gthulhu"
    assert cfg.api.decision_maker_url == "http://[fd00::2]:8080"


@pytest.mark.parametrize("url", ["http://[::1]:/", "http://127.0.0.1:/", "https://gthulhu.example:"])
def test_an_empty_port_is_refused(url: str) -> None:
    # urlsplit reads "host:" as no port at all: the URL was taken, ":" and all.
    with pytest.raises(ConfigError) as err:
        parse_config(f'[api]\nurl = "{url}"', "/etc/x/config.toml")
    assert str(err.value) == (f'/etc/x/config.toml: api.url: expected a port from 1 to 65535, '
                              f'got "{url}"')


def test_toml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"c.toml: invalid TOML: .*line 3, column"):
        parse_config('[api]\nurl = "x"\ntimeout = = 3\n', "c.toml")


def test_a_byte_order_mark_is_named_not_left_to_line_1_column_1(tmp_path: Path) -> None:
    # tomllib said "Invalid statement (at line 1, column 1)" of a line that reads right.
    main = tmp_path / "config.toml"
    main.write_bytes(b'\xef\xbb\xbf[log]\nlevel = "debug"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(main))
    assert str(err.value) == (f"{main}: invalid TOML: the file starts with a byte order mark "
                              "(bytes EF BB BF), which TOML does not allow: save it as UTF-8 "
                              "without a BOM")


def test_a_byte_that_is_not_utf8_is_placed_by_line_and_column(tmp_path: Path) -> None:
    # An editor's Latin-1 "é" in a comment: the error said only "(byte 43)".
    main = tmp_path / "config.toml"
    main.write_bytes(b'[log]\nlevel = "debug"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(main))
    assert str(err.value) == (f"{main}: configuration is not UTF-8 (at line 3, column 6): "
                              "save it as UTF-8")


def test_timeout_must_be_below_resync() -> None:
    with pytest.raises(ConfigError, match=r"api\.timeout: must be shorter than"):
        parse_config("[api]\ntimeout = 20\n[strategy]\nresync_interval = 10")


def test_example_config_is_valid_and_documents_every_default() -> None:
    text = (REPO / "packaging" / "config.toml").read_text()
    assert text == example_config(), "packaging/config.toml is stale: run make example-config"
    assert parse_config(text) == Config(source="config.toml", origins={})
    defaults = Config()
    for section in sections():  # every key of the schema, so a new key cannot be forgotten
        values = getattr(defaults, section)
        for f in dataclasses.fields(values):
            shown = toml_value(getattr(values, f.name))
            assert f"# {f.name} = {shown}" in text, (
                f"{section}.{f.name} not documented with its default {shown} in the example")


def test_the_readmes_configuration_table_is_the_schema() -> None:
    """README's reference table has a row for every key of the schema, none more,
    each with the schema's default as TOML writes it."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+\.\w+)` \| `([^`]*)` \|", table, re.MULTILINE)
    documented = dict(rows)
    assert len(documented) == len(rows), "a key has two rows"
    defaults = Config()
    schema = {f"{section}.{f.name}": toml_value(getattr(getattr(defaults, section), f.name))
              for section in sections() for f in dataclasses.fields(getattr(defaults, section))}
    assert documented == schema


def test_every_document_that_states_the_file_rule_says_root_must_own_the_file(
        tmp_path: Path) -> None:
    """A file only root can write but owned by another user (a drop-in that
    configuration management wrote with `owner: gnb`, mode 0644) is refused: "owned by
    uid N; must be owned by root".  README, gtp5g-operator(8) and the example's header
    said only that other users must not be able to write the files, which that one
    satisfies.  Every passage that states the rule must state the owner too."""
    from gtp5g_operator.config import check_not_writable_by_others

    mine = tmp_path / "50-site.toml"
    mine.write_text("")
    mine.chmod(0o644)
    with pytest.raises(ConfigError, match="must be owned by root"):
        check_not_writable_by_others(str(mine), _stat_owned_by(mine, 4321))
    rule = re.compile(r"other\s+users\s+(?:can(?:not)?\s+)?writ|writable\s+by\s+other\s+users")
    passages = []
    for doc in ("README.md", "packaging/gtp5g-operator.8", "packaging/config.toml"):
        text = (REPO / doc).read_text()
        # paragraphs (README, the example file) or a man page's sections and paragraphs
        for part in re.split(r"\n\s*\n|\n\* |\n\.(?:SH|PP|TP)\b", text):
            flat = " ".join(part.replace("#", " ").split())
            if rule.search(flat):
                passages.append((doc, flat))
    assert len(passages) >= 3, passages  # README's twice, the man page's, the example's
    unsaid = [(doc, flat[:120]) for doc, flat in passages if "owned by root" not in flat]
    assert not unsaid, unsaid


def _stat_owned_by(path: Path, uid: int) -> os.stat_result:
    """path's stat as if `uid` owned it (chown would need root)."""
    st = list(os.stat(path))
    st[4] = uid  # st_uid
    return os.stat_result(st)


# --- load_config: files ------------------------------------------------------------


def write_key(path: Path, pem: bytes) -> Path:
    path.write_bytes(pem)
    return path


def test_load_reads_and_validates_the_key(tmp_path: Path, keys: Dict[str, Path]) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[api]\npublic_key = "{keys["public"]}"\n')
    cfg = load_config(str(cfg_path))
    assert cfg.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert cfg.source == str(cfg_path)


@pytest.mark.parametrize("content,message", [
    (None, "cannot read public key: No such file"),
    (b"garbage", "not a PEM public key"),
    (b"\xff\xfe", "public key is not UTF-8"),
])
def test_bad_key_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    key = tmp_path / "key.pem"
    if content is not None:
        key.write_bytes(content)
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[api]\npublic_key = "{key}"\n')
    with pytest.raises(ConfigError, match=message) as err:
        load_config(str(cfg_path))
    assert str(key) in str(err.value)


def test_non_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = write_key(tmp_path / "ec.pem", pem)
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[api]\npublic_key = "{key}"\n')
    with pytest.raises(ConfigError, match="not an RSA key"):
        load_config(str(cfg_path))


def test_a_pkcs1_key_is_refused_before_the_server_calls_it_not_our_pair(
        tmp_path: Path, keys: Dict[str, Path]) -> None:
    # Gthulhu's servers parse the key as PKIX only (util.PEMToRSAPublicKey): a PKCS#1
    # copy of the right key (openssl rsa -RSAPublicKey_out) got a 401 at every push,
    # logged as "not the pair of the server's JWT private key".
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(keys["public"].read_bytes())
    key = write_key(tmp_path / "pkcs1.pem", public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[api]\npublic_key = "{key}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_path))
    assert str(err.value) == (
        f"{key}: api.public_key: a PKCS#1 key (BEGIN RSA PUBLIC KEY); the API takes only the "
        f"PKIX form (BEGIN PUBLIC KEY): convert it with openssl rsa -RSAPublicKey_in -pubout "
        f"-in {key}")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.toml: cannot read configuration: No such"):
        load_config(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("mode", [0o666, 0o646])
def test_files_writable_by_others_are_refused(tmp_path: Path, keys: Dict[str, Path],
                                              mode: int) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[api]\npublic_key = "{keys["public"]}"\n')
    os.chmod(cfg_path, mode)
    with pytest.raises(ConfigError, match=r"writable by other users .*chmod go-w"):
        load_config(str(cfg_path))


def test_describe_changes() -> None:
    a = parse_config("")
    b = parse_config("[strategy]\nexecution_time_ns = 1\n[trace]\npipe = \"/x\"")
    assert describe_changes(a, b) == ("trace.pipe", "strategy.execution_time_ns")
    assert describe_changes(a, a) == ()


def test_missing_key_says_what_to_do(tmp_path: Path) -> None:
    """The packaged configuration on a fresh host: the error names the key and the fix."""
    key = tmp_path / "jwt_public_key.pem"
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[api]\npublic_key = "{key}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_path))
    text = str(err.value)
    assert text.startswith(f"{key}: cannot read public key")
    assert f"api.public_key, set in {cfg_path}" in text
    assert "install the Gthulhu server's JWT public key" in text
    assert 'api.flavor = "manager"' in text


def test_missing_config_directory_names_the_file(tmp_path: Path) -> None:
    """A fresh host (or a clone) without /etc/gtp5g-operator: the error is about the
    configuration file, not about the directory config.d would be in."""
    with pytest.raises(ConfigError, match=r"nodir/config.toml: cannot read configuration: No such"):
        load_config(str(tmp_path / "nodir" / "config.toml"))

"""Properties of the configuration parser (config.parse_config): any TOML document
built from the schema's sections and keys, with hostile values, and any text.

Whatever the file says, the result is a Config or a ConfigError whose message is
one line that starts with the file's name and then names the key (or says the
TOML itself is invalid) — never another exception, which would be a traceback
at start, on reload or in check-config.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from typing import Any, Dict, List

from hypothesis import example, given
from hypothesis import strategies as st

from gtp5g_operator.config import Config, ConfigError, parse_config
from gtp5g_operator.config import values as v
from gtp5g_operator.config.load import ca_certificates, validate_public_key
from gtp5g_operator.config.parse import sections
from gtp5g_operator.service.vocabulary import VOCABULARY
from testbed.tls import SECP112R1_PUBLIC_KEY
from testbed.toml_write import Raw, toml_document
from tests.property.bounds import check_total, one_line
from tests.property.strategies import HOSTILE_NUMBERS, texts_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # the fallback the package uses too (a module-level alias: vermin accepts it)
    import tomli as tomllib

SOURCE = "/etc/gtp5g-operator/config.toml"
SCHEMA: Dict[str, List[str]] = {
    section: [f.name for f in dataclasses.fields(getattr(Config(), section))]
    for section in sections()}

# --- values: plausible ones (to get past one key to the next) and hostile ones ----------------

PLAUSIBLE = ["auto", "raw", "text", "v0", "decision-maker", "manager", "tgid", "tid", "both",
             "overwrite", "merge", "debug", "info", "/etc/gtp5g-operator/key.pem", "",
             "http://127.0.0.1:8080", "https://[::1]:8443/api", "127.0.0.1:9469", "[::1]:1",
             "0.0.0.0:9469", "nr-gnb", "node-1.example", "admin", 1, 5, 10.0, 0.1, 3600,
             20_000_000, True, False, ["nr-gnb"], ["/usr/bin/nr-gnb"], [0, 1000]]
HOSTILE = [*HOSTILE_NUMBERS, Raw("0x" + "f" * 5000), Raw("9" * 5000), Raw("-" + "9" * 5000),
           Raw("[" * 5000 + "]" * 5000), Raw("1e400"), Raw("0o777"), Raw("0b101"), "x" * 5000,
           "a\nb", "\x00", "\u2028",
           "http://user:pw@host", "http://[::1", "http://h:99999", "http://h:0", "1.2.3.4:",
           "[]:1", "::1:80", "/a\x00b", "é" * 20, [], [[]], [{}], {}, {"a": 1},
           [Raw("0x" + "f" * 5000)], ["x" * 20], datetime.datetime(2026, 1, 1, 12, 0),
           datetime.date(2026, 1, 1), datetime.time(12, 0)]

scalar = st.one_of(st.sampled_from(PLAUSIBLE), st.sampled_from(HOSTILE),
                   st.text(max_size=20), st.integers(), st.floats(), st.booleans())
toml_values = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


@st.composite
def documents(draw: st.DrawFn) -> Dict[str, Any]:
    doc: Dict[str, Any] = {}
    for section in draw(st.lists(st.one_of(st.sampled_from(list(sections())), st.text(max_size=8)),
                                 max_size=6, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            doc[section] = draw(toml_values)  # not a table at all
            continue
        known = SCHEMA.get(section, [])
        keys = draw(st.lists(st.one_of(st.sampled_from(known) if known else st.nothing(),
                                       st.text(max_size=8)), max_size=6, unique=True))
        doc[section] = {k: draw(toml_values) for k in keys}
    return doc


def error_paths(doc: Dict[str, Any]) -> List[str]:
    """What a ConfigError about `doc` may name right after the file's name."""
    paths = ["invalid TOML"]
    for section, body in doc.items():
        name = v.fmt(section)[1:-1]  # as the parser escapes an unknown name
        paths.append(name)
        if isinstance(body, dict):
            paths.extend(f"{section}.{v.fmt(k)[1:-1]}" for k in body)
    paths.extend(f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys)  # cross-key checks
    return paths


def judge(text: str, paths: List[str]) -> None:
    result = check_total(lambda: parse_config(text, VOCABULARY, SOURCE), returns=Config,
                         raises=(ConfigError,))
    if isinstance(result, ConfigError):
        message = str(result)
        assert one_line(message), repr(message)
        assert message.startswith(SOURCE + ": "), message
        rest = message[len(SOURCE) + 2:]
        assert any(rest.startswith(p + ": ") for p in paths), message


@given(documents())
@example({"trace": Raw("0x" + "f" * 5000)})  # repr() of the value refused: over 4,300 digits
@example({"strategy": {"execution_time_ns": Raw("0x" + "f" * 5000)}})
@example({"match": {"uid": [Raw("0x" + "f" * 5000)]}})
def test_any_schema_document_gives_a_config_or_a_one_line_error(doc: Dict[str, Any]) -> None:
    judge(toml_document(doc), error_paths(doc))


@given(st.one_of(st.text(max_size=300), documents().map(toml_document).flatmap(
    lambda text: st.integers(0, len(text)).map(lambda cut: text[:cut]))))
@example("a = " + "[" * 100_000 + "]" * 100_000)  # RecursionError inside tomllib
@example("a = " + "9" * 5000)  # tomllib's int() refuses it with a plain ValueError
def test_any_text_gives_a_config_or_a_one_line_error(text: str) -> None:
    judge(text, ["invalid TOML", *error_paths(_parsed_or_empty(text))])


def _parsed_or_empty(text: str) -> Dict[str, Any]:
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError):
        return {}


# --- the files a configuration names: the CA bundle and the public key ------------------------
# What cryptography and ssl raise on odd input is not one error type (TypeError for
# text that is not ASCII, UnsupportedAlgorithm for a curve the build lacks, SSLError,
# ValueError): whatever the file holds, load must say one line that names the file.

FILE = "/etc/gtp5g-operator/named.pem"


def _pems() -> List[str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "property test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ec_key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(ec_key, hashes.SHA256()))
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return [cert.public_bytes(serialization.Encoding.PEM).decode(),
            rsa_key.public_key().public_bytes(serialization.Encoding.PEM, public).decode(),
            ec_key.public_key().public_bytes(serialization.Encoding.PEM, public).decode(),
            SECP112R1_PUBLIC_KEY]


PEMS = _pems()
COMMENTS = ["# NetLock Arany (Class Gold) Főtanúsítvány\n", "\x00", "é", "\ufeff", "\r\n"]


@st.composite
def pem_files(draw: st.DrawFn) -> str:
    """PEM blocks, whole or damaged, with text between and around them."""
    parts = draw(st.lists(st.one_of(st.sampled_from(PEMS), texts_of(PEMS),
                                    st.sampled_from(COMMENTS), st.text(max_size=40)),
                          min_size=1, max_size=4))
    return "".join(parts)


def judge_file_error(result: object) -> None:
    if isinstance(result, ConfigError):
        message = str(result)
        assert one_line(message) and message.startswith(FILE + ": "), message


@given(pem_files())
@example(COMMENTS[0] + PEMS[0])
@example("-----BEGIN CERTIFICATE-----\né\n-----END CERTIFICATE-----\n")
def test_any_ca_file_gives_its_certificates_or_a_one_line_error(text: str) -> None:
    result = check_total(lambda: ca_certificates(text, FILE), returns=str,
                         raises=(ConfigError,))
    judge_file_error(result)
    if isinstance(result, str):
        assert result.isascii()  # what ssl's cadata takes, in every TLS context


@given(pem_files())
@example(SECP112R1_PUBLIC_KEY)
def test_any_public_key_file_is_an_rsa_key_or_a_one_line_error(text: str) -> None:
    judge_file_error(check_total(lambda: validate_public_key(text, FILE), returns=str,
                                 raises=(ConfigError,)))

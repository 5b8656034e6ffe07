"""Load the configuration: read the file and every file it names, validate all.

`load_config` is what the daemon (start and reload), `check-config` and
`doctor` call, so whatever it accepts the daemon can run with.  Files are
read through `files.read_regular_file`: regular files only, without
blocking, at most 1 MiB.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import ssl
import stat
from typing import Mapping

from ..files import FileProblem, read_regular_file
from .parse import ConfigError, parse_config
from .schema import CREDENTIAL_NAME, Config


def check_not_writable_by_others(path: str, st: os.stat_result) -> None:
    """Refuse files others could edit (like sshd's StrictModes).

    The file steers the CPU scheduler as root: if another user could edit it
    (or the key it names), that user could boost anything.
    """
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{path}: owned by uid {st.st_uid}; must be owned by root")
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0):
        raise ConfigError(f"{path}: writable by other users (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); run chmod go-w {path}")


def check_not_readable_by_others(path: str, st: os.stat_result) -> None:
    """A password file must be private to its owner (and root)."""
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"{path}: readable by other users (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); run chmod o-rw {path}")


def read_text(path: str, what: str, secret: bool = False) -> str:
    try:
        data, st = read_regular_file(path)
    except FileProblem as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None
    check_not_writable_by_others(path, st)
    if secret:
        check_not_readable_by_others(path, st)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 (byte {exc.start})") from None


def validate_public_key(pem: str, path: str) -> None:
    """The API only accepts an RSA public key in PKIX PEM: check that up front."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: api.public_key: not a PEM public key "
                          "(expected -----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{path}: api.public_key: not an RSA key "
                          f"({type(key).__name__.lstrip('_')}); the API needs RSA")


def validate_ca(pem: str, path: str) -> None:
    # A fresh context: create_default_context(cadata="") would quietly fall back
    # to the system CAs, and an empty or certificate-less file must be an error.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{path}: api.ca_file: no PEM certificate in it") from None
    if not context.cert_store_stats().get("x509"):  # also a pinned self-signed certificate
        raise ConfigError(f"{path}: api.ca_file: no certificate in it")


def read_password(config: Config, env: Mapping[str, str]) -> str:
    """api.password_file, else the systemd credential, else an error (Manager only)."""
    path = config.api.password_file
    if not path:
        creds = env.get("CREDENTIALS_DIRECTORY", "")
        candidate = os.path.join(creds, CREDENTIAL_NAME) if creds else ""
        if not candidate or not os.path.exists(candidate):
            raise ConfigError(f"{config.source}: api.password_file: not set, and no systemd "
                              f"credential {CREDENTIAL_NAME} (LoadCredential=) either")
        path = candidate
    text = read_text(path, "password", secret=True).rstrip("\r\n")
    if not text:
        raise ConfigError(f"{path}: the password file is empty")
    return text


def load_config(path: str, env: Mapping[str, str] = os.environ) -> Config:
    """Read, parse and validate the whole configuration, named files included."""
    config = parse_config(read_text(path, "configuration"), path)
    pem = ca = password = ""
    if config.api.flavor != "manager":  # the Manager logs in with a password instead
        pem = read_text(config.api.public_key, "public key")
        validate_public_key(pem, config.api.public_key)
    if config.api.ca_file:
        ca = read_text(config.api.ca_file, "CA file")
        validate_ca(ca, config.api.ca_file)
    if config.api.flavor == "manager" or (config.api.flavor == "auto" and config.api.username):
        password = read_password(config, env)
    metrics = config.metrics
    if (metrics.listen or metrics.textfile) and importlib.util.find_spec(
            "prometheus_client") is None:
        raise ConfigError(f"{path}: metrics: the prometheus_client module is not installed "
                          "(Debian: python3-prometheus-client)")
    _check_trace_pipe(config)
    return dataclasses.replace(config, public_key_pem=pem, ca_pem=ca, password=password,
                               node_name=config.api.node_name or _host_name())


def _host_name() -> str:
    # Kubernetes names a node after its host name, lower-cased.
    return socket.gethostname().split(".")[0].lower()


def _check_trace_pipe(config: Config) -> None:
    from ..trace.tracefs import trace_pipe_problem

    problem = trace_pipe_problem(config.trace.pipe)
    if problem:
        raise ConfigError(f"{config.source}: trace.pipe: {problem}")

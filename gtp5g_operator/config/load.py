"""Load the configuration: the main file, its drop-ins and every file they name.

`load_config` is what the daemon (start and reload), `check-config` and
`doctor` call, so whatever it accepts the daemon can run with.  Files are
read through `files.read_regular_file`: regular files only, without
blocking, at most 1 MiB; none may be writable by other users.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import ipaddress
import os
import re
import socket
import ssl
import stat
from typing import Dict, List, Mapping, Tuple
from urllib.parse import urlsplit

from ..files import FileProblem, file_kind, read_regular_file
from .parse import ConfigError, Vocabulary, build_config, merge, read_toml
from .paths import trace_pipe_problem, unit_hiding_hint
from .schema import CREDENTIAL_NAME, DROP_IN_DIR, Config


def check_not_writable_by_others(path: str, st: os.stat_result, any_owner: bool = False) -> None:
    """Refuse files others could edit (like sshd's StrictModes).

    The file steers the CPU scheduler as root: if another user could edit it
    (or the key it names), that user could boost anything.
    """
    if not any_owner and st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{path}: owned by uid {st.st_uid}; must be owned by root; "
                          f"run chown root {path}")
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0):
        raise ConfigError(f"{path}: writable by other users (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); run chmod go-w {path}")


# dpkg's list of the package's conffiles.  One the admin deleted stays deleted through
# upgrades and even `apt install --reinstall` (dpkg takes it for the admin's choice), and
# without config.toml the service stops at once (exit 78, not restarted).
DPKG_CONFFILES = "/var/lib/dpkg/info/gtp5g-operator.conffiles"


def deleted_conffile_hint(path: str) -> str:
    try:
        with open(DPKG_CONFFILES, encoding="utf-8", errors="replace") as f:
            listed = {line.split()[0] for line in f if line.strip()}
    except OSError:  # not installed by dpkg
        return ""
    return (" (the package's file, deleted: a reinstall keeps it deleted; restore it with "
            "apt-get install --reinstall -o Dpkg::Options::=--force-confmiss gtp5g-operator)"
            if os.path.abspath(path) in listed else "")


def read_text(path: str, what: str, secret: bool = False,
              env: Mapping[str, str] = os.environ, judged: bool = True) -> str:
    try:
        data, st = read_regular_file(path)
    except FileProblem as exc:
        # exists() follows links: a link into a hidden place dangles for the service
        hint = "" if os.path.exists(path) else (unit_hiding_hint(path, env)
                                                or deleted_conffile_hint(path))
        raise ConfigError(f"{path}: cannot read {what}: {exc}{hint}") from None
    if judged:
        judge_file(path, st, secret, env)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Where, as TOML's own errors say it: a byte offset alone ("byte 2117") left the
        # reader counting bytes for a Latin-1 "é" in a comment.  Not the byte's value:
        # the file may be the password's.
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError(f"{path}: {what} is not UTF-8 (at line {line}, column {column}): "
                          "save it as UTF-8") from None


def validate_public_key(pem: str, path: str) -> str:
    """The API only accepts an RSA public key in PKIX PEM: check that up front.  The key
    is returned as Gthulhu's servers read PEM (Go's pem.Decode), which is stricter than
    cryptography: a file that starts with an editor's byte order mark was taken here and
    refused there (401, "install the key" of the key installed)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    # An editor's byte order mark: the newest cryptography reads past it, older ones
    # (Ubuntu 22.04's) refuse it as "not a PEM public key"; the servers refuse it.
    pem = pem.removeprefix("\ufeff")
    try:
        key = load_pem_public_key(pem.encode())
    except UnsupportedAlgorithm as exc:  # e.g. an EC curve or SM2 this build lacks
        raise ConfigError(f"{path}: api.public_key: not an RSA key ({exc}); "
                          "the API needs RSA") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: api.public_key: not a PEM public key "
                          "(expected -----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{path}: api.public_key: not an RSA key "
                          f"({type(key).__name__.lstrip('_')}); the API needs RSA")
    if "-----BEGIN PUBLIC KEY-----" not in pem:
        # cryptography also reads PKCS#1 ("BEGIN RSA PUBLIC KEY", what `openssl rsa
        # -RSAPublicKey_out` and `ssh-keygen -e -m PEM` write), but Gthulhu's servers take
        # only the PKIX form: each push would be a 401, said as "not the pair of the
        # server's JWT private key" of a key that is its pair.
        raise ConfigError(f"{path}: api.public_key: a PKCS#1 key (BEGIN RSA PUBLIC KEY); "
                          "the API takes only the PKIX form (BEGIN PUBLIC KEY): convert it "
                          f"with openssl rsa -RSAPublicKey_in -pubout -in {path}")
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


# A certificate block; what lies between blocks (comments, often not ASCII, as in
# curl's cacert.pem) is left out, since ssl refuses cadata that is not ASCII.
CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*-----END CERTIFICATE-----")


def ca_certificates(pem: str, path: str) -> str:
    """The certificates of a CA file, as the ASCII text TLS contexts load (ConfigError
    when it holds none that loads)."""
    blocks = CERTIFICATE.findall(pem)
    if not blocks:
        raise ConfigError(f"{path}: api.ca_file: no PEM certificate in it "
                          "(expected -----BEGIN CERTIFICATE-----)")
    text = "\n".join(blocks) + "\n"
    # A fresh context: create_default_context(cadata="") would quietly fall back
    # to the system CAs, and an empty or certificate-less file must be an error.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: api.ca_file: a certificate in it does not load "
                          f"({getattr(exc, 'reason', None) or exc})") from None
    if not context.cert_store_stats().get("x509"):  # also a pinned self-signed certificate
        raise ConfigError(f"{path}: api.ca_file: no certificate in it")
    return text


# --- where the Manager's password is ---------------------------------------------------------

# The running unit's credentials, as a root shell outside the unit sees them, and
# systemd's credential stores (what LoadCredential=gthulhu-password searches).
UNIT_CREDENTIALS = "/run/credentials/gtp5g-operator.service"
CREDSTORES = ("/etc/credstore", "/run/credstore", "/usr/lib/credstore")


def password_path(config: Config, env: Mapping[str, str]) -> str:
    """api.password_file, else the first systemd credential found; ConfigError if none.
    Inside the unit only $CREDENTIALS_DIRECTORY is searched; outside it (check-config or
    doctor from a shell) the running unit's directory, then the credential stores — so
    that all three find the password the service is given."""
    if config.api.password_file:
        return config.api.password_file
    given = env.get("CREDENTIALS_DIRECTORY", "")
    searched = (given,) if given else (UNIT_CREDENTIALS, *CREDSTORES)
    closed = []  # directories we may not look into (root's 0700 credential stores)
    for directory in searched:
        candidate = os.path.join(directory, CREDENTIAL_NAME)
        try:
            os.lstat(candidate)
        except PermissionError:
            closed.append(directory)
            continue
        except OSError:
            continue
        return candidate
    origin = config.origins.get('api.username', config.source)
    if closed:
        # Not "no credential": an admin's shell that may not search /etc/credstore (0700,
        # as it should be) cannot tell, and must not be told to create a file that is there.
        raise ConfigError(f"{origin}: api.password_file: not set, and the systemd credential "
                          f"{CREDENTIAL_NAME} cannot be looked for in {', '.join(closed)} "
                          "(permission denied): run this as root to check it")
    raise ConfigError(f"{origin}: "
                      f"api.password_file: not set, and no systemd credential "
                      f"{CREDENTIAL_NAME} in {', '.join(searched)}: put the password in "
                      f"/etc/credstore/{CREDENTIAL_NAME} (mode 0600) or set "
                      "api.password_file")


def read_password(config: Config, env: Mapping[str, str]) -> str:
    path = password_path(config, env)
    key = ("api.password_file" if config.api.password_file
           else f"the systemd credential {CREDENTIAL_NAME}")
    # Trailing line ends are not the password's (echo writes one); a line end inside
    # would be sent as part of it, and the Manager's refusal would not say why.
    text = read_text(path, f"password ({key})", secret=True, env=env).rstrip("\r\n")
    if not text:
        raise ConfigError(f"{path}: {key}: the password file is empty")
    if text.startswith("\ufeff"):  # an editor's (Notepad's): invisible, and sent along
        raise ConfigError(f"{path}: {key}: the file starts with a byte order mark (bytes EF BB "
                          "BF), which would be sent as part of the password: save it as UTF-8 "
                          "without a BOM")
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{path}: {key}: more than one line (the password must be the "
                          "file's only line)")
    return text


def cleartext_credentials(config: Config, vocabulary: Vocabulary) -> str:
    """What would cross a network in clear with this api.url ("" when nothing would):
    plain http:// to a host that is not this one carries the tokens (which let anyone
    who reads them write strategies) and, to a Manager, the password itself."""
    parts = urlsplit(config.api.url)
    host = parts.hostname or ""
    if parts.scheme != "http" or host == "localhost" or _loopback_address(host):
        return ""
    _, password = needs(config, vocabulary)
    what = "the Manager's password and the tokens" if password else "the API's tokens"
    return (f"api.url {config.api.url} is plain http:// to another host: {what} cross the "
            "network in clear, for anyone on the path to reuse; use https:// (with "
            "api.ca_file for a private CA)")


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the files a configuration is made of -----------------------------------------------------


def drop_ins(main: str) -> List[str]:
    """DIR/config.d/*.toml beside the main file, in lexical order (hidden files and other
    names, e.g. x.toml.dpkg-dist, left out).  The directory must not be writable by
    others: whoever can add a file there steers the scheduler."""
    # main's own directory (whoever may write it may rename config.d away) is judged
    # with main (judge_file)
    directory = os.path.join(os.path.dirname(os.path.abspath(main)), DROP_IN_DIR)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot look at the drop-in directory: "
                          f"{exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory}: not a directory ({file_kind(st.st_mode)})")
    check_not_writable_by_others(directory, st)
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot list the drop-ins: {exc.strerror}") from None
    return [os.path.join(directory, n) for n in sorted(names)
            if n.endswith(".toml") and not n.startswith(".")]


def needs(config: Config, vocabulary: Vocabulary) -> Tuple[bool, bool]:
    """(public key, password): what the flavor logs in with.  With "auto" the key is
    always read (detection trades it for a token) and the password when a user is set."""
    chosen = vocabulary.flavor(config.api.flavor)
    if chosen is not None:
        kinds = chosen.credentials(config)
        return "public-key" in kinds, "password" in kinds
    every = frozenset().union(*(f.credentials(config) for f in vocabulary.flavors))
    return "public-key" in every, "password" in every and bool(config.api.username)


def named_files(config: Config, vocabulary: Vocabulary,
                env: Mapping[str, str]) -> List[Tuple[str, str, bool]]:
    """(what, path, secret) of every file this configuration is read from — the list
    `doctor` judges too.  A password not found is left out (load says why)."""
    files = config.files or (config.source,)
    named = [("config file" if i == 0 else "drop-in", f, False) for i, f in enumerate(files)]
    key, password = needs(config, vocabulary)
    if key:
        named.append(("key file", config.api.public_key, False))
    if config.api.ca_file:
        named.append(("CA file", config.api.ca_file, False))
    if password:
        with contextlib.suppress(ConfigError):
            named.append(("password file", password_path(config, env), True))
    return named


def judge_file(path: str, st: os.stat_result, secret: bool,
               env: Mapping[str, str] = os.environ) -> None:
    """The checks every file the configuration is read from passes (ConfigError when it
    does not): the file's, then its directories' (judge_directories).  Any owner is
    taken for a credential systemd wrote for the unit (in its $CREDENTIALS_DIRECTORY, or
    the running unit's directory as a shell sees it): systemd makes those files
    read-only (0400, on a read-only mount) and, where the file system takes no ACL
    (ramfs: systemd 252, or any kernel before 6.3), chowns them to the service's
    DynamicUser= uid instead of adding one: that owner is systemd's doing."""
    credential = secret and credentials_directory(os.path.dirname(os.path.abspath(path)), env)
    check_not_writable_by_others(path, st, any_owner=credential)
    if secret and st.st_mode & (stat.S_IROTH | stat.S_IWOTH):  # private to owner and root
        raise ConfigError(f"{path}: readable by other users (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); run chmod o-rw {path}")
    judge_directories(path, env)


def credentials_directory(directory: str, env: Mapping[str, str]) -> bool:
    return directory in {UNIT_CREDENTIALS, env.get("CREDENTIALS_DIRECTORY", "").rstrip("/")}


def judge_directories(path: str, env: Mapping[str, str] = os.environ) -> None:
    """The directories holding a file read as configuration -- the one its path names
    and, for a symlink (configuration management linking files in from a checkout), those
    holding every further link on the way and its target -- are judged like the file:
    whoever may write one may rename another file into its place or remove it (a CA of
    theirs, a key or password that fails every login).  The files the configuration
    names (api.public_key, api.ca_file, the password) were judged as files only: root's
    CA in a user's directory passed.
    A sticky directory passes if root or we own it: others may not rename what they do
    not own there, its owner may.  systemd's credentials directory passes whoever owns
    it: without ACLs systemd chowns it (0500, read-only) to the DynamicUser= uid."""
    for directory, held in holding_directories(path).items():
        try:
            st = os.stat(directory)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot look at its directory {directory}: "
                              f"{exc.strerror}") from None
        any_owner = credentials_directory(directory, env)
        if st.st_mode & stat.S_ISVTX and (any_owner or st.st_uid in (0, os.geteuid())):
            continue
        try:
            check_not_writable_by_others(directory, st, any_owner=any_owner)
        except ConfigError as exc:
            raise ConfigError(f"{held} {exc}") from None


def holding_directories(path: str) -> Dict[str, str]:
    """The directory `path` names, then that holding every link met on the way to its
    target (each link's owner may point it elsewhere or remove it, not only the last
    one's), and the target's, each with how to name it.  The path is resolved as the
    kernel does, a component at a time: a link to a directory on the way (theirs/dir ->
    root's checkout) is such a link too, and following only the file's own links passed
    it.  At most 40 links: the kernel's own limit (ELOOP)."""
    found = {os.path.dirname(os.path.abspath(path)): f"{path}: its directory"}
    parts, real, links = os.path.abspath(path).split("/")[::-1], "/", 0
    while parts and links < 40:
        part = parts.pop()
        if part in ("", ".", ".."):  # `real` holds no link: its parent is its dirname
            real = os.path.dirname(real) if part == ".." else real
            continue
        here = os.path.join(real, part)
        try:
            target = os.readlink(here)
        except OSError:  # not a link (or missing: the open says so)
            real = here
            continue
        links += 1
        found.setdefault(real, f"{path} links through {here}, whose directory")
        parts += target.split("/")[::-1]
        real = "/" if target.startswith("/") else real
    if not parts:  # else a loop (ELOOP): the open says so
        found.setdefault(os.path.dirname(real), f"{path} links to {real}, whose directory")
    return found


def emptied(old: Config) -> str:
    """Why a reload must not read the files now: one that set keys in `old` (the running
    configuration) is empty ("" when none is).  An editor's save or a `cp` truncates the
    file before it writes it, and an empty file is valid TOML: a SIGHUP in between loaded
    the defaults, and the reload moved this host to api.url's default, removing what it
    had written on the real server.  Only the running daemon knows what the file said.
    The way out named works for the main file too, which cannot be removed (a comment)."""
    for f in old.files:
        was = sorted(k for k, source in old.origins.items() if source == f)
        with contextlib.suppress(OSError):
            if was and os.stat(f).st_size == 0:
                return (f"{f} is empty now, and set {', '.join(was[:4])}"
                        f"{', ...' if len(was) > 4 else ''} before: a save still under way? "
                        "Reload again once it is written (to drop its settings, leave a "
                        "comment in it)")
    return ""


def load_settings(path: str, vocabulary: Vocabulary, judged: bool = True) -> Config:
    """The main file and its drop-ins, validated, without the files they name.
    `judged=False`: their owner and mode, and their directories', are not judged (doctor,
    which judges them on lines of their own, reads what they say all the same)."""
    # The main file first: when it is missing (its directory too), say that, not
    # that config.d cannot be looked at.
    documents = [(path, read_toml(read_text(path, "configuration", judged=judged), path))]
    files = [path, *drop_ins(path)]
    documents += [(f, read_toml(read_text(f, "configuration", judged=judged), f))
                  for f in files[1:]]
    raw, origins = merge(documents)
    return dataclasses.replace(build_config(raw, origins, vocabulary, path), files=tuple(files),
                               node_name="")


def load_config(path: str, vocabulary: Vocabulary, env: Mapping[str, str] = os.environ
                ) -> Config:
    """Read, parse and validate the whole configuration: the main file, its drop-ins
    and every file they name."""
    config = load_settings(path, vocabulary)
    origins = config.origins
    key, password_needed = needs(config, vocabulary)
    pem = ca = password = ""
    if key:
        try:
            pem = read_text(config.api.public_key, "public key")
        except ConfigError as exc:
            if config.api.flavor == "auto" and config.api.username:
                # A Manager user on the default flavor: say why a key is wanted at all.
                raise ConfigError(f"{exc} (api.public_key: api.flavor = \"auto\" tries the "
                                  "flavors that log in with it first; with a Manager set "
                                  "api.flavor = \"manager\")") from None
            if ": cannot read public key:" not in str(exc):
                raise  # its mode or encoding: the message says what to do
            # The first start of the package: name the key and what to do about it.
            set_in = origins.get("api.public_key")
            raise ConfigError(
                f"{exc} (api.public_key, "
                + (f"set in {set_in}" if set_in else "its default")
                + ": install the Gthulhu server's JWT public key (PEM) there, or set "
                  "api.public_key in a drop-in"
                + ("; a Manager needs no key: api.flavor = \"manager\""
                   if config.api.flavor == "auto" else "") + ")") from None
        pem = validate_public_key(pem, config.api.public_key)
    if config.api.ca_file:
        ca = ca_certificates(read_text(config.api.ca_file, "CA file (api.ca_file)"),
                             config.api.ca_file)
    if password_needed:
        password = read_password(config, env)
    metrics = config.metrics
    if (metrics.listen or metrics.textfile) and importlib.util.find_spec(
            "prometheus_client") is None:
        raise ConfigError(f"{origins.get('metrics.listen') or origins.get('metrics.textfile')}"
                          ": metrics: the prometheus_client module is not installed "
                          "(Debian: python3-prometheus-client)")
    problem = trace_pipe_problem(config.trace.pipe)
    if problem:
        raise ConfigError(f"{origins.get('trace.pipe', path)}: trace.pipe: {problem}")
    return dataclasses.replace(config, public_key_pem=pem, ca_pem=ca, password=password,
                               node_name=config.api.node_name or host_node_name())


def host_node_name() -> str:
    # Kubernetes names a node after its host name, lower-cased.
    return socket.gethostname().split(".")[0].lower()

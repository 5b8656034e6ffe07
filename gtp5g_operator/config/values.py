"""Validators of single configuration values: pure functions.

Each takes the raw TOML value and returns the typed value or raises
ValueError whose text starts with "expected ...".  Everything a value can be
wrong in is caught here, at load time — a value that passes must not be able
to fail later at run time (a port out of range, a NUL byte in a path, a host
name http.client refuses, credentials in a URL).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Optional, Tuple, TypeGuard, TypeVar, Union, cast
from urllib.parse import urlsplit

TASK_COMM_LEN = 16  # kernel limit including the NUL: names are at most 15 bytes
MAX_STRING = 4096  # no setting needs more; a longer value is a mistake or an attack
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")
_URL_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")  # RFC 3986 pchar and "/"


def fmt(value: Any) -> str:
    """A value as the TOML file shows it, shortened for a one-line message."""
    if isinstance(value, str):
        text = '"' + value.encode("unicode_escape").decode("ascii") + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an integer of over 4,300 digits, in a list too
            text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 80 else text[:77] + "..."


def expect(cond: bool, what: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"expected {what}, got {fmt(value)}")


def is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _clean_string(v: Any) -> bool:
    """A string that can go into a path, a log line or an HTTP header as is."""
    return (isinstance(v, str) and len(v) <= MAX_STRING and v.isprintable())


def boolean(v: Any) -> bool:
    expect(isinstance(v, bool), "true or false", v)
    return bool(v)


def seconds(low: float, high: float) -> Callable[[Any], float]:
    """A duration from `low` to `high` seconds: the lower bound keeps the loop from
    spinning (an interval of 1e-308 s would be due on every turn)."""
    def check(v: Any) -> float:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        expect(number and low <= v <= high, f"a number of seconds from {low:g} to {high:g}", v)
        return float(v)

    return check


Word = TypeVar("Word", bound=str)


def choice(*choices: Word) -> Callable[[Any], Word]:
    def check(v: Any) -> Word:
        expect(isinstance(v, str) and v in choices,
               "one of " + ", ".join(f'"{c}"' for c in choices), v)
        return cast(Word, v)

    return check


def _abs_path_ok(v: Any) -> bool:
    return _clean_string(v) and str(v).startswith("/") and "\0" not in str(v)


def path_or(word: Optional[str], what: str) -> Callable[[Any], str]:
    """An absolute path, or `word` ("" for none, "auto"; None: no word), said as `what`."""
    def check(v: Any) -> str:
        expect(v == word or _abs_path_ok(v), what, v)
        return str(v)

    return check


NOT_SHOWN = " (the value is not shown: it may be the password itself)"


def password_file(v: Any) -> str:
    # The one key a person may fill with the secret by mistake: never echo it.
    if not (v == "" or _abs_path_ok(v)):
        raise ValueError('expected an absolute path or ""' + NOT_SHOWN)
    return str(v)


def _list_of(v: Any, what: str, ok: Callable[[Any], bool]) -> Tuple[Any, ...]:
    expect(isinstance(v, list), what, v)
    for item in v:
        expect(ok(item), what, item)
    return tuple(v)


def comm_list(v: Any) -> Tuple[str, ...]:
    what = "a non-empty list of process names (1 to 15 bytes each, printable)"
    expect(isinstance(v, list) and len(v) > 0, what, v)
    return _list_of(v, what, lambda name: _clean_string(name)
                    and 0 < len(name.encode()) < TASK_COMM_LEN)


def exe_list(v: Any) -> Tuple[str, ...]:
    return _list_of(v, "a list of absolute executable paths", _abs_path_ok)


def uid_list(v: Any) -> Tuple[int, ...]:
    return _list_of(v, "a list of uids (integers from 0 to 4294967294)",
                    lambda uid: is_int(uid) and 0 <= uid < 2**32 - 1)


def api_url(v: Any) -> str:
    what = "an http:// or https:// URL with a host (and no user, query or fragment)"
    # Credentials in the URL would be printed in the log and state.json and are
    # never sent (the API authenticates with its token): refuse them first, and
    # without echoing the value, whatever else is wrong with it.
    if isinstance(v, str) and "@" in v:
        raise ValueError("expected a URL without user:password@ (the API is authenticated "
                         "with its token; credentials in a URL would be logged)")
    # A query or fragment is refused too, and may hold a key (a gateway's "?api_key="):
    # the error, in the journal, shows only what precedes it.
    if isinstance(v, str) and ("?" in v or "#" in v):
        raise ValueError(f"expected a URL without a query or fragment, got "
                         f"{fmt(re.split('[?#]', v)[0])} followed by one (not shown)")
    expect(_clean_string(v) and v.isascii(), what, v)
    brackets = f"expected {what}, got {fmt(v)} (unbalanced [ ] or not an IP address in them)"
    try:
        parts = urlsplit(v)
    except ValueError:  # its own words ("Invalid IPv6 URL") name neither the key's form nor v
        raise ValueError(brackets) from None
    # Python before 3.11.4 takes any "[name]" and text after "]" ("[::1]x:1"): the same
    # value must not pass on one Debian and fail on the next.
    if ("[" in parts.netloc or "]" in parts.netloc) and not (
            _BRACKETED.fullmatch(parts.netloc) and _is_ipv6(parts.hostname or "")):
        raise ValueError(brackets)
    expect(parts.scheme in ("http", "https") and bool(parts.hostname), what, v)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"expected a port from 1 to 65535, got {fmt(v)}") from None
    # urlsplit reads an empty port ("host:") as none: it was kept, ":" and all
    expect(not parts.netloc.endswith(":") and (port is None or port > 0),
           "a port from 1 to 65535", v)
    _no_zone_id(parts.hostname or "", v)
    expect(_valid_host(parts.hostname or ""), what, v)
    expect(_URL_PATH.fullmatch(parts.path) is not None, what, v)
    # Scheme and host are case-insensitive: "HTTP://Gthulhu" is the server "http://gthulhu"
    # is.  Kept as typed, a reload that changed only their case moved this host (what it
    # wrote cleared, a Manager policy deleted and made anew) and its proof no longer
    # matched the server after a restart.
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path}".rstrip("/")


_BRACKETED = re.compile(r"\[[^\[\]]+\](?::[0-9]*)?")


def _is_ipv6(host: str) -> bool:
    try:  # a zone id ("%eth0") is refused later, with its own words
        return ipaddress.ip_address(host.partition("%")[0]).version == 6
    except ValueError:
        return False


def optional_api_url(v: Any) -> str:
    return "" if v == "" else api_url(v)


def stored_api_url(v: Any) -> Any:
    """An api.url read back from a state file, as api_url() gives it now: earlier
    versions kept it as typed, and a proof of 'HTTP://Gthulhu' must still be about
    'http://gthulhu' after an upgrade (else what this host wrote is no longer its)."""
    try:
        return api_url(v)
    except (ValueError, TypeError):
        return v  # not a URL this version takes: compared as it is, so it matches nothing


def _no_zone_id(host: str, v: Any) -> None:
    # ipaddress takes "fe80::1%eth0", but socket.connect() and bind() take the scope
    # from the address tuple, not the text: with a zone every connect or bind fails
    # ("Name or service not known", or EINVAL), and without one a link-local address
    # fails with EINVAL ("Invalid argument") -- at every push, long after the check.
    # (RFC 6874's "%25eth0" would even name an interface "25eth0".)  Refuse both here.
    address, zone, _ = host.partition("%")
    try:
        link_local = ipaddress.ip_address(address).is_link_local and ":" in address
    except ValueError:
        link_local = False
    if (zone and ":" in address) or link_local:
        raise ValueError(f"expected no IPv6 zone id and no link-local (fe80::/10) address, got "
                         f"{fmt(v)}: sockets cannot use them (the zone is not passed on); use "
                         "the host's global or unique-local address, or its name")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None and ".." not in host


def priority(v: Any) -> Union[bool, int]:
    # The 2025 API takes a bool, later releases an integer: both are passed
    # through to v0 unchanged (the server rejects the other type with a 400).
    expect(isinstance(v, bool) or (is_int(v) and -(2**31) <= v < 2**31),
           "true/false (2025 API) or an integer (later API)", v)
    return v  # type: ignore[no-any-return]


def positive_ns(v: Any) -> int:
    expect(is_int(v) and 0 < v < 2**63, "a positive integer (nanoseconds)", v)
    return int(v)


def node_name(v: Any) -> str:
    # A Kubernetes node name: an RFC 1123 subdomain (lower case, digits, '-', '.').
    ok = v == "" or (isinstance(v, str) and len(v) <= 253 and re.fullmatch(
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", v) is not None)
    expect(ok, '"" (this host\'s name) or a Kubernetes node name (lower case, digits, "-", ".")',
           v)
    return str(v)


def username(v: Any) -> str:
    if not (v == "" or (_clean_string(v) and len(v) <= 256)):
        raise ValueError('expected a user name or ""' + NOT_SHOWN)
    return str(v)


def split_listen(value: str) -> Tuple[str, int]:
    """("127.0.0.1", 9469) from "127.0.0.1:9469" or "[::1]:9469"."""
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return host, int(port)


def listen_address(v: Any) -> str:
    what = '"" (off) or "address:port" with a port from 1 to 65535, e.g. "127.0.0.1:9469"'
    expect(isinstance(v, str), what, v)
    if v:
        _no_zone_id(v.rpartition(":")[0].strip("[]"), v)
        try:
            ipaddress.ip_address(split_listen(v)[0])
        except ValueError:
            raise ValueError(f"expected {what}, got {fmt(v)}") from None
    return str(v)

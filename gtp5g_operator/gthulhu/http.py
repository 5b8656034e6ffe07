"""JSON over HTTP(S) where one deadline bounds the whole exchange.

The loop gives one push a single deadline (`api.timeout`), so nothing in an
exchange may block past it:

* name resolution: getaddrinfo() cannot be interrupted, so it runs in a
  thread that the caller waits for at most until the deadline; at most one
  lookup is outstanding, so a hung nameserver costs one thread, not one per
  retry (`Resolver`);
* connect, and the TLS handshake done non-blocking with poll();
* sending: each send() gets the time left;
* every read of the answer, status line and headers included: a socket
  timeout bounds one recv(), not a response, so a server trickling its
  headers a byte at a time could otherwise hold a request for ever;
* the body is capped (answers are a few hundred bytes), and so is the head:
  http.client allows 100 header lines of 64 KiB, and parsing 6 MiB of them
  costs about 50 MB, more than the unit's MemoryMax (`MAX_HEAD`);
* a stop signal ends whichever of these waits is under way (`network_wait`):
  the exchange then fails as if its deadline had passed, so a stop is never
  held for `api.timeout`.

It uses the standard library's http.client rather than requests: importing
requests alone costs megabytes of resident memory under Debian's python3, a
large share of the daemon's budget (the figure: bench/results/, dated), and
requests cannot bound a whole exchange by one deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

from ..core.words import one_line
from ..files import decode_json
from .errors import Answer as Answer  # re-exported: the flavors' answers
from .errors import ApiError

MAX_BODY = 1 << 20
MAX_INTERIM = 16  # interim (1xx) answers skipped before one request's final answer
MAX_HEADER_LINES = 100  # as http.client's own limit
MAX_HEADER_LINE = 65536
MAX_HEAD = 256 * 1024  # bytes of one answer's status lines and headers, interim answers too
TLS_MISMATCH = ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "UNSUPPORTED_PROTOCOL",
                "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE",
                "TLSV13_ALERT_CERTIFICATE_REQUIRED")  # the server wants a client certificate
# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED
CERT_DATES: Dict[int, str] = {9: "is not yet valid", 10: "has expired"}
AddrInfo = Tuple[Any, ...]
# How a server's close of the connection shows: over TLS a close (with or without
# close_notify) is an EOF of the TLS layer, on sending as on reading, not a reset.
CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ssl.SSLEOFError, ssl.SSLZeroReturnError)


class DeadlinePassed(TimeoutError):
    """The exchange's deadline passed (the message says during what)."""


class StopRequested(DeadlinePassed):
    """A stop signal ended a network wait (service/signals.py raises it)."""


_waiting = 0  # how many network waits the process is in (0 or 1: one thread does I/O)
_stop_pending = ""  # a stop signal the loop has not taken yet ("": none)


def in_network_wait() -> bool:
    """Is an exchange blocked on the network now?  Only there may a signal handler
    raise StopRequested: that is what the deadline passing at the same point raises,
    and nothing of the exchange's bookkeeping is half done."""
    return _waiting > 0


def stop_pending(why: str) -> None:
    """A stop signal came: until the loop takes it (`stop_pending("")`), every network
    wait that begins fails at once, as the one under way does.  The signal may come just
    before a wait (during a reload, a trace read or a liveness pass of the same loop
    turn), and that wait would otherwise hold the stop for api.timeout.  Once taken,
    what the loop sends on its way out (clear_on_stop) has its own budget and must not
    be cut short."""
    global _stop_pending
    _stop_pending = why


@contextlib.contextmanager
def network_wait() -> Iterator[None]:
    global _waiting
    try:
        _waiting += 1
        if _stop_pending:  # after the count: a signal from here on raises by itself
            raise StopRequested(_stop_pending)
        yield
    finally:
        _waiting -= 1


# --- name resolution ---------------------------------------------------------------------


class _Lookup(threading.Thread):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(name=f"resolve {host}", daemon=True)
        self.key = (host, port)
        self.done = threading.Event()
        self.result: List[AddrInfo] = []
        self.error: Optional[OSError] = None

    def run(self) -> None:
        try:
            self.result = socket.getaddrinfo(*self.key, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.error = exc
        except Exception as exc:  # e.g. UnicodeError from IDNA: never lose the event
            self.error = OSError(str(exc))
        finally:
            self.done.set()


class Resolver:
    """getaddrinfo() bounded by a timeout; IP literals need no lookup.  One per JsonHttp:
    always the same host and port."""

    def __init__(self) -> None:
        self._pending: Optional[_Lookup] = None

    def resolve(self, host: str, port: int, timeout: float) -> List[AddrInfo]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 0, "", (host, port))]
        lookup = self._pending
        if lookup is None:
            lookup = _Lookup(host, port)
            lookup.start()
            self._pending = lookup
        with network_wait():
            done = lookup.done.wait(max(0.0, timeout))
        if not done:
            raise DeadlinePassed(f"resolving the name {host} did not finish in time "
                                 "(is the nameserver answering?)")
        self._pending = None
        if lookup.error is not None:
            raise lookup.error
        return lookup.result


# --- a connection whose every step honours the deadline -----------------------------------


class HeadTooLarge(http.client.HTTPException):
    """An answer's status lines and headers are longer than MAX_HEAD bytes."""


class _DeadlineRaw(io.RawIOBase):
    """What http.client reads the answer through: each recv gets the time left.

    It wraps the socket's own SocketIO (socket.makefile), which keeps the fd
    open while the answer is read even after http.client has closed the
    connection — it does that for a "Connection: close" answer, handing the
    socket over to the response."""

    def __init__(self, sock: socket.socket, conn: DeadlineConnection) -> None:
        super().__init__()
        self._sock = sock
        self._io = sock.makefile("rb", buffering=0)
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(self._conn.time_left("reading the answer"))
        # Acknowledge at once what arrives: a server that writes its header and its
        # body in two sends with Nagle on (Python's http.server does) holds the body
        # until our delayed ACK of the header, 40 ms on Linux, with the loop waiting.
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        with network_wait():
            n = self._io.readinto(buffer)
        assert n is not None  # None only in non-blocking mode; a timeout raises instead
        self._conn.received += n
        if self._conn.in_head and self._conn.received > MAX_HEAD:
            raise HeadTooLarge(f"status lines and headers longer than {MAX_HEAD} bytes")
        return n

    def close(self) -> None:
        self._io.close()
        super().close()


class _DeadlineSocket:
    """The connected socket, with bounded sends and reads through _DeadlineRaw."""

    def __init__(self, sock: socket.socket, conn: DeadlineConnection) -> None:
        self._sock = sock
        self._conn = conn

    def makefile(self, mode: str = "r", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineRaw(self._sock, self._conn))

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            self._sock.settimeout(self._conn.time_left("sending the request"))
            with network_wait():
                sent = self._sock.send(view[:65536])
            view = view[sent:]

    def __getattr__(self, name: str) -> Any:  # close, settimeout, fileno, ...
        return getattr(self._sock, name)


class FinalAnswer(http.client.HTTPResponse):
    """A response that reads past interim answers to the request's final one.

    RFC 9110 §15.2: a server may send any number of 1xx answers (102
    Processing, 103 Early Hints, ...) before the final one.  http.client skips
    only 100 Continue and would take a 103 for the answer — and the real answer
    would then be read as the answer to the *next* request on the kept-alive
    connection.  Here every interim answer and its header block are skipped
    (at most MAX_INTERIM of them, every read under the exchange's deadline);
    101 Switching Protocols, which we never ask for, is an error.
    """

    def _read_status(self) -> Tuple[str, int, str]:
        read_status = super()._read_status  # type: ignore[misc]
        for interim in range(MAX_INTERIM):
            try:
                version, status, reason = read_status()
            except http.client.RemoteDisconnected:
                if interim:  # it did answer: an interim answer, then nothing
                    raise http.client.HTTPException("the connection closed after an "
                                                    "interim answer") from None
                raise
            if status == 101:
                raise http.client.HTTPException("101 Switching Protocols, which was never "
                                                "asked for")
            if not 100 <= status < 200:
                return version, status, reason
            self._skip_header_block()
        raise http.client.HTTPException(f"more than {MAX_INTERIM} interim (1xx) answers")

    def _skip_header_block(self) -> None:
        for _ in range(MAX_HEADER_LINES + 1):
            line = self.fp.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                raise http.client.LineTooLong("header line")
            if line in (b"\r\n", b"\n", b""):
                return
        raise http.client.HTTPException(f"more than {MAX_HEADER_LINES} header lines")


class DeadlineConnection(http.client.HTTPConnection):
    """http:// and https:// alike: `connect` resolves, connects and (for TLS)
    handshakes within `deadline`, which the caller sets before each request."""

    response_class = FinalAnswer

    def __init__(self, host: str, port: int, resolver: Resolver,
                 tls: Optional[ssl.SSLContext], clock: Callable[[], float]) -> None:
        super().__init__(host, port)
        self._resolver = resolver
        self._tls = tls
        self._clock = clock
        self.deadline = 0.0
        self.received = 0  # bytes of the current answer read so far
        self.in_head = False  # reading its status lines and headers (MAX_HEAD applies)

    def time_left(self, during: str) -> float:
        left = self.deadline - self._clock()
        if left <= 0:
            raise DeadlinePassed(f"no answer in time ({during})")
        return left

    def connect(self) -> None:
        infos = self._resolver.resolve(self.host, self.port, self.time_left("resolving"))
        sock = self._connect_any(infos)
        try:
            if self._tls is not None:
                sock = self._handshake(sock)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self)

    def _connect_any(self, infos: List[AddrInfo]) -> socket.socket:
        last: Optional[OSError] = None
        for i, (family, type_, proto, _, address) in enumerate(infos):
            sock = socket.socket(family, type_, proto)
            try:
                # Each address gets its share of the time left: one that never answers
                # (an AAAA record without a route, a dead host of several) must not
                # take the whole deadline, or the addresses after it are never tried.
                sock.settimeout(self.time_left("connecting") / (len(infos) - i))
                with network_wait():
                    sock.connect(address)
            except OSError as exc:
                sock.close()
                if isinstance(exc, DeadlinePassed):
                    raise
                last = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise last or OSError("the name resolved to no address")

    def _handshake(self, sock: socket.socket) -> socket.socket:
        assert self._tls is not None
        tls = self._tls.wrap_socket(sock, server_hostname=self.host,
                                    do_handshake_on_connect=False)
        tls.setblocking(False)
        poller = select.poll()
        poller.register(tls, select.POLLIN)
        while True:
            left = self.time_left("TLS handshake")
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                poller.modify(tls, select.POLLIN)
            except ssl.SSLWantWriteError:
                poller.modify(tls, select.POLLOUT)
            with network_wait():
                poller.poll(left * 1000)


# --- the client ------------------------------------------------------------------------------


def _has_input(sock: Any) -> bool:
    """Can `sock` be read from without waiting (bytes, or the peer's close)?"""
    if getattr(sock, "pending", lambda: 0)():  # TLS: decrypted and not read yet
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _StaleConnection(Exception):
    """The server closed a kept-alive connection before answering."""


class JsonHttp:
    def __init__(self, base_url: str, timeout: float, ca_pem: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._clock = clock
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/")
        self._ca_pem = ca_pem
        self._tls: Optional[ssl.SSLContext] = None
        self._resolver = Resolver()
        self._conn: Optional[DeadlineConnection] = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, payload: Any, deadline: float,
                bearer: Optional[str] = None, replay: bool = True) -> Answer:
        """One exchange (and one fresh retry if a kept-alive connection was stale).

        A request is sent again only when the server sent nothing of an answer, and
        never when `replay` is False (a request that must not take effect twice: the
        server may have acted on it before the connection closed)."""
        body = json.dumps(payload, allow_nan=False).encode() if payload is not None else None
        headers = {"User-Agent": "gtp5g-operator", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        what = f"{method} {self.base_url}{path}"
        if self._conn is not None and self._conn.sock is not None and _has_input(self._conn.sock):
            # An idle kept-alive connection has nothing to say before it is asked: bytes
            # there (an answer sent twice, a body longer than its Content-Length, sent
            # late) would be read as the next request's answer, and its close is better
            # seen now than after a request that may not be sent again.
            self.close()
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            try:
                return self._attempt(method, self._path + path, body, headers, deadline, what)
            except _StaleConnection:
                if not (reused and attempt == 1 and replay):
                    raise ApiError("connect", f"{what}: connection closed by the server"
                                   ) from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise self._error(exc, what) from None
        raise AssertionError("unreachable")

    def _attempt(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
                 deadline: float, what: str) -> Answer:
        conn = self._connection(deadline)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            conn.in_head = False
            raw = self._read_body(resp, what)
        except CLOSED:
            answered = conn.received > 0
            self.close()
            if answered:  # it had begun to answer: the request was taken, never send it again
                raise ApiError("connect", f"{what}: connection closed by the server during "
                               "its answer") from None
            raise _StaleConnection() from None
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return self._decode(resp, raw, what)

    def _connection(self, deadline: float) -> DeadlineConnection:
        if self._conn is None:
            if self._https and self._tls is None:
                # Certificate and host name verified against the system CAs or the
                # configured CA (read at load); there is no switch to turn that off.
                self._tls = ssl.create_default_context(cadata=self._ca_pem or None)
            self._conn = DeadlineConnection(self.host, self.port, self._resolver, self._tls,
                                            self._clock)
        self._conn.deadline = deadline
        self._conn.received = 0
        self._conn.in_head = True
        return self._conn

    @staticmethod
    def _read_body(resp: http.client.HTTPResponse, what: str) -> bytes:
        # http.client's own reading of Content-Length (None: chunked, or not a length it
        # takes, read to the close), never int() on the header again: 5,000 digits raise
        # ValueError there (int's digit limit), which read as "cannot reach the server".
        if resp.length is not None and resp.length > MAX_BODY:
            raise ApiError("bad-answer", f"{what}: answer of {resp.length} bytes is larger "
                           f"than {MAX_BODY}: ignored")
        chunks: List[bytes] = []
        size = 0
        while True:
            chunk = resp.read1(65536)  # each read is bounded by the deadline
            # The Content-Length promised more than came before the close: what came
            # may still parse (a number's prefix).  (A chunked body cut off raises
            # IncompleteRead, as a malformed one does: a bad answer.)
            if not chunk and resp.length:
                raise ApiError("bad-answer", f"{what}: the server closed the connection "
                               f"after {size} of the {size + resp.length} bytes its "
                               "Content-Length promised")
            if not chunk:
                resp.close()  # marks it done so the kept-alive connection can be reused
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError("bad-answer", f"{what}: answer larger than {MAX_BODY} bytes: "
                               "ignored")
            chunks.append(chunk)

    @staticmethod
    def _decode(resp: http.client.HTTPResponse, raw: bytes, what: str) -> Answer:
        location = resp.getheader("Location") or ""
        wait = retry_after(resp.getheader("Retry-After")) if resp.status in (429, 503) else None
        try:
            return Answer(resp.status, decode_json(raw) if raw.strip() else None, location, wait)
        except ValueError as exc:
            if 200 <= resp.status < 300:
                raise ApiError("bad-answer", f"{what}: HTTP {resp.status} with a body that is "
                               f"not JSON we take ({one_line(str(exc))})") from None
            return Answer(resp.status, None, location, wait)

    def _error(self, exc: BaseException, what: str) -> ApiError:
        """The ApiError for an exception of one attempt (the connection is closed)."""
        self.close()
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, StopRequested):
            return ApiError("stopped", f"{what}: cut short ({exc})")
        if isinstance(exc, (DeadlinePassed, TimeoutError, socket.timeout)):
            detail = str(exc) if isinstance(exc, DeadlinePassed) else "no answer in time"
            return ApiError("timeout", f"{what}: {detail} (api.timeout {self.timeout:g} s)")
        dates = CERT_DATES.get(getattr(exc, "verify_code", 0))
        if dates:
            # Judged by this host's clock: right after boot it may be years off (no RTC,
            # not yet synced), and then the CA is not what to look at.
            now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            return ApiError("cert-dates", f"TLS with {self.base_url} failed: the server's "
                            f"certificate (or its CA's) {dates} by this host's clock ({now}): "
                            "set this host's clock right (NTP), or renew the certificate")
        if isinstance(exc, (ssl.SSLCertVerificationError, ssl.CertificateError)) or (
                isinstance(exc, ssl.SSLError) and exc.reason in TLS_MISMATCH):
            # the certificate, the CA or the port's protocol: only a person can fix it
            return ApiError("tls", f"TLS with {self.base_url} failed: {one_line(exc)}")
        if isinstance(exc, ssl.SSLError):  # cut off mid-handshake: passes by itself
            return ApiError("connect", f"TLS with {self.base_url} broke off: {one_line(exc)}")
        if isinstance(exc, socket.gaierror):
            return ApiError("connect", f"cannot resolve {self.host}: {one_line(exc.strerror)}")
        if isinstance(exc, http.client.HTTPException):  # reached, but not an HTTP answer
            return ApiError("bad-answer", f"{what}: the answer is not HTTP/1.1 "
                            f"({type(exc).__name__}: {one_line(exc, 80)})")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return ApiError("connect", f"cannot reach {self.base_url}: {one_line(reason)}")


def retry_after(value: Optional[str]) -> Optional[float]:
    """The seconds of a Retry-After field, when it is delta-seconds (RFC 9110 10.2.3);
    None for anything else, total over what a server may send: an HTTP-date (judged
    by clocks that may disagree: ignored), a fraction, a sign, 5,000 digits, a field
    sent twice (joined with commas).  How long it is honoured is the caller's cap."""
    text = (value or "").strip()
    if not 0 < len(text) <= 9 or not all("0" <= c <= "9" for c in text):
        return None
    return float(text)

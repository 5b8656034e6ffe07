"""JsonHttp against tiny real servers on 127.0.0.1: answers in odd shapes."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from gtp5g_operator.files import MAX_JSON_CONTAINERS, MAX_JSON_VALUES
from gtp5g_operator.gthulhu.answers import listed_strategies, manager_policies
from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.gthulhu.http import MAX_BODY, JsonHttp, retry_after
from testbed.tiny_server import TinyServer
from testbed.tls import make_ca_and_server_cert


class OneShotServer(TinyServer):
    """Answers each connection with `parts`, sent with a pause between."""

    def __init__(self, parts: List[bytes], pause: float = 0.05) -> None:
        self.parts, self.pause = parts, pause
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        conn.recv(65536)
        for part in self.parts:
            conn.sendall(part)
            time.sleep(self.pause)


@pytest.fixture
def closing_server() -> Iterator[OneShotServer]:
    body = b'{"success": true, "data": {"x": 1}}'
    head = (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    server = OneShotServer([head, body[:10], body[10:]])  # the body comes after the head
    yield server
    server.close()


def test_an_answer_that_closes_the_connection_is_read_whole(
        closing_server: OneShotServer) -> None:
    # http.client closes the connection when the answer says "Connection: close" and
    # leaves the socket to the response: the body must still be readable then.
    http = JsonHttp(closing_server.url, 2.0)
    for _ in range(3):  # and the next request opens a new connection
        answer = http.request("POST", "/x", {"a": 1}, time.monotonic() + 2)
        assert (answer.status, answer.body) == (200, {"success": True, "data": {"x": 1}})


@pytest.mark.parametrize("length", [b"\xb2", b"\xd9\xa3", b"1_0", b" 12", b"-1", b"1e3",
                                    b"9" * 5000, b"0" * 4999 + b"9"])
def test_a_content_length_that_is_not_ascii_digits_is_read_to_the_close(length: bytes) -> None:
    # "\xb2" is "²" in the header's Latin-1: str.isdigit() says yes, int() says no; past
    # 4,300 digits int() raises ValueError (its digit limit), which once read as a lost server.
    body = b'{"success": true}'
    server = OneShotServer([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
                            + length + b"\r\n\r\n" + body])
    try:
        answer = JsonHttp(server.url, 2.0).request("GET", "/x", None, time.monotonic() + 5)
        assert (answer.status, answer.body) == (200, {"success": True})
    except ApiError as exc:  # refusing the answer is fine; calling it a lost server is not
        assert exc.kind == "bad-answer", exc
    finally:
        server.close()


def test_a_body_that_trickles_past_the_deadline_times_out() -> None:
    body = b'{"success": true}'
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = OneShotServer([head] + [bytes([c]) for c in body], pause=0.1)
    try:
        t0 = time.monotonic()
        with pytest.raises(ApiError) as err:
            JsonHttp(server.url, 0.5).request("GET", "/x", None, time.monotonic() + 0.5)
        # the whole body would take 1.7 s: a per-read timeout would never fire
        assert err.value.kind == "timeout" and time.monotonic() - t0 < 1.2
    finally:
        server.close()


class KeepAliveServer(TinyServer):
    """One kept-alive connection; each request gets `interim` answers, then a final
    answer whose body names the request's own path, so an answer read for the wrong
    request shows."""

    def __init__(self, interim: List[bytes], threaded: bool = False) -> None:
        self.interim = interim
        super().__init__(threaded)

    def serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        first = True
        while True:
            line = reader.readline()
            if not line:
                break
            path = line.split()[1]
            while reader.readline() not in (b"\r\n", b""):
                pass
            body = b'{"path": "%s"}' % path
            conn.sendall(b"".join(self.interim) + b"HTTP/1.1 200 OK\r\nContent-Length: "
                         b"%d\r\n\r\n%s" % (len(body), body))
            self.answered(conn, first)
            first = False

    def answered(self, conn: socket.socket, first: bool) -> None:
        """After each answer (`first` of its connection): a subclass's misbehaviour."""


@pytest.mark.parametrize("interim", [
    [b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"],
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\n\r\n",
     b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nLink: </b>\r\n\r\n"],
])
def test_each_request_gets_its_own_answer_past_interim_ones(interim: List[bytes]) -> None:
    """RFC 9110 §15.2: interim answers are skipped.  Taking a 103 for the answer left
    the real one to be read as the *next* request's on the kept-alive connection."""
    server = KeepAliveServer(interim)
    http = JsonHttp(server.url, 2.0)
    try:
        for path in ("/first", "/second", "/third"):
            answer = http.request("GET", path, None, time.monotonic() + 2)
            assert (answer.status, answer.body) == (200, {"path": path})
    finally:
        http.close()
        server.close()


@pytest.mark.parametrize("interim,said", [
    ([b"HTTP/1.1 103 Early Hints\r\n\r\n"] * 17, "more than 16 interim"),
    ([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"], "101 Switching"),
])
def test_endless_or_switching_interim_answers_are_a_bad_answer(interim: List[bytes],
                                                               said: str) -> None:
    server = KeepAliveServer(interim)
    try:
        with pytest.raises(ApiError) as err:
            JsonHttp(server.url, 2.0).request("GET", "/x", None, time.monotonic() + 2)
        assert err.value.kind == "bad-answer" and said in str(err.value)
    finally:
        server.close()


class AnswersTwiceServer(KeepAliveServer):
    """A kept-alive connection whose server, after the first answer, sends an answer
    nobody asked for (once `go` is set: after the client has read the first), then
    answers each request with its own path on a fresh connection."""

    def __init__(self, late: bytes) -> None:
        self.late = late
        self.go, self.sent = threading.Event(), threading.Event()
        super().__init__([], threaded=True)

    def answered(self, conn: socket.socket, first: bool) -> None:
        if first and self.go.wait(10):
            conn.sendall(self.late)
            self.sent.set()


@pytest.mark.parametrize("late", [
    b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"path": "/old"}',  # answered twice
    b"}",  # a body one byte longer than its Content-Length, the last byte late
])
def test_bytes_on_an_idle_kept_alive_connection_are_no_answer_to_the_next_request(
        late: bytes) -> None:
    """They were read as the next request's answer: an answer sent twice answered the
    request after it (a GET before a PUT read by the PUT); a stray byte failed it."""
    server = AnswersTwiceServer(late)
    http = JsonHttp(server.url, 2.0)
    try:
        assert http.request("GET", "/first", None, time.monotonic() + 2).body == {
            "path": "/first"}
        server.go.set()
        assert server.sent.wait(10)
        assert select.select([http._conn.sock], [], [], 10)[0], (  # type: ignore[union-attr]
            "the late bytes never arrived")
        answer = http.request("GET", "/second", None, time.monotonic() + 2)
        assert (answer.status, answer.body) == (200, {"path": "/second"})
    finally:
        http.close()
        server.close()


def test_a_name_whose_first_address_never_answers_reaches_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with several addresses (an AAAA record without a route, round-robin DNS
    with a dead host): an address that drops every SYN took the whole deadline, so the
    one after it was never tried and every push failed."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(0)
    queued = socket.create_connection(dead.getsockname())  # accept queue full: SYNs dropped
    server = OneShotServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"])
    live = ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a)
                 for a in (dead.getsockname(), live)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: addresses)
    try:
        t0 = time.monotonic()
        answer = JsonHttp("http://gthulhu.test:8080", 2.0).request(
            "GET", "/x", None, time.monotonic() + 2)
        assert (answer.status, answer.body) == (200, {})
        assert time.monotonic() - t0 < 1.9
    finally:
        server.close()
        queued.close()
        dead.close()


LONG_HEADER = b"X-Padding: " + b"y" * 65500 + b"\r\n"  # as long as http.client takes one


@pytest.mark.parametrize("lines,refused", [(97, True), (3, False)])
def test_a_head_of_megabytes_is_refused_before_it_is_parsed(lines: int, refused: bool) -> None:
    """http.client takes 100 header lines of 64 KiB; parsing those 6 MiB raised the
    daemon's peak memory by about 50 MB, past the unit's MemoryMax: one answer of a
    hostile server got the service killed, and again after each restart."""
    body = b'{"success": true}'
    server = OneShotServer([b"HTTP/1.1 200 OK\r\n" + LONG_HEADER * lines + b"Content-Length: "
                            b"%d\r\nConnection: close\r\n\r\n%s" % (len(body), body)])
    try:
        http = JsonHttp(server.url, 2.0)
        if not refused:
            assert http.request("GET", "/x", None, time.monotonic() + 2).body == {
                "success": True}
            return
        with pytest.raises(ApiError) as err:
            http.request("GET", "/x", None, time.monotonic() + 2)
        assert err.value.kind == "bad-answer" and "longer than 262144 bytes" in str(err.value)
    finally:
        server.close()


class ClientCertRequired(TinyServer):
    """TLS 1.3 that demands a client certificate (mutual TLS): the client's handshake
    completes, then the server's alert arrives as the answer."""

    def __init__(self, paths: Dict[str, Path]) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(paths["cert"], paths["key"])
        self.ctx.load_verify_locations(paths["ca"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        super().__init__()
        self.url = self.url.replace("http://", "https://")

    def serve(self, conn: socket.socket) -> None:
        with self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls:
            tls.settimeout(10)
            with contextlib.suppress(ssl.SSLError):
                tls.do_handshake()  # sends the alert: no certificate
            # Read what the client sent (its request) until it closes: closing on unread
            # bytes would reset the connection, and the client might see the reset
            # before the alert (a race of this server's, not a case of the client's).
            while socket.socket.recv(tls, 65536):
                pass


def test_a_server_that_wants_a_client_certificate_needs_a_person(tmp_path: Path) -> None:
    """Only a person can fix it (the operator sends none): `tls`, logged at err, not
    `connect`, a WARNING that says it passes by itself."""
    paths = make_ca_and_server_cert(tmp_path)
    server = ClientCertRequired(paths)
    try:
        http = JsonHttp(server.url, 5.0, ca_pem=paths["ca"].read_text())
        with pytest.raises(ApiError) as err:
            http.request("GET", "/x", None, time.monotonic() + 5)
        assert err.value.kind == "tls", err.value
        assert "CERTIFICATE_REQUIRED" in str(err.value)
    finally:
        server.close()


@pytest.mark.parametrize("answer", [
    # 17 bytes of a promised 40: what came parses, but it is not the answer
    b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b'{"success": true}',
    # a chunked body whose last chunk never comes
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n" + b'{"success": true}'
    + b"\r\n",
], ids=["content-length", "chunked"])
def test_a_body_cut_off_by_the_close_is_not_taken(answer: bytes) -> None:
    server = OneShotServer([answer])
    try:
        with pytest.raises(ApiError) as err:
            JsonHttp(server.url, 5.0).request("GET", "/x", None, time.monotonic() + 5)
        assert err.value.kind == "bad-answer", err.value
    finally:
        server.close()


# --- what a body of MAX_BODY costs once decoded ------------------------------------------------

ABAR = '"ā"'.encode()  # the costliest value per byte: a str object of 80 bytes for 4 of text
SMALL_DICT = '{"a":"ā"}'.encode()  # a dict and a str for 9 bytes


def megabyte_of(*items: bytes) -> bytes:
    """A JSON array of MAX_BODY bytes: as many of each item as fit, in turn."""
    count = (MAX_BODY - 2) // (sum(len(i) + 1 for i in items))
    return b"[" + b",".join(items * count) + b"]"


def at_the_caps() -> bytes:
    """The costliest body decode_json still takes: small dicts up to the container cap,
    then strings up to the value cap."""
    dicts = MAX_JSON_CONTAINERS - 1
    return b"[" + b",".join([SMALL_DICT] * dicts + [ABAR] * (MAX_JSON_VALUES - dicts)) + b"]"


def answered(body: bytes) -> OneShotServer:
    return OneShotServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                          % len(body) + body], pause=0)


def traced_peak_mb(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize("body", [megabyte_of(ABAR), megabyte_of(SMALL_DICT),
                                  megabyte_of(b"0.5")], ids=["strings", "dicts", "floats"])
def test_a_megabyte_of_small_values_is_refused_before_it_is_decoded(body: bytes) -> None:
    """1 MiB of ["ā","ā",...] decoded to 18.5 MB of objects, of [{"a":"ā"},...] to 26 MB:
    beside the daemon's own ~21 MB and its endpoint's that took the unit past its
    MemoryHigh=48M (56 MB measured against a server padding each answer so), and a
    server could do it at every request."""
    assert len(body) <= MAX_BODY
    server = answered(body)
    errors: List[ApiError] = []
    try:
        def request() -> None:
            try:
                JsonHttp(server.url, 5.0).request("GET", "/x", None, time.monotonic() + 5)
            except ApiError as exc:
                errors.append(exc)
        assert traced_peak_mb(request) < 8  # the body and its copies: about 3 MB
        assert errors and errors[0].kind == "bad-answer" and "JSON we take" in str(errors[0])
    finally:
        server.close()


def distinct_keys() -> bytes:
    """One object of as many distinct keys as the value cap allows: a key and a value
    object per comma, within one container (about 15 MB)."""
    return ("{" + ",".join(f'"{i}":"ā"' for i in range(MAX_JSON_VALUES + 1)) + "}").encode()


@pytest.mark.parametrize("make", [at_the_caps, distinct_keys])
def test_the_costliest_body_still_decoded_stays_within_a_few_megabytes(
        make: Callable[[], bytes]) -> None:
    body = make()
    server = answered(body)
    try:
        def request() -> None:
            answer = JsonHttp(server.url, 5.0).request("GET", "/x", None, time.monotonic() + 5)
            assert len(answer.body) in (MAX_JSON_VALUES, MAX_JSON_VALUES + 1)
        # about 14 and 15 MB on Python 3.11, 16.0 and 16.1 on 3.10 (larger objects):
        # what the caps buy is a bound well under the unit's memory beside the daemon
        assert traced_peak_mb(request) < 20
    finally:
        server.close()


def largest_list(head: bytes, entry: Callable[[int], Dict[str, object]], tail: bytes
                 ) -> Tuple[bytes, int]:
    """A compact answer (as Go writes it) holding as many entries as fit MAX_BODY."""
    entries: List[bytes] = []
    size = len(head) + len(tail)
    while size + len(one := json.dumps(entry(len(entries)), separators=(",", ":")).encode()
                     ) + 1 <= MAX_BODY:
        entries.append(one)
        size += len(one) + 1
    return head + b",".join(entries) + tail, len(entries)


@pytest.mark.parametrize("flavor", ["v0", "v0-selectors", "decision-maker", "manager"])
def test_the_largest_real_lists_that_fit_the_body_limit_are_still_taken(flavor: str) -> None:
    """The caps leave room for what a real server lists in MAX_BODY: v0's strategies
    (~19,000; ~10,000 of another writer's selector strategy, which v0 lists expanded,
    one entry per matching PID with its selectors: three containers each), a Decision
    Maker's (~13,000), a Manager's policies (~8,000)."""
    if flavor == "v0":
        body, n = largest_list(b'{"success":true,"scheduling":[', lambda i: {
            "priority": True, "execution_time": 20_000_000, "pid": 1_000_000 + i}, b"]}")
    elif flavor == "v0-selectors":
        body, n = largest_list(b'{"success":true,"scheduling":[', lambda i: {
            "priority": True, "execution_time": 20_000_000, "pid": 100_000 + i,
            "selectors": [{"key": "app", "value": "ran"}]}, b"]}")
    elif flavor == "decision-maker":
        body, n = largest_list(b'{"success":true,"scheduling":[', lambda i: {
            "priority": 1, "execution_time": 20_000_000, "pid": 1_000_000 + i,
            "command_regex": "^(?:nr-gnb)$"}, b"]}")
    else:
        body, n = largest_list(b'{"success":true,"data":{"policies":[', lambda i: {
            "id": f"{i:024x}", "nodeNames": [f"worker-{i:05d}"], "commandRegex": "^(?:nr-gnb)$",
            "priority": 1, "executionTime": 20_000_000}, b"]}}")
    server = answered(body)
    try:
        answer = JsonHttp(server.url, 5.0).request("GET", "/x", None, time.monotonic() + 5)
        got = manager_policies(answer.body) if flavor == "manager" else listed_strategies(
            answer.body)
        assert len(got) == n
    finally:
        server.close()


@pytest.mark.parametrize("value,seconds", [
    ("1", 1.0), (" 120 ", 120.0), ("0", 0.0), ("999999999", 999999999.0),
    (None, None), ("", None), ("soon", None), ("Wed, 21 Oct 2037 07:28:00 GMT", None),
    ("-5", None), ("+5", None), ("1.5", None), ("1e3", None), ("5, 5", None),
    ("٣", None), ("9" * 5000, None)])
def test_only_a_retry_after_in_delta_seconds_is_taken(value: Any, seconds: Any) -> None:
    """The faults test of hostile values only waits for one more try, which a capped
    wait also gives: honouring a date, a fraction or 5,000 digits passed it unseen."""
    assert retry_after(value) == seconds

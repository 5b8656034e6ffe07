"""The endpoint process's pure parts: its HTTP, what it answers, its checks."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from gtp5g_operator.service.endpoint import describe_exit
from gtp5g_operator.service.endpoint_http import (
    MAX_HEAD,
    BadRequest,
    head_length,
    http_date,
    parse_request_line,
    response,
)
from gtp5g_operator.service.endpoint_server import (
    METRICS_LIMIT,
    Published,
    answer,
    held_capabilities,
    parse_arguments,
)


@pytest.mark.parametrize("data,length", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27),
    (b"GET / HTTP/1.1\r\n\r\nextra", 18),  # what follows the head is not part of it
    (b"GET / HTTP/1.0\n\n", 16),  # bare LF line ends
    (b"GET / HTTP/1.1\r\nHost: x\r\n", 0),  # not complete yet
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r", 0),
    (b"", 0),
])
def test_head_length(data: bytes, length: int) -> None:
    assert head_length(data) == length


def test_head_length_searches_only_what_is_new_yet_finds_an_end_split_across_reads() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for cut in range(1, len(head)):  # the previous call saw head[:cut] and found no end
        assert head_length(head[:cut]) == 0
        assert head_length(head, searched=cut) == len(head), cut


@pytest.mark.parametrize("data", [
    b"G" * (MAX_HEAD + 1),  # no end in sight
    b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",  # an end, too far
])
def test_an_overlong_head_is_431(data: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        head_length(data)
    assert info.value.status == 431


def test_a_head_of_exactly_max_head_bytes_is_read() -> None:
    line = b"GET / HTTP/1.1\r\n"
    head = line + b"X: " + b"a" * (MAX_HEAD - len(line) - 7) + b"\r\n\r\n"
    assert len(head) == MAX_HEAD and head_length(head) == MAX_HEAD


@pytest.mark.parametrize("head,parsed", [
    (b"GET /health HTTP/1.1\r\n\r\n", ("GET", "/health")),
    (b"HEAD /metrics?name[]=x HTTP/1.0\r\n\r\n", ("HEAD", "/metrics")),
    (b"BREW /pot HTTP/1.1\n\n", ("BREW", "/pot")),  # any token is a method (answered 404)
    (b"GET http://h/health HTTP/1.1\r\n\r\n", ("GET", "http://h/health")),
])
def test_request_line(head: bytes, parsed: Tuple[str, str]) -> None:
    assert parse_request_line(head) == parsed
    assert parse_request_line(bytearray(head)) == parsed  # as the server holds it


@pytest.mark.parametrize("head", [
    b"GET /health\r\n\r\n",  # HTTP/0.9
    b"GET  /health HTTP/1.1\r\n\r\n",
    b"GET /health HTTP/1.1 x\r\n\r\n",
    b"G(T /health HTTP/1.1\r\n\r\n",
    b" /health HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\n",
    b"GET /health HTTP/1.10\r\n\r\n",
    b"GET /health HTTP/1.x\r\n\r\n",
    b"GET /he\x00alth HTTP/1.1\r\n\r\n",
    b"GET /h\x7f HTTP/1.1\r\n\r\n",
    b"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
    b"\r\n\r\n",
])
def test_a_malformed_request_line_is_400(head: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request_line(head)
    assert info.value.status == 400


def test_http_date_is_imf_fixdate_in_english_whatever_the_locale() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(1_700_000_000.7) == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_response_head_and_shared_body() -> None:
    body = b"x" * 100
    head, sent_body = response(200, "text/plain", body, True, 0)
    assert sent_body is body  # not copied: every connection sends the same bytes
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK" and lines[-2:] == ["", ""]
    fields = dict(line.split(": ", 1) for line in lines[1:-2])
    assert fields == {"Date": "Thu, 01 Jan 1970 00:00:00 GMT", "Server": "gtp5g-operator",
                      "Content-Type": "text/plain", "Content-Length": "100",
                      "Cache-Control": "no-store", "Connection": "close"}
    head_only = response(200, "text/plain", body, False, 0)
    assert head_only == (head,)  # HEAD: the same head, Content-Length included


# --- what is answered, from a real runtime directory ------------------------------------


def publish(run: Path, metrics: Optional[bytes] = b"m 1\n",
            health: Optional[Dict[str, object]] = None,
            beat: Optional[Tuple[float, float]] = None) -> None:
    run.mkdir(exist_ok=True)
    if metrics is not None:
        tmp = run / "metrics.prom.tmp"
        tmp.write_bytes(metrics)
        tmp.replace(run / "metrics.prom")  # as the daemon does: a new file each time
    if health is not None:
        (run / "health.json").write_text(json.dumps(health))
    if beat is not None:
        (run / "heartbeat").write_bytes(struct.pack("<dd", *beat))


def status_of(out: Tuple[bytes, ...]) -> int:
    return int(out[0].split(b" ", 2)[1])


def body_of(out: Tuple[bytes, ...]) -> bytes:
    return out[1] if len(out) > 1 else b""


def test_answers_by_method_and_path(tmp_path: Path) -> None:
    now = time.monotonic()
    publish(tmp_path, health={"resync_interval": 10, "started_mono": now},
            beat=(now, now + 5))
    files = Published(str(tmp_path))
    assert (status_of(answer("GET", "/metrics", files, now, 0)),
            body_of(answer("GET", "/metrics", files, now, 0))) == (200, b"m 1\n")
    assert answer("HEAD", "/metrics", files, now, 0)[1:] == ()
    health = answer("GET", "/health", files, now, 0)
    assert status_of(health) == 200 and json.loads(body_of(health))["status"] == "ok"
    for method, path in (("POST", "/health"), ("DELETE", "/metrics"), ("GET", "/"),
                         ("GET", "/health/"), ("OPTIONS", "*"), ("GET", "http://h/health")):
        assert status_of(answer(method, path, files, now, 0)) == 404, (method, path)


def test_metrics_are_read_once_per_replaced_file(tmp_path: Path) -> None:
    publish(tmp_path, metrics=b"a 1\n")
    files = Published(str(tmp_path))
    first = files.read("metrics.prom", METRICS_LIMIT, cached=True)
    assert files.read("metrics.prom", METRICS_LIMIT, cached=True) is first
    publish(tmp_path, metrics=b"a 2\n")
    assert files.read("metrics.prom", METRICS_LIMIT, cached=True) == b"a 2\n"


@pytest.mark.parametrize("make", ["missing", "fifo", "directory", "too large", "symlink"])
def test_metrics_that_cannot_be_served_are_503_at_once(tmp_path: Path, make: str) -> None:
    tmp_path.mkdir(exist_ok=True)
    target = tmp_path / "metrics.prom"
    if make == "fifo":
        os.mkfifo(target)  # opened without blocking, refused
    elif make == "directory":
        target.mkdir()
    elif make == "too large":
        target.write_bytes(b"x" * (METRICS_LIMIT + 1))
    elif make == "symlink":
        (tmp_path / "elsewhere").write_text("secret 1\n")
        target.symlink_to(tmp_path / "elsewhere")
    out = answer("GET", "/metrics", Published(str(tmp_path)), 0.0, 0)
    assert status_of(out) == 503 and body_of(out) == b"no metrics published yet\n"


@pytest.mark.parametrize("health_json", ["[1, 2]", "{", "[" * 100_000, ""])
def test_a_health_file_that_is_no_json_object_is_starting(tmp_path: Path,
                                                         health_json: str) -> None:
    publish(tmp_path)
    (tmp_path / "health.json").write_text(health_json)
    out = answer("GET", "/health", Published(str(tmp_path)), 0.0, 0)
    assert status_of(out) == 503 and json.loads(body_of(out))["status"] == "starting"


def test_a_heartbeat_of_the_wrong_size_is_no_heartbeat(tmp_path: Path) -> None:
    now = time.monotonic()
    publish(tmp_path, health={"resync_interval": 10, "started_mono": now})
    (tmp_path / "heartbeat").write_bytes(b"\x00" * 15)
    out = answer("GET", "/health", Published(str(tmp_path)), now, 0)
    assert json.loads(body_of(out))["status"] == "stalled"


# --- the process's checks ------------------------------------------------------------------


def test_held_capabilities_reads_the_sets_that_grant_something() -> None:
    status = ("Name:\tx\nCapInh:\t00000000000000c4\nCapPrm:\t0000000000000000\n"
              "CapEff:\t0000000000000004\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n")
    assert held_capabilities(status) == {"CapEff": 4}  # inheritable and bounding grant nothing
    assert held_capabilities(status.replace("0000000000000004", "0" * 16)) == {}


@pytest.mark.parametrize("argv", [[], ["--fd", "x", "--dir", "/run"], ["--dir", "/run", "--fd"],
                                  ["--fd", "3", "--dir"], ["--fd", "3", "--dir", "/r", "-v"]])
def test_bad_arguments_are_one_usage_line(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"usage: .* --fd N --dir PATH"):
        parse_arguments(argv)
    assert parse_arguments(["--fd", "3", "--dir", "/run/x"]) == (3, "/run/x")


def test_describe_exit() -> None:
    assert describe_exit(-9) == "killed by signal 9" and describe_exit(2) == "status 2"

"""The text scanner over every captured sample and every layout, plus edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Set

import pytest

from gtp5g_operator.trace.framing import LineFramer
from gtp5g_operator.trace.textscan import LAYOUTS, scan
from testbed.tracelines import trace_line
from tests.conftest import SAMPLES
from tests.reference_parser import parse_line


def scan_tids(buf: bytes | bytearray, start: int = 0, end: Optional[int] = None) -> Set[int]:
    return scan(buf, start, len(buf) if end is None else end)[0]


SAMPLE_FILES = sorted(SAMPLES.glob("*.txt"))


def test_samples_are_present() -> None:
    assert len(SAMPLE_FILES) >= 4, f"trace samples missing under {SAMPLES}"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_line_parses_and_scan_agrees(path: Path) -> None:
    data = path.read_bytes()
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    parsed = [parse_line(ln) for ln in lines]
    # The last line of a capture may be cut mid-way; every other line is complete.
    assert all(p is not None for p in parsed[:-1]), [
        ln for ln, p in zip(lines, parsed, strict=True) if p is None]
    expected = {p.tid for p in parsed if p is not None}
    assert scan_tids(data) == expected


def test_plain_sample_names_with_dashes_and_spaces() -> None:
    by_tid = {p.tid: p for p in map(parse_line, (SAMPLES / "bpf-printk-plain.txt")
                                    .read_bytes().splitlines()) if p}
    assert by_tid[29493].comm == "<...>"
    assert by_tid[29534].comm == "nr-gnb"
    assert by_tid[29535].comm == "nr-gnb-rlc"
    assert by_tid[29536].comm == "gnb worker"
    assert by_tid[29534].tgid is None
    assert by_tid[29534].event == "bpf_trace_printk"
    assert by_tid[29534].message.endswith("gtp5g_encap_recv: PID=29534, TGID=29493, CPU=0")


def test_record_tgid_column() -> None:
    lines = (SAMPLES / "bpf-printk-record-tgid.txt").read_bytes().splitlines()
    first, named = parse_line(lines[0]), parse_line(lines[3])
    assert first is not None and named is not None
    assert (first.comm, first.tid, first.tgid) == ("<...>", 29627, None)  # (-------)
    assert (named.comm, named.tid, named.tgid) == ("nr-gnb", 29668, 29627)


@pytest.mark.parametrize("line,tid", [
    (b"nr-gnb-29534   [000] ...21   668.335503: bpf_trace_printk: x", 29534),  # stripped
    (b"      gnb worker-29536   [000] ...21   668.336227: bpf_trace_printk: y", 29536),
    (b"  nr-gnb-rlc-29669   (  29627) [000] ...21   672.1: bpf_trace_printk: z", 29669),
    (b"<...>-7188    (-------) [000] ...1.   242.130601: tracing_mark_write: m", 7188),
    (b"   kworker/u32:3-9120    [005] d..31 34202.1: sched_switch: prev_comm=a", 9120),
    (b"  a-b-c-d-4194304 [127] .N.1. 1.000001: ev: PID_MAX_LIMIT and a big cpu", 4194304),
    (b"          nr-gnb-0001234 [000] ...21   1.0: ev: zero-padded", 1234),
])
def test_edge_forms(line: bytes, tid: int) -> None:
    parsed = parse_line(line)
    assert parsed is not None and parsed.tid == tid
    assert scan_tids(line + b"\n") == {tid}


@pytest.mark.parametrize("comm", ["x-9 [", "a-7 (", "b-12 [0", "c-3 (-"])
def test_a_name_shaped_like_a_header_cannot_hide_the_real_tid(comm: str) -> None:
    # Any user can prctl() such a name; the real TID must still be found (the
    # name's digits are one more candidate, decided against /proc like any other).
    for record_tgid in (False, True):
        line = trace_line(comm, 4321, "m", tgid=4321, record_tgid=record_tgid).encode()
        assert 4321 in scan_tids(line)


def test_zero_padded_and_plain_ids_are_one_task() -> None:
    data = (trace_line("a", 42, "m") + "  a-0000042 [000] ...1. 1.0: e: m\n").encode()
    assert scan_tids(data) == {42}


def test_absurdly_long_digit_runs_are_not_ids() -> None:
    data = b"  x-" + b"9" * 5000 + b" [000] ...1. 1.0: e: m\n" + b"  y-12345678 [000] .: e\n"
    assert scan_tids(data) == set()  # no exception, and no 8-digit TID (PID_MAX is 4194304)


# Each option's layout as this kernel (6.18) really prints it (see the option-*.trace
# captures below), with the TID 29534.
LAYOUT_LINES = {
    "default": b"          nr-gnb-29534   [000] ...21   668.335503: bpf_trace_printk: x\n",
    # "%8.8s-%-7d %3d": the comm cut to 8, the CPU right-aligned in 3, flags glued to it
    "latency-format": b"nr-gnb-r-29534     0...21 133760896us : bpf_trace_printk: x\n",
    "latency-format/bh-off": b"  nr-gnb-29534     0b.s41 178747496us : bpf_trace_printk: x\n",
    # TID CPU timestamp; bpf_trace_printk has no raw printer ("type: ID"), print has "# IP"
    "raw": b"29534 0 2983662276893 type: 550\n",
    # the same as hex, each followed by a space; then an empty line
    "hex": b"0000735e 00000000 000002b6befa30e7 type: 550\n\n",
    "payload PID": b"bpf_trace_printk: fentry/gtp5g_encap_recv: PID=29534, TGID=29493\n",
}


@pytest.mark.parametrize("name", sorted(LAYOUT_LINES))
def test_every_layout_is_recognised(name: str) -> None:
    data = LAYOUT_LINES[name] * 3
    tids, lines, layout = scan(data, 0, len(data))
    assert (tids, lines) == ({29534}, 3)
    assert layout is not None and layout.name == name.split("/")[0]


OPTION_SAMPLES = sorted(SAMPLES.glob("option-*.trace"))


def test_option_samples_are_present() -> None:
    assert len(OPTION_SAMPLES) >= 4, f"option captures missing under {SAMPLES}"


@pytest.mark.parametrize("path", OPTION_SAMPLES, ids=lambda p: p.name)
def test_real_text_of_each_option_is_recognised(path: Path) -> None:
    """Captured from a real kernel with the option set (tests/kernel/capture_option_samples.py);
    the expected TIDs are what each thread reported about itself."""
    meta = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    tids, lines, layout = scan(data, 0, len(data))
    assert layout is not None and layout.name == meta["layout"]
    # the probe is global: another process's sendto() may have added a line or two
    assert set(meta["tids"]) <= tids
    assert lines == sum(1 for ln in data.splitlines() if ln.strip())  # every line


def test_the_default_layout_wins_a_mixed_chunk() -> None:
    data = LAYOUT_LINES["default"] + LAYOUT_LINES["payload PID"]
    assert scan(data, 0, len(data))[2] is LAYOUTS[0]


@pytest.mark.parametrize("junk", [
    b"", b"\x00\x00\x00", b"\xff\xfe garbage \x80", b"CPU:3 [LOST 120 EVENTS]",
    b"# tracer: nop", b"nr-gnb-12 without brackets", b"-123 [x] not a cpu",
])
def test_junk_is_skipped(junk: bytes) -> None:
    assert parse_line(junk) is None
    assert scan_tids(junk + b"\n") == set()


def test_scan_region_bounds() -> None:
    data = (trace_line("a", 11, "m") + trace_line("b", 22, "m")).encode()
    first_len = data.index(b"\n") + 1
    assert scan_tids(data, 0, first_len) == {11}
    assert scan_tids(data, first_len) == {22}


# --- framing -------------------------------------------------------------------


def feed(framer: LineFramer, data: bytes) -> Set[int]:
    space = framer.space()
    space[: len(data)] = data
    framer.commit(len(data))
    start, end = framer.frame()
    tids = scan_tids(framer.buf, start, end)
    framer.release()
    return tids


def test_incomplete_line_waits_for_its_newline() -> None:
    framer = LineFramer(capacity=4096, max_line=1024)
    line = trace_line("nr-gnb", 4242, "msg").encode()
    assert feed(framer, line[:20]) == set()
    assert feed(framer, line[20:]) == {4242}
    assert framer.filled == 0


def test_overlong_line_is_dropped_counted_and_the_next_one_survives() -> None:
    framer = LineFramer(capacity=4096, max_line=1024)
    assert feed(framer, b"x" * 1500) == set()
    assert framer.dropped_lines == 1
    assert feed(framer, b"y" * 2000) == set()  # still inside the same long line
    good = trace_line("nr-gnb", 77, "m").encode()
    assert feed(framer, b"tail of long line\n" + good) == {77}
    assert framer.dropped_lines == 1 and framer.filled == 0


def test_flush_partial_at_eof() -> None:
    framer = LineFramer(capacity=4096, max_line=1024)
    line = trace_line("nr-gnb", 99, "m").encode().rstrip(b"\n")
    assert feed(framer, line) == set()
    start, end = framer.flush_partial()
    assert scan_tids(framer.buf, start, end) == {99}
    assert framer.filled == 0


def test_framer_rejects_capacity_not_above_max_line() -> None:
    with pytest.raises(ValueError):
        LineFramer(capacity=100, max_line=100)

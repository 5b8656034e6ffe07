"""The binary ring-buffer parser: real pages captured from a 6.18 kernel, and
synthesised pages for every record kind and every way a page can be wrong.

Real pages: tests/data/ringbuf/, made by testbed/capture_ring_pages.py; their
expected pids come from the events' text, not from this parser.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

import pytest

from gtp5g_operator.trace import ringbuf
from gtp5g_operator.trace.ringbuf import (
    LOST_UNKNOWN,
    MISSED_EVENTS,
    MISSED_STORED,
    SUPPORTED_EVENT_HEADER,
    Field,
    FormatError,
    PageLayout,
    PageStats,
    PageWalker,
    Record,
    parse_event_format,
    parse_header_event,
    parse_header_page,
)
from tests.ringbuf_reference import iter_records
from tests.ringbuf_reference import walk as walk_page

DATA = Path(__file__).resolve().parent.parent / "data" / "ringbuf"
PAGES: List[Dict[str, Any]] = json.loads((DATA / "pages.json").read_text())

LAYOUT = parse_header_page((DATA / "header_page").read_text(), "little")
PID = parse_event_format((DATA / "bpf_trace_printk.format").read_text())
WALKER = PageWalker(LAYOUT, PID, parse_header_event((DATA / "header_event").read_text()))


# --- helpers: a reference result and a page builder ---------------------------------


class Result(NamedTuple):
    pids: Set[int]
    records: int
    lost: int
    malformed: bool


def walk(page: bytes, walker: PageWalker = WALKER) -> Result:
    pids, stats = walk_page(walker, page)
    return Result(pids, stats.records, stats.lost, bool(stats.problem))


def reference(page: bytes, walker: PageWalker = WALKER) -> Result:
    """The slow decoder's view: every record decoded with every bound checked."""
    pids: Set[int] = set()
    records, malformed = 0, False
    for rec in iter_records(walker, page):
        if isinstance(rec, str):
            malformed = True
        elif rec.pid is not None:
            pids.add(rec.pid)
            records += 1
    return Result(pids, records, walker.page_header(page)[1], malformed)


class Builder:
    """Records and pages in the kernel's layout (little-endian, 64-bit unless told)."""

    def __init__(self, order: str = "<", data_offset: int = 16, commit_size: int = 8) -> None:
        self.o = order
        self.data_offset = data_offset
        self.commit_size = commit_size

    def word(self, type_len: int, delta: int = 0) -> bytes:
        if self.o == "<":
            return struct.pack("<I", (delta << 5) | type_len)
        return struct.pack(">I", (type_len << 27) | delta)

    def u32(self, value: int) -> bytes:
        return struct.pack(self.o + "I", value)

    def event(self, pid: int, extra: int = 8, type_id: int = 550) -> bytes:
        """A trace event: common fields (pid at offset 4) and `extra` payload bytes."""
        body = struct.pack(self.o + "HBBi", type_id, 0, 1, pid) + (bytes(range(256)) * 20)[:extra]
        return body + b"\0" * (-len(body) % 4)

    def data(self, pid: int, extra: int = 8, delta: int = 3, long: bool = False) -> bytes:
        """A data record: type_len = words when the event fits in 28 words, else 0."""
        ev = self.event(pid, extra)
        if len(ev) <= 4 * ringbuf.DATA_TYPE_LEN_MAX and not long:
            return self.word(len(ev) // 4, delta) + ev
        return self.word(0, delta) + self.u32(len(ev) + 4) + ev

    def sized(self, pid: int, total: int) -> bytes:
        """A data record of exactly `total` bytes (type_len 0 when it must be)."""
        if total - 4 <= 4 * ringbuf.DATA_TYPE_LEN_MAX:
            return self.data(pid, extra=total - 12)
        return self.data(pid, extra=total - 16, long=True)

    def padding(self, total: int, delta: int = 1, fake_pid: int = 999) -> bytes:
        """A discarded event (delta != 0): `total` bytes, holding a pid that must be ignored."""
        body = self.event(fake_pid, max(0, total - 12))[: total - 8]
        return self.word(ringbuf.TYPE_PADDING, delta) + self.u32(total - 4) + body

    def null_padding(self) -> bytes:
        return self.word(ringbuf.TYPE_PADDING, 0) + self.u32(0)

    def time_extend(self, upper: int = 7) -> bytes:
        return self.word(ringbuf.TYPE_TIME_EXTEND, 5) + self.u32(upper)

    def time_stamp(self, upper: int = 7) -> bytes:
        return self.word(ringbuf.TYPE_TIME_STAMP, 5) + self.u32(upper)

    def page(self, body: bytes, size: int = 4096, commit: Optional[int] = None,
             flags: int = 0, missed: Optional[int] = None, high: int = 0) -> bytes:
        """One sub-buffer; `missed` is written after the data (with MISSED_STORED in flags)."""
        n = len(body) if commit is None else commit
        word = n | flags | (high << 32 if self.commit_size == 8 else 0)
        head = struct.pack(self.o + "Q", 123456789)[: self.data_offset - self.commit_size]
        head += struct.pack(self.o + ("Q" if self.commit_size == 8 else "I"), word)
        tail = b""
        if missed is not None:
            tail = struct.pack(self.o + ("Q" if self.commit_size == 8 else "I"), missed)
        raw = head + body + tail
        return raw + b"\0" * (size - len(raw)) if len(raw) < size else raw[:size]


# --- format files --------------------------------------------------------------


def test_header_page_of_this_kernel() -> None:
    layout = parse_header_page((DATA / "header_page").read_text(), "little")
    assert layout == PageLayout(8, 8, 16, 4080, "little")
    assert layout.subbuf_size == 4096
    big = parse_header_page((DATA / "header_page-8k").read_text())
    assert (big.data_offset, big.data_size, big.subbuf_size) == (16, 8176, 8192)


def test_header_page_of_a_32_bit_kernel() -> None:
    text = ("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
            "\tfield: local_t commit;\toffset:8;\tsize:4;\tsigned:1;\n"
            "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
            "\tfield: char data;\toffset:12;\tsize:4084;\tsigned:0;\n")
    assert parse_header_page(text) == PageLayout(8, 4, 12, 4084)


@pytest.mark.parametrize("text", [
    "",
    "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n",
    "field: u64 timestamp; offset:0; size:8;\nfield: local_t commit; offset:8; size:3;\n"
    "field: char data; offset:16; size:4080;\n",
    "field: u64 timestamp; offset:0; size:8;\nfield: local_t commit; offset:8; size:8;\n"
    "field: char data; offset:12; size:4080;\n",
    "field: u64 timestamp; offset:0; size:8;\nfield: local_t commit; offset:8; size:8;\n"
    "field: char data; offset:16; size:4;\n",
], ids=["empty", "no-commit", "commit-3-bytes", "data-overlaps-commit", "data-too-small"])
def test_header_page_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        parse_header_page(text)


def test_header_event_of_this_kernel() -> None:
    assert parse_header_event((DATA / "header_event").read_text()) == SUPPORTED_EVENT_HEADER


def test_an_unknown_record_header_is_refused() -> None:
    text = (DATA / "header_event").read_text().replace("type == 29", "type == 28")
    with pytest.raises(FormatError):
        PageWalker(LAYOUT, PID, parse_header_event(text))
    with pytest.raises(FormatError):
        parse_header_event("# compressed entry header\n")


@pytest.mark.parametrize("name", ["bpf_trace_printk.format", "print.format"])
def test_common_pid_of_real_events(name: str) -> None:
    assert parse_event_format((DATA / name).read_text()) == Field("common_pid", 4, 4, True)


def test_event_format_fields_and_errors() -> None:
    fields = ringbuf.parse_fields((DATA / "print.format").read_text())
    assert fields["buf"] == Field("buf", 16, 0, False)  # "char buf[]": the name without []
    assert fields["ip"].offset == 8
    with pytest.raises(FormatError):
        parse_event_format("name: x\nformat:\n\tfield:int other;\toffset:0;\tsize:4;\tsigned:1;\n")
    with pytest.raises(FormatError):
        parse_event_format("\tfield:char common_pid[3];\toffset:4;\tsize:3;\tsigned:1;\n")


# --- real pages ------------------------------------------------------------------


def real_walker(entry: Dict[str, Any]) -> PageWalker:
    suffix = "-8k" if entry["size"] == 8192 else ""
    layout = parse_header_page((DATA / ("header_page" + suffix)).read_text(), "little")
    return PageWalker(layout, parse_event_format((DATA / "print.format").read_text()))


@pytest.mark.parametrize("entry", PAGES, ids=[p["file"] for p in PAGES])
def test_real_page(entry: Dict[str, Any]) -> None:
    page = (DATA / entry["file"]).read_bytes()
    got = walk(page, real_walker(entry))
    assert got == Result(set(entry["pids"]), entry["records"], entry["lost"], False)
    assert set(entry["known_pids"]) & got.pids  # the capture's own writers are there
    assert got == reference(page, real_walker(entry))


@pytest.mark.parametrize("entry", PAGES, ids=[p["file"] for p in PAGES])
def test_real_page_parses_with_the_4k_layout_too(entry: Dict[str, Any]) -> None:
    """The page's length, not the layout, sets the sub-buffer size."""
    assert walk((DATA / entry["file"]).read_bytes()).pids == set(entry["pids"])


def test_real_pages_cover_every_kind_the_kernel_wrote() -> None:
    """Keep a re-capture honest: these are the cases the real pages must show."""
    kinds: Set[int] = set()
    for entry in PAGES:
        for rec in iter_records(real_walker(entry), (DATA / entry["file"]).read_bytes()):
            assert isinstance(rec, Record)
            kinds.add(rec.type_len)
    assert {0, ringbuf.TYPE_PADDING, ringbuf.TYPE_TIME_EXTEND} <= kinds
    assert any(2 <= k <= ringbuf.DATA_TYPE_LEN_MAX for k in kinds)
    assert any(p["lost"] > 0 for p in PAGES)
    assert any(p["size"] == 8192 for p in PAGES)
    assert any(p["commit"] >> 32 == 0xFFFFFFFF for p in PAGES)  # sign-extended flag


def test_data_records_never_take_the_careful_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small events and type_len 0 (long) events are both the hot path: no decode()."""
    walker = PageWalker(LAYOUT, PID)

    def careful(*args: object) -> None:
        raise AssertionError("careful path used")

    monkeypatch.setattr(walker, "decode", careful)
    real = [(DATA / p["file"]).read_bytes() for p in PAGES]
    pages = [page for page in real
             if all(isinstance(r, Record) and r.pid is not None
                    for r in iter_records(WALKER, page))]
    assert pages  # real pages of data records only (no time extend, no padding)
    b = Builder()
    pages.append(b.page(b"".join(b.sized(P1 + n % 2, 128 if n % 3 else 72) for n in range(30))))
    for page in pages:
        pids, stats = walk_page(walker, page)
        assert pids and stats.records and not stats.problem


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_buffer_type_and_pids_accumulate(kind: Any) -> None:
    pids: Set[int] = {1}
    records = 0
    for entry in PAGES:
        if entry["size"] == 4096:
            records += WALKER.walk_into(kind((DATA / entry["file"]).read_bytes()), pids).records
    assert pids == {1}.union(*(p["pids"] for p in PAGES if p["size"] == 4096))
    assert records == sum(p["records"] for p in PAGES if p["size"] == 4096)


# --- synthesised pages ----------------------------------------------------------------

P1, P2, P3 = 1001, 1002, 4194304  # PID_MAX_LIMIT is a legal pid

# (id, page, pids, records, lost, malformed)
Case = Tuple[str, bytes, Set[int], int, int, bool]


def cases(b: Builder) -> List[Case]:
    """Every synthesised page, built with `b` (so the same table serves both byte orders)."""
    small = b.data(P1) + b.data(P1) + b.data(P2) + b.data(P1)  # 4 records, 20 bytes each
    lost = MISSED_EVENTS | MISSED_STORED
    room = 4096 - b.data_offset  # the data area of a 4 KiB sub-buffer
    head = b.data_offset
    return [
        ("empty", b.page(b""), set(), 0, 0, False),
        ("small-records", b.page(small), {P1, P2}, 4, 0, False),
        ("every-small-size", b.page(b"".join(b.data(P1 + n, extra=4 * n) for n in range(27))),
         {P1 + n for n in range(27)}, 27, 0, False),
        ("type_len-0-long", b.page(b.data(P1, extra=300) + b.data(P2)), {P1, P2}, 2, 0, False),
        # RB_FORCE_8BYTE_ALIGNMENT kernels write even small events with type_len 0
        ("type_len-0-short", b.page(b.data(P1, long=True) + b.data(P2, long=True)), {P1, P2},
         2, 0, False),
        ("type_len-0-3000-bytes", b.page(b.data(P3, extra=3000)), {P3}, 1, 0, False),
        ("time-extend", b.page(b.time_extend() + b.data(P1) + b.time_extend()
                               + b.data(P2, extra=200)), {P1, P2}, 2, 0, False),
        ("absolute-time-stamp", b.page(b.time_stamp() + b.data(P1) + b.data(P2)), {P1, P2}, 2,
         0, False),
        ("discarded-event", b.page(b.data(P1) + b.padding(40) + b.data(P2)), {P1, P2}, 2, 0,
         False),
        ("padding-of-8-bytes", b.page(b.padding(8) + b.data(P1)), {P1}, 1, 0, False),
        ("end-of-page-padding", b.page(small + b.padding(room - len(small))), {P1, P2}, 4, 0,
         False),
        ("null-padding-ends-the-page", b.page(b.data(P1) + b.null_padding() + b.data(P2)), {P1},
         1, 0, False),
        # the last 8 bytes: too close to the end for the 12-byte fast unpack
        ("last-8-bytes-padding", b.page(b.sized(P1, room - 8) + b.padding(8)), {P1}, 1, 0, False),
        ("last-8-bytes-time-extend-then-nothing", b.page(b.sized(P1, room - 8) + b.time_extend()),
         {P1}, 1, 0, False),
        # a 12-byte record ending at the page's last byte: the fast unpack's last chance
        ("last-record-at-the-very-end", b.page(b.sized(P1, room - 12) + b.sized(P2, 12)), {P1, P2},
         2, 0, False),
        ("lost-count-unknown", b.page(small, flags=MISSED_EVENTS), {P1, P2}, 4, LOST_UNKNOWN,
         False),
        ("lost-count-stored", b.page(small, flags=lost, missed=1234), {P1, P2}, 4, 1234, False),
        ("lost-sign-extended", b.page(small, flags=lost, missed=7, high=0xFFFFFFFF), {P1, P2}, 4,
         7, False),
        ("lost-count-past-the-page", b.page(b.sized(P1, room), flags=lost), {P1}, 1,
         LOST_UNKNOWN, True),
        ("stored-without-missed", b.page(small, flags=MISSED_STORED, missed=5), {P1, P2}, 4, 0,
         True),
        ("garbage-high-commit-bits", b.page(small, high=0x1234), {P1, P2}, 4, 0,
         b.commit_size == 8),  # a 32-bit commit has no high bits
        ("8k-sub-buffer", b.page(b"".join(b.data(P1 + n % 3, extra=100) for n in range(70)),
                                 size=8192), {P1, P1 + 1, P1 + 2}, 70, 0, False),
        ("commit-larger-than-page", b.page(small, commit=5000), {P1, P2}, 4, 0, True),
        ("truncated-in-a-record", b.page(small * 3)[: head + len(small) + 6], {P1, P2}, 4, 0,
         True),
        ("truncated-header", b.page(small)[: head - 4], set(), 0, 0, True),
        ("only-the-header", b.page(b"")[:head], set(), 0, 0, False),
        ("record-past-commit-new-pid", b.page(b.data(P1) + b.data(P2), commit=28), {P1}, 1, 0,
         True),
        ("record-past-commit-same-pid", b.page(b.data(P1) + b.data(P1), commit=28), {P1}, 1, 0,
         True),
        ("type_len-0-length-past-end", b.page(b.data(P1) + b.word(0) + b.u32(100000)
                                              + b.event(P2)), {P1}, 1, 0, True),
        ("type_len-0-zero-length", b.page(b.data(P1) + b.word(0) + b.u32(0) + b.data(P2)), {P1},
         1, 0, True),
        ("type_len-0-unaligned", b.page(b.word(0) + b.u32(13) + b.event(P1) + b.data(P2)), set(),
         0, 0, True),
        ("event-too-short-for-a-pid", b.page(b.data(P1) + b.word(1) + b.u32(P2) + b.data(P3)),
         {P1}, 1, 0, True),
        ("padding-past-end", b.page(b.data(P1) + b.padding(4000)[:8], commit=28), {P1}, 1, 0,
         True),
        ("padding-without-length", b.page(b.data(P1) + b.word(ringbuf.TYPE_PADDING, 1),
                                          commit=24), {P1}, 1, 0, True),
        ("padding-shorter-than-its-length-word", b.page(b.word(ringbuf.TYPE_PADDING, 1)
                                                        + b.u32(0) + b.data(P1)), set(), 0, 0,
         True),
        ("time-extend-cut", b.page(b.data(P1) + b.time_extend()[:4], commit=24), {P1}, 1, 0,
         True),
    ]


CASES = cases(Builder("<"))
BIG_ENDIAN_CASES = cases(Builder(">"))
KERNEL32_CASES = cases(Builder("<", data_offset=12, commit_size=4))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_synthesised_page(case: Case) -> None:
    _, page, pids, records, lost, malformed = case
    expected = Result(pids, records, lost, malformed)
    assert walk(page) == expected
    assert reference(page) == expected


@pytest.mark.parametrize("case", BIG_ENDIAN_CASES, ids=[c[0] for c in BIG_ENDIAN_CASES])
def test_synthesised_page_big_endian(case: Case) -> None:
    """The same pages, big-endian (s390x): type_len is then the word's top 5 bits."""
    _, page, pids, records, lost, malformed = case
    walker = PageWalker(LAYOUT._replace(byteorder="big"), PID)
    assert walk(page, walker) == Result(pids, records, lost, malformed)
    assert reference(page, walker) == walk(page, walker)


@pytest.mark.parametrize("case", KERNEL32_CASES, ids=[c[0] for c in KERNEL32_CASES])
def test_synthesised_page_32_bit_kernel(case: Case) -> None:
    """The same pages from a 32-bit kernel (armhf, i386): 4-byte commit, data at 12."""
    _, page, pids, records, lost, malformed = case
    walker = PageWalker(PageLayout(8, 4, 12, 4084, "little"), PID)
    assert walk(page, walker) == Result(pids, records, lost, malformed)
    assert reference(page, walker) == walk(page, walker)


# --- random pages: valid ones against the generator, garbage against the reference ----


def random_valid_page(rng: random.Random, b: Builder, size: int) -> Tuple[bytes, Result]:
    """Records of every kind in random order; the expected result comes from the generator."""
    body, pids, records = b"", set(), 0
    room = size - b.data_offset
    while True:
        kind = rng.random()
        pid = rng.choice([P1, P2, P3, 0, 77, rng.randrange(1 << 22)])
        if kind < 0.6:
            rec, is_data = b.data(pid, extra=4 * rng.randrange(0, 27)), True
        elif kind < 0.7:
            rec, is_data = b.data(pid, extra=4 * rng.randrange(0, 300), long=True), True
        elif kind < 0.8:
            rec, is_data = b.padding(4 * rng.randrange(2, 40)), False
        elif kind < 0.9:
            rec, is_data = b.time_extend(rng.randrange(1 << 32)), False
        else:
            rec, is_data = b.time_stamp(rng.randrange(1 << 32)), False
        if len(body) + len(rec) > room - 28:  # room for the endings below, or a lost count
            break
        body += rec
        if is_data:
            pids.add(pid)
            records += 1
    flags, missed, lost = rng.choice([(0, None, 0), (MISSED_EVENTS, None, LOST_UNKNOWN),
                                      (MISSED_EVENTS | MISSED_STORED, 99, 99)])
    ending = rng.random()
    if ending < 0.3 and not missed:
        # the null padding (time_delta 0) inside the data: nothing after it counts
        body += b.null_padding() + b.data(12345)
    elif ending < 0.6 and not flags:
        body += b.padding(room - len(body))  # the kernel's end-of-page padding
    return b.page(body, size=size, flags=flags, missed=missed), Result(pids, records, lost, False)


@pytest.mark.parametrize("order", ["<", ">"])
def test_random_valid_pages(order: str) -> None:
    rng = random.Random(20251128)
    b = Builder(order)
    walker = PageWalker(LAYOUT._replace(byteorder="little" if order == "<" else "big"), PID)
    for _ in range(300):
        page, expected = random_valid_page(rng, b, rng.choice([4096, 8192]))
        assert walk(page, walker) == expected
        assert reference(page, walker) == expected


def mutations(rng: random.Random, page: bytes) -> bytes:
    """A page damaged the ways a bug or a bad read could damage it."""
    raw = bytearray(page)
    how = rng.randrange(5)
    if how == 0:  # flipped bytes anywhere, headers included
        for _ in range(rng.randrange(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif how == 1:  # a random commit word
        raw[8:16] = struct.pack("<Q", rng.choice([rng.randrange(1 << 64),
                                                  rng.randrange(len(raw) + 64)]))
    elif how == 2:  # cut short
        del raw[rng.randrange(len(raw)):]
    elif how == 3:  # a record header and its array[0] overwritten at random
        off = rng.randrange(16, max(17, len(raw) - 8)) & ~3
        raw[off:off + 8] = struct.pack("<II", rng.randrange(1 << 32), rng.randrange(1 << 32))
    else:  # pure noise with a plausible commit
        raw = bytearray(rng.randbytes(len(raw)))
        raw[8:16] = struct.pack("<Q", rng.randrange(len(raw)))
    return bytes(raw)


def test_damaged_pages_never_raise_and_match_the_reference() -> None:
    rng = random.Random(7)
    real = [(DATA / p["file"]).read_bytes() for p in PAGES]
    for i in range(3000):
        page = mutations(rng, real[i % len(real)])
        assert walk(page) == reference(page), (i, page[:32].hex())


def test_noise_pages_terminate() -> None:
    """Tiny records everywhere (8-byte paddings and time records), and pure patterns."""
    b = Builder()
    tiny = b.padding(8) + b.time_extend() + b.time_stamp()
    page = b.page(tiny * (4080 // len(tiny)))
    assert walk(page) == Result(set(), 0, 0, False)
    for pattern in (b"\x00", b"\xff", b"\x1d\x00\x00\x00", b"\x1e\x00\x00\x00", b"\x1f\x00"):
        noise = b.page((pattern * 4096)[:4080], commit=4080)
        assert walk(noise) == reference(noise)


def test_page_stats() -> None:
    stats = WALKER.walk_into(Builder().page(b"", flags=MISSED_EVENTS), set())
    assert stats == PageStats(0, LOST_UNKNOWN, "")
    assert "truncated" in WALKER.walk_into(b"\0" * 8, set()).problem

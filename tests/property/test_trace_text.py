"""Properties of the text trace path: the scanner (trace/textscan) and the framer
(trace/framing) on any bytes trace_pipe, a FIFO or a replayed file could hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Set, Tuple

from hypothesis import given
from hypothesis import strategies as st

from gtp5g_operator.trace.framing import LineFramer
from gtp5g_operator.trace.textscan import Layout, scan
from testbed.tracelines import trace_line
from tests.property.bounds import check_total
from tests.property.strategies import mutated_bytes

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "trace-samples"
SAMPLE_BYTES = [p.read_bytes() for p in sorted(SAMPLES.iterdir())
                if p.suffix in (".txt", ".trace")]
trace_bytes = st.one_of(st.binary(max_size=2000), mutated_bytes(st.sampled_from(SAMPLE_BYTES)))


def digit_runs(buf: bytes, base: int) -> Set[int]:
    """Every number the buffer spells as a whole run of digits (hex: 8 hex digits)."""
    if base == 16:
        return {int(m, 16) for m in re.findall(rb"(?<![0-9a-f])[0-9a-f]{8}(?![0-9a-f])", buf)}
    return {int(m) for m in re.findall(rb"(?<!\d)\d{1,7}(?!\d)", buf)}


def scanned(buf: bytes, start: int = 0, end: Optional[int] = None
            ) -> Tuple[Set[int], int, Optional[Layout]]:
    end = len(buf) if end is None else end
    result = check_total(lambda: scan(buf, start, end), returns=tuple)
    assert not isinstance(result, BaseException)
    return result


@given(trace_bytes)
def test_scan_is_total_and_finds_only_numbers_of_the_buffer(buf: bytes) -> None:
    ids, lines, layout = scanned(buf)
    assert isinstance(ids, set) and all(type(i) is int for i in ids)
    assert (lines == 0) == (layout is None) == (not ids)
    assert lines >= len(ids)
    if layout is not None:
        limit = 2**32 if layout.base == 16 else 10**7  # 8 hex digits, 7 decimal digits
        assert all(0 <= i < limit for i in ids)
        assert ids <= digit_runs(buf, layout.base)


@given(trace_bytes, st.data())
def test_scan_of_a_window_of_whole_lines_equals_scan_of_its_copy(buf: bytes,
                                                                 data: st.DataObject) -> None:
    """The reader scans regions of its buffer in place: the same as scanning them alone."""
    starts = [0] + [i + 1 for i, b in enumerate(buf) if b == 0x0A]
    start = data.draw(st.sampled_from(starts))
    end = data.draw(st.sampled_from([s for s in starts if s >= start] + [len(buf)]))
    assert scanned(buf, start, end) == scanned(buf[start:end])


# The kernel lets a task name itself anything but NUL (prctl PR_SET_NAME, 15 bytes);
# a newline would end the line, so that is the one thing a name cannot add to the text.
comms = st.text(st.characters(min_codepoint=1, max_codepoint=0x24F).filter(lambda c: c != "\n"),
                min_size=0, max_size=15).filter(lambda c: len(c.encode()) <= 15)
messages = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=80)


@given(st.lists(st.tuples(comms, st.integers(0, 4194304), messages, st.booleans(),
                          st.integers(0, 4095)), min_size=1, max_size=20))
def test_every_tid_of_default_layout_lines_is_found(
        lines: List[Tuple[str, int, str, bool, int]]) -> None:
    """Whatever the task names and messages, no line's real TID is missed."""
    text = "".join(trace_line(comm or "<...>", tid, msg, tgid=tid, record_tgid=tgid, cpu=cpu)
                   for comm, tid, msg, tgid, cpu in lines)
    ids, _, layout = scanned(text.encode())
    assert layout is not None and layout.name == "default"
    assert {tid for _, tid, _, _, _ in lines} <= ids


# --- the framer ---------------------------------------------------------------------------

streams = st.lists(st.one_of(st.binary(max_size=40), st.binary(min_size=100, max_size=600)),
                   max_size=30).map(lambda parts: b"\n".join(parts))
sizes = st.sampled_from([(64, 32), (100, 99), (256, 16), (1024, 300)])  # (capacity, max_line)


def reference_lines(data: bytes) -> List[bytes]:
    """The stream's lines, each with its newline (a last partial line gets one at EOF)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line + b"\n" for line in lines]


def frame_stream(data: bytes, chunks: List[int], capacity: int, max_line: int
                 ) -> Tuple[List[bytes], int]:
    """Feed `data` in reads of the given sizes as the text reader does; the lines framed."""
    framer = LineFramer(capacity, max_line)
    out = bytearray()
    pos, turn = 0, 0
    while pos < len(data):
        space = framer.space()
        assert len(space) > 0, "no room to read into: the reader would spin"
        n = min(chunks[turn % len(chunks)], len(space), len(data) - pos)
        turn += 1
        space[:n] = data[pos:pos + n]
        framer.commit(n)
        pos += n
        start, end = framer.frame()
        assert 0 <= start <= end <= framer.filled
        assert end == start or framer.buf[end - 1] == 0x0A  # whole lines only
        out += framer.buf[start:end]
        framer.release()
        assert len(framer.buf) == capacity and framer.filled < capacity  # memory stays fixed
    start, end = framer.flush_partial()
    out += framer.buf[start:end]
    return [line + b"\n" for line in bytes(out).split(b"\n")[:-1]], framer.dropped_lines


@given(streams, st.lists(st.integers(1, 700), min_size=1, max_size=10), sizes)
def test_framer_yields_the_stream_lines_whatever_the_reads(
        data: bytes, chunks: List[int], size: Tuple[int, int]) -> None:
    capacity, max_line = size
    result = check_total(lambda: frame_stream(data, chunks, capacity, max_line), returns=tuple)
    assert not isinstance(result, BaseException)
    got, dropped = result
    # The framed lines are the stream's lines in order, less some over-long ones
    # (a long line that arrives whole in one read is kept), each dropped one counted.
    j = missing = 0
    for line in reference_lines(data):
        if j < len(got) and got[j] == line:
            j += 1
        else:
            assert len(line) - 1 >= max_line, f"a short line was lost: {line[:60]!r}"
            missing += 1
    assert j == len(got), f"framed a line that is not in the stream: {got[j][:60]!r}"
    assert missing == dropped

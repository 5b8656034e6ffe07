"""Properties of the binary ring-buffer path (trace/ringbuf): the page walker on
any page, under any layout a kernel could describe, and the layout files' parsers
on any text.  Real pages and layout files captured from a 6.18 kernel
(tests/data/ringbuf) are the seeds the mutations start from."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Set

from hypothesis import given
from hypothesis import strategies as st

from gtp5g_operator.trace.raw_reader import RawLayout, load_layout
from gtp5g_operator.trace.ringbuf import (
    LOST_UNKNOWN,
    EventHeader,
    Field,
    FormatError,
    PageLayout,
    PageStats,
    PageWalker,
    parse_event_format,
    parse_header_event,
    parse_header_page,
)
from gtp5g_operator.trace.source import Unusable
from tests.property.bounds import check_total
from tests.property.strategies import mutated_bytes, texts_of
from tests.ringbuf_reference import iter_records, walk

DATA = Path(__file__).resolve().parent.parent / "data" / "ringbuf"
PAGES: List[Dict[str, Any]] = json.loads((DATA / "pages.json").read_text())
REAL_PAGES = [(DATA / p["file"]).read_bytes() for p in PAGES]
HEADER_PAGES = [(DATA / n).read_text() for n in ("header_page", "header_page-8k")]
HEADER_EVENT = (DATA / "header_event").read_text()
EVENT_FORMATS = [(DATA / n).read_text() for n in ("print.format", "bpf_trace_printk.format")]
REAL_PID = parse_event_format(EVENT_FORMATS[0])

# --- layouts: the kernel's, and any other a format file could describe -----------------------


@st.composite
def layouts(draw: st.DrawFn) -> PageLayout:
    commit_size = draw(st.sampled_from([4, 8]))
    commit_offset = draw(st.sampled_from([0, 4, 8, 12]))
    data_offset = commit_offset + commit_size + 4 * draw(st.integers(0, 4))
    return PageLayout(commit_offset, commit_size, data_offset, 4096 - data_offset,
                      draw(st.sampled_from(["little", "big"])))


pid_fields = st.builds(Field, st.just("common_pid"), st.integers(0, 130),
                       st.sampled_from([1, 2, 4, 8]), st.booleans())
KERNEL_WALKER = PageWalker(parse_header_page(HEADER_PAGES[0], "little"), REAL_PID)
walkers = st.one_of(st.just(KERNEL_WALKER), st.builds(PageWalker, layouts(), pid_fields))


@st.composite
def damaged_pages(draw: st.DrawFn) -> bytes:
    """A real page with its commit word or a record header rewritten, then damaged."""
    page = bytearray(draw(st.sampled_from(REAL_PAGES)))
    if draw(st.booleans()):  # any commit word: flags, sign extension, sizes past the page
        word = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(page) + 64),
                              st.integers(0, 8192).map(lambda n: n | 0xFFFFFFFFC0000000)))
        page[8:16] = struct.pack("<Q", word)
    if draw(st.booleans()):  # one record header and its array[0]
        at = draw(st.integers(16, len(page) - 8)) & ~3
        page[at:at + 8] = struct.pack("<II", draw(st.integers(0, 2**32 - 1)),
                                      draw(st.integers(0, 2**32 - 1)))
    return draw(mutated_bytes(st.just(bytes(page)), max_edits=3))


pages = st.one_of(st.binary(max_size=8300), st.sampled_from(REAL_PAGES), damaged_pages(),
                  # a plausible header over noise: the records are what is wrong
                  st.tuples(st.integers(0, 4080), st.binary(min_size=4080, max_size=4080)).map(
                      lambda t: struct.pack("<QQ", 1, t[0]) + t[1]))


def pid_values(walker: PageWalker, page: bytes, start: int, end: int) -> Set[int]:
    """Every value the pid field takes anywhere inside page[start:end]."""
    code = {1: "b", 2: "h", 4: "i", 8: "q"}[walker.pid.size]
    fmt = ("<" if walker.layout.byteorder == "little" else ">") + \
        (code if walker.pid.signed else code.upper())
    return {struct.unpack_from(fmt, page, off)[0]
            for off in range(start, end - walker.pid.size + 1)}


@given(walkers, pages)
def test_walk_into_is_total_and_reads_pids_only_from_the_data(walker: PageWalker,
                                                              page: bytes) -> None:
    before = {-12345}
    pids = set(before)
    stats = check_total(lambda: walker.walk_into(page, pids), returns=PageStats)
    assert isinstance(stats, PageStats)
    assert stats.records >= 0 and isinstance(stats.problem, str)
    assert stats.lost in (0, LOST_UNKNOWN) or stats.lost > 0
    assert before <= pids  # it only adds
    size = walker.page_header(page)[0]
    start = walker.layout.data_offset
    assert pids - before <= pid_values(walker, page, start, start + size)
    assert len(pids - before) <= stats.records


@given(walkers, pages)
def test_walk_into_agrees_with_the_careful_reference(walker: PageWalker, page: bytes) -> None:
    """The hot loop and the slow decoder that checks every bound see the same page."""
    pids, stats = walk(walker, page)
    ref_pids: Set[int] = set()
    ref_records, ref_problem = 0, False
    for rec in iter_records(walker, page):
        if isinstance(rec, str):
            ref_problem = True
        elif rec.pid is not None:
            ref_pids.add(rec.pid)
            ref_records += 1
    assert (pids, stats.records, bool(stats.problem)) == (ref_pids, ref_records, ref_problem)


# --- the layout files ---------------------------------------------------------------------


@given(texts_of(HEADER_PAGES), st.sampled_from(["little", "big", "middle"]))
def test_parse_header_page_is_total(text: str, byteorder: str) -> None:
    check_total(lambda: parse_header_page(text, byteorder), returns=PageLayout,
                raises=(FormatError,))


@given(texts_of([HEADER_EVENT]))
def test_parse_header_event_is_total(text: str) -> None:
    check_total(lambda: parse_header_event(text), returns=EventHeader, raises=(FormatError,))


@given(texts_of(EVENT_FORMATS))
def test_parse_event_format_is_total(text: str) -> None:
    check_total(lambda: parse_event_format(text), returns=Field, raises=(FormatError,))


@given(texts_of(HEADER_PAGES), texts_of([HEADER_EVENT]), texts_of(EVENT_FORMATS),
       st.sampled_from(REAL_PAGES))
def test_any_layout_files_give_a_walker_or_unusable(header_page: str, header_event: str,
                                                    event_format: str, page: bytes) -> None:
    """The layout loader on a tracefs whose files say anything: a walker that walks
    a real page without raising, or Unusable (what the daemon reports)."""
    with tempfile.TemporaryDirectory() as tracing:
        events = Path(tracing) / "events"
        (events / "ftrace" / "print").mkdir(parents=True)
        (events / "header_page").write_text(header_page, "utf-8", "surrogatepass")
        (events / "header_event").write_text(header_event, "utf-8", "surrogatepass")
        (events / "ftrace" / "print" / "format").write_text(event_format, "utf-8",
                                                            "surrogatepass")
        layout = check_total(lambda: load_layout(tracing), returns=RawLayout,
                             raises=(Unusable,))
    if isinstance(layout, RawLayout):
        check_total(lambda: walk(layout.walker, page), returns=tuple)

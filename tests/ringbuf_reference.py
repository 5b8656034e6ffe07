"""The slow, complete decoder of a ring-buffer page — a reference for the tests:
`PageWalker.walk_into` must find exactly the pids and records this finds."""

from __future__ import annotations

from typing import Iterator, Set, Tuple, Union

from gtp5g_operator.trace.ringbuf import Buffer, PageStats, PageWalker, Record


def walk(walker: PageWalker, page: Buffer) -> Tuple[Set[int], PageStats]:
    """The distinct pids of the page's data records, and the page's stats."""
    pids: Set[int] = set()
    return pids, walker.walk_into(page, pids)


def iter_records(walker: PageWalker, page: Buffer) -> Iterator[Union[Record, str]]:
    """Every record of a page, slowly and in order; a str is the problem that stopped it."""
    size, _lost, problem = walker.page_header(page)
    off = walker.layout.data_offset
    end = off + size
    if problem:
        yield problem
    while off < end:
        rec = walker.decode(page, off, end)
        yield rec
        if isinstance(rec, str) or rec.length == 0:
            return
        off += rec.length

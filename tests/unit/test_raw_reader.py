"""The raw trace source against a fake tracefs: FIFOs for the per-CPU raw files
(pages written into them are read back one per read(), as from the kernel),
plain files for the layout, stats and CPU lists, and a FIFO for trace_pipe.

Real pages come from tests/data/ringbuf/ (captured on a 6.18 kernel); small
pages with chosen pids are built here in the kernel's layout.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pytest

from gtp5g_operator.config import Config, TraceConfig
from gtp5g_operator.service.daemon import Daemon
from gtp5g_operator.trace import lost, raw_reader
from gtp5g_operator.trace import source as source_module
from gtp5g_operator.trace import tracefs as tracefs_module
from gtp5g_operator.trace.feed import TraceFeed
from gtp5g_operator.trace.raw_reader import MIN_CPU_PAGES, RawTraceSource
from gtp5g_operator.trace.readers import READERS, choose
from gtp5g_operator.trace.readers import Reader as ReaderClass
from gtp5g_operator.trace.ringbuf import MISSED_EVENTS, MISSED_STORED
from gtp5g_operator.trace.source import REST, TraceCounters, TraceSource
from gtp5g_operator.trace.text_reader import TextTraceSource
from gtp5g_operator.trace.tracefs import parse_cpu_list, parse_cpu_stats
from testbed.harness import GnbProcess
from testbed.tracelines import gtp5g_line
from tests.doubles import Clock, RecordingWriter

RINGBUF = Path(__file__).resolve().parent.parent / "data" / "ringbuf"
PAGES: List[Dict[str, Any]] = json.loads((RINGBUF / "pages.json").read_text())
PAGE = 4096


def page(*pids: int, flags: int = 0, missed: Optional[int] = None, size: int = PAGE) -> bytes:
    """A sub-buffer of the kernel's layout (64-bit, little-endian), one record per pid."""
    body = b"".join(struct.pack("<IHBBiI", 3, 550, 0, 1, pid, 0) for pid in pids)
    head = struct.pack("<QQ", 1, len(body) | flags | ((0xFFFFFFFF << 32) if flags else 0))
    tail = struct.pack("<Q", missed) if missed is not None else b""
    return (head + body + tail).ljust(size, b"\0")


def stats_text(overrun: int = 0, dropped: int = 0, read: int = 0) -> str:
    return (f"entries: 0\noverrun: {overrun}\ncommit overrun: 0\nbytes: 0\n"
            "oldest event ts:  1.000000\nnow ts:  2.000000\n"
            f"dropped events: {dropped}\nread events: {read}\n")


class FakeTracefs:
    """tmp/tracing with the files the raw reader uses, CPUs as FIFOs."""

    def __init__(self, root: Path, cpus: int = 2, subbuf_kb: Optional[int] = 4) -> None:
        self.dir = root / "tracing"
        (self.dir / "events" / "bpf_trace" / "bpf_trace_printk").mkdir(parents=True)
        shutil.copy(RINGBUF / "header_event", self.dir / "events" / "header_event")
        header_page = "header_page-8k" if subbuf_kb == 8 else "header_page"
        shutil.copy(RINGBUF / header_page, self.dir / "events" / "header_page")
        shutil.copy(RINGBUF / "bpf_trace_printk.format",
                    self.dir / "events" / "bpf_trace" / "bpf_trace_printk" / "format")
        if subbuf_kb is not None:
            (self.dir / "buffer_subbuf_size_kb").write_text(f"{subbuf_kb}\n")
        os.mkfifo(self.dir / "trace_pipe")
        self.online = root / "online"
        self.online.write_text(f"0-{cpus - 1}\n")
        self.writers: Dict[int, int] = {}
        for cpu in range(cpus):
            self.add_cpu(cpu)

    @property
    def pipe(self) -> str:
        return str(self.dir / "trace_pipe")

    def add_cpu(self, cpu: int) -> None:
        d = self.dir / "per_cpu" / f"cpu{cpu}"
        d.mkdir(parents=True)
        os.mkfifo(d / "trace_pipe_raw")
        (d / "stats").write_text(stats_text())

    def stats(self, cpu: int, **counts: int) -> None:
        (self.dir / "per_cpu" / f"cpu{cpu}" / "stats").write_text(stats_text(**counts))

    def write(self, cpu: int, *pages: bytes) -> None:
        """Pages into a CPU's raw FIFO (the source must have opened it)."""
        if cpu not in self.writers:
            self.writers[cpu] = os.open(self.dir / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw",
                                        os.O_WRONLY | os.O_NONBLOCK)
        for p in pages:
            assert os.write(self.writers[cpu], p) == len(p)  # a page at most PIPE_BUF: whole

    def close(self) -> None:
        for fd in self.writers.values():
            os.close(fd)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FakeTracefs]:
    f = FakeTracefs(tmp_path)
    yield f
    f.close()


class Reader:
    """A raw source on a fake tracefs, and what it handed on."""

    def __init__(self, fs: FakeTracefs, **kwargs: Any) -> None:
        self.clock = Clock()
        self.seen: List[Set[int]] = []
        self.source = RawTraceSource(fs.pipe, self.clock, self.seen.append,
                                     require_tracefs=False, online_path=str(fs.online), **kwargs)

    def turn(self) -> Set[int]:
        """Ring the doorbell once; the task IDs handed on."""
        before = len(self.seen)
        self.source.on_readable(self.source._fds[0])
        return set().union(*self.seen[before:])


@pytest.fixture
def reader(fs: FakeTracefs) -> Iterator[Reader]:
    r = Reader(fs)
    assert r.source.open(), r.source.unusable
    yield r
    r.source.close()


# --- reading ------------------------------------------------------------------------------


def test_pids_of_every_cpu_are_handed_on_and_counted(fs: FakeTracefs, reader: Reader) -> None:
    real = [p for p in PAGES if p["file"].startswith("printk-")]
    fs.write(0, page(11, 12, 11))
    fs.write(1, *((RINGBUF / p["file"]).read_bytes() for p in real))
    assert reader.turn() == {11, 12}.union(*(p["pids"] for p in real))
    counters = reader.source.counters
    assert counters.lines == 3 + sum(p["records"] for p in real)
    assert counters.bytes == 3 * 16 + sum(p["commit"] for p in real)
    assert reader.source.watched_fds() == ()  # a small turn rests the doorbell
    assert reader.source.next_deadline() == reader.clock.now + REST
    assert reader.turn() == set()  # drained


def test_only_the_doorbell_is_watched(reader: Reader) -> None:
    assert list(reader.source.watched_fds()) == list(reader.source._fds)
    assert len(reader.source._fds) == 1 and len(reader.source.cpus) == 2
    assert reader.source._fds[0] not in reader.source.cpus.values()


def test_a_turn_is_bounded_per_cpu_and_a_full_one_does_not_rest(fs: FakeTracefs) -> None:
    r = Reader(fs, turn_pages=2)  # per CPU: MIN_CPU_PAGES
    assert r.source.open()
    try:
        fs.write(0, *(page(100 + n) for n in range(MIN_CPU_PAGES + 3)))
        fs.write(1, page(7))
        assert r.turn() == {7} | {100 + n for n in range(MIN_CPU_PAGES)}
        assert r.source.watched_fds() == r.source._fds  # data left: no rest
        assert r.turn() == {100 + MIN_CPU_PAGES + n for n in range(3)}
        assert r.source.watched_fds() == ()
    finally:
        r.source.close()


def test_a_busy_cpu_among_many_gets_the_turns_unused_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big host: 256 possible CPUs, 128 online with holes (after offlining), one
    CPU streaming.  A turn's share per CPU is MIN_CPU_PAGES there, and the busy
    CPU must get the pages the 127 empty ones left: not 127 empty reads per 8 pages."""
    fs = FakeTracefs(tmp_path, cpus=256)
    fs.online.write_text("0-63,128-191\n")
    r = Reader(fs)
    assert r.source.open()
    reads: List[int] = []
    real_readv = os.readv

    def readv(fd: int, buffers: Any) -> int:
        reads.append(fd)
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", readv)
    try:
        assert sorted(r.source.cpus) == [*range(64), *range(128, 192)]
        pages = 2 * MIN_CPU_PAGES  # what the FIFO holds (64 KiB)
        fs.write(130, *(page(1000 + n) for n in range(pages)))
        assert r.turn() == {1000 + n for n in range(pages)}  # all of it, in one turn
        assert r.source.watched_fds() == ()  # drained: the doorbell rests
        assert len(reads) == 127 + pages + 1  # each other CPU once, the busy one to its end
    finally:
        r.source.close()
        fs.close()


def test_the_sub_buffer_size_is_read_not_assumed(tmp_path: Path) -> None:
    fs = FakeTracefs(tmp_path, cpus=1, subbuf_kb=8)
    r = Reader(fs)
    try:
        assert r.source.open() and r.source.layout is not None
        assert r.source.layout.read_size == 8192
        big = [p for p in PAGES if p["size"] == 8192]
        for p in big:  # 8 KiB: two PIPE_BUF writes each, read back whole
            data = (RINGBUF / p["file"]).read_bytes()
            fs.write(0, data[:4096], data[4096:])
        assert r.turn() == set().union(*(p["pids"] for p in big))
        assert r.source.counters.lines == sum(p["records"] for p in big)
    finally:
        r.source.close()
        fs.close()


def test_a_changed_sub_buffer_size_reopens_the_source(fs: FakeTracefs, reader: Reader) -> None:
    (fs.dir / "buffer_subbuf_size_kb").write_text("8\n")
    shutil.copy(RINGBUF / "header_page-8k", fs.dir / "events" / "header_page")
    reader.source.liveness_check()
    assert not reader.source.is_open and reader.source.retry_at is not None
    reader.clock.now = reader.source.retry_at
    reader.source.run_due(reader.clock.now)
    assert reader.source.is_open and reader.source.layout is not None
    assert reader.source.layout.read_size == 8192


def test_tracefs_gone_from_under_the_open_source_is_not_called_a_size_change(
        fs: FakeTracefs, reader: Reader, caplog: pytest.LogCaptureFixture) -> None:
    """`umount -l` of tracefs under the daemon: the open fds still read, but the files
    beside them are gone; seen first as buffer_subbuf_size_kb unreadable (on 6.18 the
    log said 'sub-buffer size changed (4096 -> None bytes)')."""
    (fs.dir / "buffer_subbuf_size_kb").unlink()
    reader.source.liveness_check()
    assert not reader.source.is_open
    assert f"{fs.dir}/buffer_subbuf_size_kb can no longer be read: reopening the raw trace " \
           "source" in caplog.text
    assert "size changed" not in caplog.text


def test_a_malformed_page_warns_once_and_keeps_what_it_could_read(
        fs: FakeTracefs, reader: Reader, caplog: pytest.LogCaptureFixture) -> None:
    bad = bytearray(page(21, 22))
    bad[8:16] = struct.pack("<Q", 5000)  # a commit beyond the page
    fs.write(0, bytes(bad), bytes(bad))
    assert 21 in reader.turn()
    assert [r.levelname for r in caplog.records if "malformed" in r.message] == ["WARNING"]


def test_enodev_closes_that_cpu_only(fs: FakeTracefs, reader: Reader,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    gone = reader.source.cpus[1]
    real_readv = os.readv

    def readv(fd: int, buffers: Any) -> int:
        if fd == gone:
            raise OSError(errno.ENODEV, "No such device")
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", readv)
    fs.write(0, page(31))
    assert reader.turn() == {31}
    assert list(reader.source.cpus) == [0] and reader.source.is_open


def test_another_read_error_reopens_with_backoff(fs: FakeTracefs, reader: Reader,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def readv(fd: int, buffers: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "readv", readv)
    reader.turn()
    assert not reader.source.is_open and reader.source.retry_at is not None
    assert reader.source.counters.reopens == 1 and not reader.source.cpus


# --- lost events ----------------------------------------------------------------------------


def lost_warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "dropped" in r.getMessage()]


def test_another_reader_is_said_once_per_episode_and_its_end_too(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture) -> None:
    """A second reader of a CPU's trace_pipe_raw (a `cat`, trace-cmd) takes its share of
    the gNB's events.  It was warned about once for the daemon's life: its end was never
    said, and the next one (another day, another `cat`) took events without a word."""
    clock, counters = Clock(), TraceCounters()
    loss = lost.LossCounter(counters, str(fs.dir), clock, lambda: True)
    loss.watch(0)
    caplog.set_level(logging.INFO, logger=lost.__name__)

    def pass_with(read: int, seconds: float) -> List[str]:
        """A liveness pass `seconds` on, the CPU's stats at `read` events consumed (none
        of them by this reader): what it said."""
        fs.stats(0, read=read)
        clock.now += seconds
        before = len(caplog.records)
        loss.poll()
        return [f"{r.levelname} {r.getMessage()}" for r in caplog.records[before:]]

    first = pass_with(1000, 1)
    assert len(first) == 1 and first[0].startswith("WARNING another reader is taking trace "
                                                   "events from this ring (1000 of them"), first
    assert pass_with(1500, 1) == []  # the same episode
    assert pass_with(1500, lost.EPISODE_QUIET - 1) == []
    ended = pass_with(1500, 1)
    assert ended == ["INFO no other reader has taken trace events from this ring for 10 s "
                     "(1500 were taken in that episode)"], ended
    again = pass_with(2500, 60)
    assert len(again) == 1 and again[0].startswith("WARNING another reader is taking trace "
                                                   "events from this ring (1000 of them"), again


def test_lost_events_come_from_stats_once_per_episode(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fs.stats(1, overrun=500)  # lost before the daemon started: not counted
    r = Reader(fs)
    assert r.source.open()
    try:
        fs.stats(1, overrun=500 + 728)
        fs.write(1, (RINGBUF / "missed-cpu1-1.bin").read_bytes())
        r.turn()
        assert r.source.counters.lost_events == 728
        assert lost_warnings(caplog) == [
            "the kernel dropped 728 trace events on CPU 1: the ring buffer is too small for "
            "this stream or the daemon is capped too hard (counted in trace_lost_events; "
            "warning once per episode, for all CPUs)"]
        fs.stats(1, overrun=1300)
        fs.write(1, page(5, flags=MISSED_EVENTS))  # full page: no room for the count
        r.turn()
        assert r.source.counters.lost_events == 800 and len(lost_warnings(caplog)) == 1
        r.clock.now += lost.EPISODE_QUIET
        r.source.liveness_check()  # the episode ends
        assert any("800 were dropped in that episode" in m.getMessage()
                   for m in caplog.records)
        fs.stats(0, dropped=3)  # a full buffer in non-overwrite mode flags no page
        r.source.liveness_check()
        assert r.source.counters.lost_events == 803
        assert "3 trace events on CPU 0" in lost_warnings(caplog)[-1]
    finally:
        r.source.close()


def test_a_loss_on_every_cpu_is_one_warning_and_one_line_when_it_ends(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A flood that overran every CPU's ring (the reader capped, the ring too small:
    the host's causes) was a warning and an info line per CPU, 128 lines an episode
    on a 64-CPU host; and a CPU that lost again soon after kept the episode going."""
    caplog.set_level(logging.INFO)
    fs = FakeTracefs(tmp_path, cpus=16)
    r = Reader(fs)
    assert r.source.open()
    try:
        for rounds in range(1, 4):  # losses on every CPU over three passes
            for cpu in range(16):
                fs.stats(cpu, overrun=10 * rounds)
            r.clock.now += 1.0
            r.source.liveness_check()
        assert r.source.counters.lost_events == 480
        assert len(lost_warnings(caplog)) == 1
        r.clock.now += lost.EPISODE_QUIET
        r.source.liveness_check()
        ended = [m.getMessage() for m in caplog.records if "in that episode" in m.getMessage()]
        assert ended == ["no trace events dropped for 10 s; 480 were dropped in that episode "
                         "(2 s long, on 16 CPUs (0, 1, 2, 3, 4, 5, 6, 7, …))"]
        fs.stats(5, overrun=31)  # a new episode
        r.source.liveness_check()
        assert len(lost_warnings(caplog)) == 2 and "1 trace events on CPU 5" in (
            lost_warnings(caplog)[-1])
    finally:
        r.source.close()


def test_without_stats_the_pages_counts_are_summed(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture) -> None:
    for cpu in (0, 1):
        os.unlink(fs.dir / "per_cpu" / f"cpu{cpu}" / "stats")
    r = Reader(fs)
    assert r.source.open()
    try:
        fs.write(0, page(1, flags=MISSED_EVENTS | MISSED_STORED, missed=40),
                 page(2, flags=MISSED_EVENTS | MISSED_STORED, missed=2))
        fs.write(1, page(3, flags=MISSED_EVENTS))
        assert r.turn() == {1, 2, 3}
        assert r.source.counters.lost_events == 42
        warned = lost_warnings(caplog)  # once for both CPUs, with the first page's count
        assert len(warned) == 1
        assert "dropped 40 trace events on CPU 0" in warned[0]
    finally:
        r.source.close()


# --- CPUs that come online later ----------------------------------------------------------------


def test_a_cpu_that_comes_online_is_read_after_the_liveness_pass(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO)
    fs.online.write_text("0\n")  # cpu1 exists in per_cpu but is offline
    r = Reader(fs)
    assert r.source.open()
    try:
        assert list(r.source.cpus) == [0]
        fs.online.write_text("0-1\n")
        fs.add_cpu(2)  # and a CPU tracefs did not list at all before
        fs.online.write_text("0-2\n")
        r.source.liveness_check()
        assert sorted(r.source.cpus) == [0, 1, 2]
        fs.write(2, page(77))
        assert r.turn() == {77}
        assert sum("CPU 2 too (it came online)" in m.getMessage() for m in caplog.records) == 1
    finally:
        r.source.close()


def test_a_doorbell_with_nothing_readable_looks_for_cpus_and_rests_longer(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture) -> None:
    fs.online.write_text("0\n")
    r = Reader(fs)
    assert r.source.open()
    try:
        assert r.turn() == set()  # an empty ring: cpu1 is looked for at once
        assert sorted(r.source.cpus) == [0, 1]
        assert r.source.next_deadline() == r.clock.now + 2 * REST
        for _ in range(1200):  # minutes of it: the rest stays capped (and finite)
            r.source._rest_until = None
            r.turn()
        assert r.source.next_deadline() == r.clock.now + raw_reader.EMPTY_REST_MAX
        assert sum("none of the 2 per-CPU raw files" in m.getMessage()
                   for m in caplog.records) == 1  # said once
        fs.write(1, page(9))
        r.source._rest_until = None
        assert r.turn() == {9}
        assert r.source.next_deadline() == r.clock.now + REST
    finally:
        r.source.close()


# --- what cannot be read this way --------------------------------------------------------------


def test_a_fifo_is_not_raw_and_is_never_opened(fs: FakeTracefs,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    opened: List[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    src = RawTraceSource(fs.pipe, Clock(), lambda tids: None)  # require_tracefs
    assert not src.open()
    assert "not the kernel's trace_pipe on tracefs" in src.unusable
    assert src.retry_at is None and not src.is_open
    # a writer blocked in open() would take even a brief open for the text reader's
    assert fs.pipe not in opened


@pytest.mark.parametrize("remove", ["events/header_page", "events/header_event", "per_cpu"])
def test_a_kernel_without_the_layout_or_the_raw_files_is_unusable(
        fs: FakeTracefs, remove: str) -> None:
    target = fs.dir / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    src = Reader(fs).source
    assert not src.open() and src.unusable and not src.is_open
    if remove != "per_cpu":  # the file that is missing, and why (once "(None: None)")
        assert src.unusable == (f"cannot read the ring buffer's layout ({fs.dir / remove}: "
                                "No such file or directory)")


def test_a_kernel_without_any_event_format_is_unusable_and_says_which(fs: FakeTracefs) -> None:
    shutil.rmtree(fs.dir / "events" / "bpf_trace")
    src = Reader(fs).source
    assert not src.open()
    assert src.unusable == ("cannot read the ring buffer's layout "
                            f"({fs.dir / raw_reader.EVENT_FORMATS[0]}: No such file or directory)")


def test_a_missing_trace_pipe_is_waited_for(tmp_path: Path) -> None:
    src = RawTraceSource(str(tmp_path / "none" / "trace_pipe"), Clock(), lambda tids: None)
    assert not src.open()
    assert not src.unusable and src.retry_at is not None  # retried with backoff


def feed(config: TraceConfig, readers: Sequence[ReaderClass] = READERS) -> TraceFeed:
    return TraceFeed(config, Clock(), lambda tids: None, readers)


def fake_raw(fs: FakeTracefs) -> ReaderClass:
    """The raw reader over the fake tracefs (not a tracefs mount, its own CPU list)."""

    class FakeRaw(RawTraceSource):
        @classmethod
        def problem(cls, pipe: str, proc: str = "/proc") -> str:
            return ""

        @classmethod
        def create(cls, config: TraceConfig, clock: Callable[[], float], on_tids: Any,
                   counters: TraceCounters) -> TraceSource:
            return cls(config.pipe, clock, on_tids, counters, require_tracefs=False,
                       online_path=str(fs.online))

    return FakeRaw


class TriesRawFirst(RawTraceSource):
    """The real raw reader, as if the source looked like tracefs's trace_pipe."""

    @classmethod
    def problem(cls, pipe: str, proc: str = "/proc") -> str:
        return ""


@pytest.mark.parametrize("fmt,level", [("raw", logging.WARNING), ("auto", logging.INFO)])
def test_the_feed_falls_back_to_text_with_one_line(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture, fmt: str, level: int) -> None:
    caplog.set_level(logging.INFO)
    f = feed(TraceConfig(pipe=fs.pipe, format=fmt), (TriesRawFirst, TextTraceSource))
    try:
        assert f.source.kind == "raw"
        assert f.open()
        assert isinstance(f.source, TextTraceSource) and f.source.kind == "text"
        assert f.source.is_open
        lines = [r for r in caplog.records if "with the text reader instead" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == level
        assert f"trace.format = {fmt}" in lines[0].getMessage()
    finally:
        f.close()


def test_auto_waits_as_raw_and_reads_a_fifo_that_appears_as_text(tmp_path: Path) -> None:
    pipe = tmp_path / "later" / "trace_pipe"
    f = feed(TraceConfig(pipe=str(pipe)))
    try:
        assert f.source.kind == "raw" and not f.open()
        pipe.parent.mkdir()
        os.mkfifo(pipe)
        retry = f.source.retry_at
        assert retry is not None
        f.run_due(retry)
        assert f.source.kind == "text" and f.source.is_open and f.counters is f.source.counters
    finally:
        f.close()


def test_choose_format(tmp_path: Path, fs: FakeTracefs) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    assert choose(TraceConfig(pipe=fs.pipe)).kind == "text"  # a FIFO
    assert choose(TraceConfig(pipe=str(plain))).kind == "text"
    assert choose(TraceConfig(pipe=str(tmp_path / "nothing"))).kind == "raw"
    assert choose(TraceConfig(pipe=fs.pipe, format="raw")).kind == "raw"
    assert choose(TraceConfig(pipe=str(tmp_path / "nothing"), format="text")).kind == "text"
    counters = TraceCounters()
    config = TraceConfig(pipe=fs.pipe)
    src = choose(config).create(config, Clock(), lambda tids: None, counters)
    assert isinstance(src, TextTraceSource) and src.counters is counters


def test_a_reload_to_raw_keeps_the_counters(fs: FakeTracefs, tmp_path: Path) -> None:
    text_fifo = tmp_path / "text_pipe"
    os.mkfifo(text_fifo)

    f = feed(TraceConfig(pipe=str(text_fifo)), (fake_raw(fs), TextTraceSource))
    try:
        assert f.open() and f.source.kind == "text"
        f.counters.lines = 5
        f.reconfigure(Config(trace=TraceConfig(pipe=str(text_fifo))),
                      Config(trace=TraceConfig(pipe=fs.pipe, format="raw")))
        assert f.source.kind == "raw" and f.source.is_open and f.source.path == str(fs.dir)
        fs.write(0, page(3))
        f.source._rest_until = None
        f.on_readable(f.source._fds[0])
        assert f.counters.lines == 6
    finally:
        f.close()


# --- tracefs helpers ------------------------------------------------------------------------------


def test_cpu_lists() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpu_list("\n") == set()
    with pytest.raises(ValueError):
        parse_cpu_list("a-b")


def test_stats_of_this_kernel() -> None:
    text = ("entries: 12\noverrun: 3\ncommit overrun: 1\nbytes: 480\n"
            "oldest event ts:  1825.426535\nnow ts:  2410.494546\n"
            "dropped events: 2\nread events: 2999\n")
    s = parse_cpu_stats(text)
    assert (s.entries, s.overrun, s.commit_overrun, s.bytes, s.dropped_events,
            s.read_events) == (12, 3, 1, 480, 2, 2999)
    assert s.lost == 6
    assert parse_cpu_stats("garbage\noverrun: x\n").overrun == 0


# --- in the daemon's loop -------------------------------------------------------------------


def test_the_daemon_reads_raw_and_its_liveness_pass_picks_up_a_new_cpu(
        fs: FakeTracefs, tmp_path: Path) -> None:
    fs.online.write_text("0\n")
    clock, writer = Clock(), RecordingWriter()

    d = Daemon(Config(trace=TraceConfig(pipe=fs.pipe, format="raw")),
               str(tmp_path / "config.toml"), env={"RUNTIME_DIRECTORY": str(tmp_path / "run")},
               clock=clock, wall_clock=clock, make_writer=lambda c: writer,
               readers=(fake_raw(fs), TextTraceSource))
    d.notifier.send = lambda *fields: None  # type: ignore[method-assign]
    g = GnbProcess(threads=())
    d.setup()
    bell = os.open(fs.pipe, os.O_WRONLY | os.O_NONBLOCK)  # once the source holds it
    try:
        assert d.trace.source.kind == "raw" and list(d.trace.source.cpus) == [0]  # type: ignore
        fs.online.write_text("0-1\n")
        clock.now += d.config.strategy.liveness_interval
        d.run_once()  # the liveness pass: cpu1 is read from now on
        assert sorted(d.trace.source.cpus) == [0, 1]  # type: ignore[attr-defined]
        fs.write(1, page(g.pid))
        os.write(bell, b"x")  # the doorbell rings (and, never read, keeps ringing)
        d.run_once()
        assert d.trace.counters.lines == 1
        clock.now += 1.0
        d.run_once()
        assert writer.writes[-1] == [g.pid]
    finally:
        os.close(bell)
        g.stop()
        d.close()


def test_the_liveness_pass_says_once_when_the_bpf_printk_event_is_turned_off(
        fs: FakeTracefs, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reset (`echo 0 > events/enable`, reset scripts) turns off the event bpf_printk
    writes through: the tracer runs, the ring gets none of its lines, and the open source
    waits in silence.  The kernel turns the event on again when the tracer is loaded."""
    caplog.set_level(logging.INFO)
    enable = fs.dir / "events" / "bpf_trace" / "bpf_trace_printk" / "enable"
    enable.write_text("1\n")
    clock = Clock()
    d = Daemon(Config(trace=TraceConfig(pipe=fs.pipe, format="raw")),
               str(tmp_path / "config.toml"), env={"RUNTIME_DIRECTORY": str(tmp_path / "run")},
               clock=clock, wall_clock=clock, make_writer=lambda c: RecordingWriter(),
               readers=(fake_raw(fs), TextTraceSource))
    d.notifier.send = lambda *fields: None  # type: ignore[method-assign]
    d.setup()

    def passes(n: int) -> List[str]:
        for _ in range(n):
            clock.now += d.config.strategy.liveness_interval
            d.run_once()
        return [r.getMessage() for r in caplog.records if r.name == "gtp5g_operator.trace.feed"]

    try:
        assert d.trace.source.is_open and passes(1) == []
        enable.write_text("0\n")
        assert passes(3) == [
            f"bpf_printk lines are not recorded ({enable} = 0): the kernel records no gtp5g "
            "tracer line, so no gNB task can be seen; load the gtp5g tracer (loading it "
            "turns the event on; load it again after a reset turned every event off), or "
            f"echo 1 > {enable}"]
        enable.write_text("1\n")
        assert passes(2)[1:] == [f"the kernel records trace lines in {fs.dir} again"]
        # Lines that arrive with the event off (trace_marker's: a replay, the real-kernel
        # tests) are not stopped by it: it is not named then (until a pass gets nothing).
        enable.write_text("0\n")
        bell = os.open(fs.pipe, os.O_WRONLY | os.O_NONBLOCK)  # the source holds it
        try:
            for _ in range(3):
                fs.write(0, page(4242))
                os.write(bell, b"x")
                d.run_once()
                assert passes(1)[2:] == []
            assert d.trace.counters.lines == 3
        finally:
            os.close(bell)
        said = passes(1)[2:]  # nothing read: now it is named, once, whatever comes after
        assert len(said) == 1 and said[0].startswith("bpf_printk lines are not recorded")
    finally:
        d.close()


HOLD = ("import os, sys, time\n"
        "os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


def test_a_reader_that_holds_trace_pipe_first_is_named(
        fs: FakeTracefs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel lets one process hold trace_pipe and refuses the next with a bare
    EBUSY: the daemon names the holder (its /proc/PID/fd, which the unit's
    CAP_SYS_PTRACE lets it read), so nobody has to guess which `cat` to stop; /proc is
    walked once per episode, not at every retry."""
    walks: List[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        walks.append(1)
        return tracefs_module.holders(*args, **kwargs)

    monkeypatch.setattr(source_module, "holders", counted)

    class Refused(TextTraceSource):
        def _open_fds(self) -> Tuple[int, ...]:  # the kernel's answer to a second open
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), self.path)

    other = subprocess.Popen([sys.executable, "-c", HOLD, fs.pipe], stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"held\n"
        src = Refused(fs.pipe, Clock(), lambda tids: None)
        assert not src.open() and not src.open()
        assert len(walks) == 1
    finally:
        other.kill()
        other.wait()
    comm = Path(f"/proc/{os.getpid()}/comm")  # the child runs the same interpreter
    assert src.problem_now == (f"cannot open trace source {fs.pipe}: another reader holds it "
                               f"(EBUSY): PID {other.pid} ({comm.read_text().strip()})")


def test_a_fifo_writer_that_delivered_lines_is_reopened_after_the_first_step(
        tmp_path: Path) -> None:
    """A replay tool that opens the FIFO, writes and closes, again and again: every
    session ends in EOF, but each delivered lines, so the reopen must not wait longer
    each time (it grew to 5 s, and the next writer blocked in open() that long)."""
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    clock = Clock()
    seen: List[Set[int]] = []
    src = TextTraceSource(str(fifo), clock, seen.append)
    delays: List[float] = []
    try:
        for i in range(8):
            if not src.is_open:
                assert src.retry_at is not None
                clock.now = src.retry_at
                src.run_due(clock.now)
            assert src.is_open
            w = os.open(fifo, os.O_WRONLY)
            os.write(w, gtp5g_line("nr-gnb", 100 + i, 100 + i).encode())
            os.close(w)
            (fd,) = src.watched_fds()
            src.on_readable(fd)  # the lines and the EOF, in one turn
            assert {100 + i} in seen
            assert not src.is_open and src.retry_at is not None
            delays.append(src.retry_at - clock.now)
    finally:
        src.close()
    assert max(delays) <= 0.2, delays  # the backoff's first step (with its jitter)


def test_a_loss_names_the_other_tracing_that_fills_the_ring(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture) -> None:
    """Another tool's events (or tracer) in the same instance: every record is read like
    the gNB's, so a loss is likelier theirs than the buffer's or the cap's (seen on 6.18
    with events/{sched,syscalls,timer,irq,kmem} enabled under the running daemon)."""
    (fs.dir / "set_event").write_text("bpf_trace:bpf_trace_printk\nsched:sched_switch\n"
                                      "sched:sched_wakeup\nirq:irq_handler_entry\n"
                                      "kmem:kmalloc\n")
    (fs.dir / "current_tracer").write_text("function\n")
    src = TextTraceSource(fs.pipe, Clock(), lambda tids: None, require_tracefs=False)
    assert src.open()
    try:
        fs.stats(0, overrun=10)
        src.liveness_check()
    finally:
        src.close()
    assert lost_warnings(caplog) == [
        "the kernel dropped 10 trace events on CPU 0: the ring buffer is too small for this "
        "stream or the daemon is capped too hard; the instance also records current_tracer "
        "= function and 4 enabled events (irq:irq_handler_entry, kmem:kmalloc, "
        "sched:sched_switch, …), which fill the ring too (counted in trace_lost_events; "
        "warning once per episode, for all CPUs)"]


def test_the_text_reader_counts_what_the_kernel_dropped_from_the_stats(
        fs: FakeTracefs, caplog: pytest.LogCaptureFixture) -> None:
    """trace_pipe's `CPU:N [LOST M EVENTS]` lines and the per-CPU stats say the same;
    the stats are exact and cost nothing per line (read at each liveness pass)."""
    fs.stats(1, overrun=500)  # lost before the daemon started: not counted
    clock = Clock()
    src = TextTraceSource(fs.pipe, clock, lambda tids: None, require_tracefs=False)
    assert src.open()
    try:
        fs.stats(1, overrun=728)
        fs.stats(0, dropped=3)
        src.liveness_check()
        assert src.counters.lost_events == 231
        assert len(lost_warnings(caplog)) == 1  # one episode, both CPUs
        src.liveness_check()  # nothing new: nothing counted twice
        assert src.counters.lost_events == 231
    finally:
        src.close()
    fifo_only = TextTraceSource(fs.pipe, clock, lambda tids: None)  # not tracefs: no stats
    assert fifo_only.open()
    try:
        fs.stats(1, overrun=1000)
        fifo_only.liveness_check()
        assert fifo_only.counters.lost_events == 0
    finally:
        fifo_only.close()

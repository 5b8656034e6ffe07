"""doctor's trace checks over a fake tracefs: a test advances the per-CPU `stats`
counters while doctor "sleeps" (the sleep is injected), and a fake mount table says
which directory is tracefs.  Nothing here opens trace_pipe: it is a plain file or a
FIFO that no test writes to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import pytest

from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check
from gtp5g_operator.commands.doctor.trace import (
    TraceSite,
    buffer_kb,
    locate,
    trace_checks,
    watch,
)
from gtp5g_operator.config import TraceConfig
from gtp5g_operator.trace import tracefs

RINGBUF = Path(__file__).resolve().parent.parent / "data" / "ringbuf"  # captured on 6.18


class FakeTracefs:
    """A tracing directory: trace_pipe, per_cpu/cpuN/{stats,trace_pipe_raw},
    buffer_size_kb and (optionally) the ring buffer's layout files."""

    def __init__(self, root: Path, cpus: int = 2, fifo: bool = False, layout: bool = True,
                 buffer: str = "1410\n") -> None:
        self.root = root
        root.mkdir(parents=True)
        pipe = root / "trace_pipe"
        if fifo:
            os.mkfifo(pipe)
        else:
            pipe.write_text("")
        (root / "buffer_size_kb").write_text(buffer)
        (root / "buffer_subbuf_size_kb").write_text("4\n")
        self.counters: Dict[int, Dict[str, int]] = {}
        for cpu in range(cpus):
            (root / "per_cpu" / f"cpu{cpu}").mkdir(parents=True)
            (root / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw").write_text("")
            self.set(cpu, entries=0, overrun=0, read_events=0)
        if layout:
            events = root / "events"
            (events / "bpf_trace" / "bpf_trace_printk").mkdir(parents=True)
            shutil.copy(RINGBUF / "header_page", events / "header_page")
            shutil.copy(RINGBUF / "header_event", events / "header_event")
            shutil.copy(RINGBUF / "bpf_trace_printk.format",
                        events / "bpf_trace" / "bpf_trace_printk" / "format")

    def set(self, cpu: int, **counters: int) -> None:
        c = self.counters.setdefault(cpu, {})
        c.update(counters)
        text = (f"entries: {c.get('entries', 0)}\noverrun: {c.get('overrun', 0)}\n"
                "commit overrun: 0\nbytes: 0\noldest event ts:  100.000000\n"
                f"now ts:  200.000000\ndropped events: 0\n"
                f"read events: {c.get('read_events', 0)}\n")
        (self.root / "per_cpu" / f"cpu{cpu}" / "stats").write_text(text)

    def add(self, cpu: int, **more: int) -> None:
        self.set(cpu, **{k: self.counters[cpu].get(k, 0) + v for k, v in more.items()})


def fake_proc(tmp_path: Path, tracefs_at: Optional[Path]) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    lines = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
    if tracefs_at is not None:
        lines += f"118 1 0:13 / {tracefs_at} rw,relatime - tracefs nodev rw\n"
    (proc / "self" / "mountinfo").write_text(lines)
    return proc


def site_of(tmp_path: Path, fs: Optional[FakeTracefs], on_tracefs: bool = True,
            fmt: str = "auto") -> TraceSite:
    root = fs.root if fs is not None else tmp_path / "tracing"
    proc = fake_proc(tmp_path, root if on_tracefs else None)
    return locate(TraceConfig(format=fmt), str(root), str(proc))


def run(site: TraceSite, during: Optional[List[object]] = None,
        window: float = 1.0, service_pid: Optional[int] = None) -> Dict[str, Check]:
    slept: List[float] = []

    def sleep(seconds: float) -> None:  # the window: the test's events "arrive" now
        slept.append(seconds)
        for step in during or []:
            step()  # type: ignore[operator]

    checks = trace_checks(site, watch(site.directory, window, sleep), service_pid)
    assert slept in ([], [window])
    return {c.name: c for c in checks}


@pytest.fixture
def fs(tmp_path: Path) -> FakeTracefs:
    tracefs = FakeTracefs(tmp_path / "tracing")
    tracefs.set(0, overrun=7)
    return tracefs


def test_events_arriving_while_the_service_drains_the_ring(tmp_path: Path,
                                                           fs: FakeTracefs) -> None:
    # A reader keeps up: entries stay flat, read events grow.
    checks = run(site_of(tmp_path, fs), [lambda: fs.add(0, read_events=120),
                                         lambda: fs.add(1, read_events=30)])
    assert checks["trace source"].level == OK
    assert checks["trace source"].saw == f"{fs.root}/trace_pipe is the kernel's trace_pipe"
    assert checks["tracefs"].level == OK and f"mounted at {fs.root}" in checks["tracefs"].saw
    events = checks["trace events"]
    assert events.level == OK
    assert events.saw == "150 events in 1 s (CPU0 120, CPU1 30); 150 read meanwhile (by the " \
                         "service?)"
    assert checks["trace loss"].level == OK
    assert checks["trace loss"].saw == ("7 events lost since the buffer was last reset, none "
                                        "in the last 1 s; buffer 1410 KiB per CPU")
    assert checks["trace reader"].level == OK
    assert checks["trace reader"].saw.startswith("raw: the binary per-CPU ring buffers")
    assert "4096-byte sub-buffers" in checks["trace reader"].saw


def test_events_gathering_with_nobody_reading_count_too(tmp_path: Path,
                                                        fs: FakeTracefs) -> None:
    checks = run(site_of(tmp_path, fs), [lambda: fs.add(1, entries=40)])
    assert checks["trace events"].level == OK
    assert checks["trace events"].saw == ("40 events in 1 s (CPU1 40); none read "
                                          "meanwhile (is the service running?)")


def test_a_big_host_s_events_line_names_the_busy_cpus_not_every_cpu(tmp_path: Path) -> None:
    """256 CPUs: every one was listed ("CPU0 0, CPU1 0, …"), and the check's line, cut to
    600 characters in the middle, lost CPU200, the one the events came on."""
    fs = FakeTracefs(tmp_path / "tracing", cpus=256)
    checks = run(site_of(tmp_path, fs), [lambda: fs.add(200, entries=90),
                                         lambda: fs.add(7, read_events=150)])
    assert checks["trace events"].saw == ("240 events in 1 s (CPU7 150, CPU200 90); 150 read "
                                          "meanwhile (by the service?)")
    many = [lambda cpu=cpu: fs.add(cpu, entries=cpu) for cpu in range(100, 110)]
    checks = run(site_of(tmp_path / "again", fs), list(many))
    assert checks["trace events"].saw == (
        "1045 events in 1 s (CPU109 109, CPU108 108, CPU107 107, CPU106 106, CPU105 105, "
        "CPU104 104, CPU103 103, CPU102 102, … (10 CPUs in all)); none read meanwhile (is "
        "the service running?)")


def test_no_events_in_the_window(tmp_path: Path, fs: FakeTracefs) -> None:
    checks = run(site_of(tmp_path, fs))
    assert checks["trace events"].level == WARN
    assert checks["trace events"].saw == "no trace events in 1 s: is the gtp5g tracer loaded?"
    short = run(site_of(tmp_path / "b", FakeTracefs(tmp_path / "b" / "t")), window=0.25)
    assert short["trace events"].saw.startswith("no trace events in 0.25 s")


def test_a_window_of_0_does_not_ask_whether_the_tracer_is_loaded(
        tmp_path: Path, fs: FakeTracefs) -> None:
    """--window 0 (allowed: "0 to 60") watched nothing, and the check said "no trace
    events in 0 s: is the gtp5g tracer loaded?", sending the admin to load a tracer
    that may be running; the CPU-wait check said "not measured" of the same window.
    A switch that is off is still said: that needs no window."""
    events = run(site_of(tmp_path, fs), window=0)["trace events"]
    assert (events.level, events.saw) == (WARN, "not watched: --window is 0")
    assert "tracer" not in events.advice
    (fs.root / "tracing_on").write_text("0\n")
    assert run(site_of(tmp_path / "b", fs), window=0)["trace events"].saw == (
        f"tracing is off ({fs.root}/tracing_on = 0)")


def test_no_events_while_tracing_is_off_says_so_not_to_load_the_tracer(
        tmp_path: Path, fs: FakeTracefs) -> None:
    """tracing_on = 0 (an admin, or a tool that stopped tracing): the kernel records
    nothing, and a loaded tracer is no help."""
    site = site_of(tmp_path, fs)
    (fs.root / "tracing_on").write_text("0\n")
    events = run(site)["trace events"]
    assert (events.level, events.saw) == (
        WARN, f"no trace events in 1 s: tracing is off ({fs.root}/tracing_on = 0)")
    assert events.advice.startswith(f"echo 1 > {fs.root}/tracing_on")
    (fs.root / "tracing_on").write_text("1\n")
    assert run(site)["trace events"].saw.endswith("is the gtp5g tracer loaded?")


def test_the_bpf_printk_event_turned_off_is_named_not_a_missing_tracer(
        tmp_path: Path, fs: FakeTracefs) -> None:
    """bpf_printk writes through the bpf_trace_printk event, which the kernel turns on in
    the top-level instance only, when a program calling it loads: a reset (`echo 0 >
    events/enable`) drops the loaded tracer's lines, and an instance never gets them.
    Lines that do arrive with it off (trace_marker's: a replay, the real-kernel tests)
    are not stopped by it, and then it is not named."""
    enable = fs.root / "events" / "bpf_trace" / "bpf_trace_printk" / "enable"
    enable.write_text("0\n")
    top = site_of(tmp_path, fs)
    events = run(top)["trace events"]
    assert (events.level, events.saw) == (
        WARN, f"no trace events in 1 s: bpf_printk lines are not recorded ({enable} = 0)")
    assert events.advice.startswith("load the gtp5g tracer") and str(enable) in events.advice
    arriving = run(top, [lambda: fs.add(0, read_events=40)])["trace events"]
    assert arriving.level == OK and "bpf_printk" not in arriving.saw, arriving

    instance = FakeTracefs(tmp_path / "tracing" / "instances" / "gnb")
    enable = instance.root / "events" / "bpf_trace" / "bpf_trace_printk" / "enable"
    enable.write_text("0\n")
    site = site_of(tmp_path / "instance", instance)
    events = run(site)["trace events"]
    assert events.saw == f"no trace events in 1 s: bpf_printk lines are not recorded " \
                         f"({enable} = 0)"
    assert events.advice.startswith("the kernel writes bpf_printk lines to the top-level")
    enable.write_text("1\n")
    assert run(site)["trace events"].saw.endswith(
        "is the gtp5g tracer loaded?")


def holding(proc: Path, pid: int, comm: str, *files: Path) -> None:
    """A process in the fake /proc with `files` open (its fd links point at them)."""
    (proc / str(pid) / "fd").mkdir(parents=True)
    (proc / str(pid) / "comm").write_text(comm + "\n")
    for fd, target in enumerate(files, 3):
        os.symlink(target, proc / str(pid) / "fd" / str(fd))


def test_other_readers_of_the_trace_are_named(tmp_path: Path, fs: FakeTracefs) -> None:
    """Each event goes to one reader, and the kernel refuses a second trace_pipe (EBUSY)
    without saying whose it is: doctor names who holds what, the service apart."""
    site = site_of(tmp_path, fs)
    proc = Path(site.proc)
    assert run(site)["trace readers"].saw.startswith(f"no process reads {fs.root} now")
    holding(proc, 100, "gtp5g-operator", fs.root / "trace_pipe",
            fs.root / "per_cpu" / "cpu0" / "trace_pipe_raw")
    readers = run(site, service_pid=100)["trace readers"]
    assert (readers.level, readers.saw) == (OK, f"only the service (PID 100) reads {fs.root}")
    holding(proc, 4242, "cat", tmp_path / "elsewhere", fs.root / "trace_pipe")
    holding(proc, 77, "trace-cmd\x1b[2J", fs.root / "per_cpu" / "cpu1" / "trace_pipe_raw")
    readers = run(site, service_pid=100)["trace readers"]
    assert (readers.level, readers.saw) == (
        WARN, "PID 77 (trace-cmd\\x1b[2J) holds per_cpu/cpu1/trace_pipe_raw; PID 4242 (cat) "
              f"holds trace_pipe in {fs.root}: each event goes to one reader, and only one "
              "may hold trace_pipe (EBUSY), so the service misses what they take")
    assert readers.advice.startswith("stop them")


def test_a_buffer_that_drops_while_read_says_to_raise_buffer_size_kb(
        tmp_path: Path, fs: FakeTracefs) -> None:
    checks = run(site_of(tmp_path, fs), [lambda: fs.add(0, read_events=900, overrun=55)])
    loss = checks["trace loss"]
    assert loss.level == WARN
    assert loss.saw == ("dropping: 55 events lost in 1 s while being read (62 lost so far; "
                        "buffer 1410 KiB per CPU)")
    assert loss.advice == (f"raise buffer_size_kb (echo 5640 > {fs.root}/buffer_size_kb) or "
                           "the unit's CPUQuota=")
    assert checks["trace events"].saw.startswith("955 events in 1 s")


def test_a_full_buffer_nobody_reads(tmp_path: Path, fs: FakeTracefs) -> None:
    checks = run(site_of(tmp_path, fs), [lambda: fs.add(0, overrun=300)])
    assert checks["trace loss"].level == WARN
    assert "nobody reads the buffer" in checks["trace loss"].saw
    assert checks["trace loss"].advice == "start the service: systemctl start gtp5g-operator"


def test_a_reset_buffer_does_not_count_as_negative_events(tmp_path: Path,
                                                          fs: FakeTracefs) -> None:
    fs.set(0, read_events=1000)
    checks = run(site_of(tmp_path, fs), [lambda: fs.set(0, read_events=0, overrun=0)])
    assert checks["trace events"].level == WARN


@pytest.mark.parametrize("text,kb", [("1410\n", 1410), ("7 (expanded: 1408)\n", 1408),
                                     ("garbage\n", None)])
def test_buffer_size(tmp_path: Path, text: str, kb: Optional[int]) -> None:
    (tmp_path / "buffer_size_kb").write_text(text)
    assert buffer_kb(str(tmp_path)) == kb


def test_a_missing_trace_source_fails(tmp_path: Path) -> None:
    (tmp_path / "tracing").mkdir()  # a mount point: an empty directory
    checks = run(site_of(tmp_path, None, on_tracefs=False))
    assert checks["trace source"].level == FAIL
    assert checks["trace source"].saw == f"{tmp_path}/tracing/trace_pipe does not exist"
    assert "mount -t tracefs" in checks["trace source"].advice
    assert checks["tracefs"].level == FAIL and checks["tracefs"].saw == "tracefs is not mounted"
    assert checks["trace events"].level == WARN
    assert "trace loss" not in checks  # no counters, nothing to say


def test_a_plain_file_is_not_a_trace_source(tmp_path: Path, fs: FakeTracefs) -> None:
    checks = run(site_of(tmp_path, fs, on_tracefs=False))
    assert checks["trace source"].level == FAIL
    assert "which cannot be followed like trace_pipe" in checks["trace source"].saw
    assert checks["tracefs"].level == FAIL
    assert checks["trace reader"].level == OK and checks["trace reader"].saw.startswith("text")


def test_a_fifo_source_has_no_counters_and_is_read_as_text(tmp_path: Path) -> None:
    fifo = FakeTracefs(tmp_path / "tracing", cpus=0, fifo=True)
    checks = run(site_of(tmp_path, fifo, on_tracefs=False))
    assert checks["trace source"].level == OK and "is a FIFO" in checks["trace source"].saw
    assert checks["tracefs"].level == WARN
    assert checks["trace events"].level == WARN
    assert "doctor never reads the source" in checks["trace events"].saw
    assert checks["trace reader"].saw == "text: trace_pipe's lines (trace.format = auto)"


def test_raw_without_the_layout_falls_back_to_text(tmp_path: Path) -> None:
    bare = FakeTracefs(tmp_path / "tracing", layout=False)
    check = run(site_of(tmp_path, bare))["trace reader"]
    assert check.level == WARN
    assert check.saw.startswith("raw would not work here (cannot read the ring buffer's layout")
    assert "reads trace_pipe as text instead" in check.saw


def test_raw_asked_for_a_fifo_warns(tmp_path: Path) -> None:
    fifo = FakeTracefs(tmp_path / "tracing", cpus=0, fifo=True)
    check = run(site_of(tmp_path, fifo, on_tracefs=False, fmt="raw"))["trace reader"]
    assert check.level == WARN and "is not the kernel's trace_pipe on tracefs" in check.saw


def test_the_binary_reader_needs_its_per_cpu_file_readable(tmp_path: Path,
                                                           fs: FakeTracefs) -> None:
    paths: Sequence[str] = site_of(tmp_path, fs).access_paths()
    assert paths == [f"{fs.root}/trace_pipe", f"{fs.root}/per_cpu/cpu0/trace_pipe_raw"]
    assert site_of(tmp_path / "t", fs, fmt="text").access_paths() == [f"{fs.root}/trace_pipe"]


def test_unmounted_tracefs_hint(tmp_path: Path) -> None:
    """The daemon's open failure on a host without tracefs says how to mount it."""
    from gtp5g_operator.config.paths import unmounted_tracefs_hint

    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n")
    if os.path.lexists("/sys/kernel/tracing/trace_pipe"):
        pytest.skip("tracefs is mounted on this host")
    hint = unmounted_tracefs_hint("/sys/kernel/tracing", str(proc))
    assert "mount -t tracefs nodev /sys/kernel/tracing" in hint
    assert unmounted_tracefs_hint("/tmp/fifo", str(proc)) == ""


def test_the_loops_walk_for_trace_readers_ends_within_one_process_of_many_fds(
        tmp_path: Path, fs: FakeTracefs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's walk (EBUSY, another reader) has a time budget: one process may hold
    as many fds as its limit allows (524,288 under systemd), and the budget must bound
    the walk of that process too, not only the walk from one process to the next."""
    proc = tmp_path / "proc"
    holding(proc, 4242, "many", *[tmp_path / f"f{i}" for i in range(2000)])
    clock = iter(range(1_000_000))  # a clock that moves a millisecond at each look
    monkeypatch.setattr(tracefs, "time", SimpleNamespace(monotonic=lambda: next(clock) / 1e3))
    readlink, read = os.readlink, []

    def counted(path: str) -> str:
        read.append(path)
        return readlink(path)

    monkeypatch.setattr(os, "readlink", counted)
    assert tracefs.holders([str(fs.root / "trace_pipe")], str(proc), budget=0.1) == []
    assert 0 < len(read) <= 101


def test_no_mount_is_advised_over_a_directory_that_holds_other_files(tmp_path: Path) -> None:
    """trace.pipe naming a trace_pipe (a FIFO not made yet) in a directory of other files
    (/tmp, /run): 'mount -t tracefs nodev DIR' was advised, which, done, hides everything
    in DIR; in a directory that does not exist the mount fails.  Only an empty directory
    (a mount point) or the places "auto" looks are mount advice."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "someone-elses.sock").write_text("")
    proc = fake_proc(tmp_path, None)
    for directory in (busy, tmp_path / "never-made"):
        site = locate(TraceConfig(pipe=str(directory / "trace_pipe")), None, str(proc))
        checks = run(site)
        for name in ("trace source", "tracefs"):
            assert f"nodev {directory}" not in checks[name].advice, checks[name]
        assert checks["trace source"].advice == "correct trace.pipe, or create the FIFO"
    empty = tmp_path / "mnt"
    empty.mkdir()
    site = locate(TraceConfig(pipe=str(empty / "trace_pipe")), None, str(proc))
    assert run(site)["trace source"].advice.startswith(f"mount -t tracefs nodev {empty} ")

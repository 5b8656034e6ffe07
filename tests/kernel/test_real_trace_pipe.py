"""The real kernel: lines written to trace_marker by a process named nr-gnb are
found through the real tracefs — by the binary reader (per-CPU trace_pipe_raw,
woken by trace_pipe) and by the text reader (trace_pipe), which also keeps
recognising lines when tracefs output options change the text's layout.
Needs root and a mountable tracefs; every tracefs setting a test changes is
put back (try/finally)."""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from gtp5g_operator.trace.tracefs import parse_cpu_stats
from testbed.harness import DaemonProcess, GnbProcess, wait_until
from testbed.tracelines import gtp5g_line
from tests.conftest import Env

TRACING = Path("/sys/kernel/tracing")

pytestmark = pytest.mark.kernel


PRINTK_ENABLE = "events/bpf_trace/bpf_trace_printk/enable"


@contextmanager
def tracefs_settings(settings: Dict[str, str]) -> Iterator[None]:
    """Write tracefs files (relative paths); put back what they held, whatever happens."""
    old: Dict[str, str] = {}
    try:
        for name, value in settings.items():
            path = TRACING / name
            text = path.read_text()
            # buffer_size_kb reads "7 (expanded: 1408)" before tracing's first use
            old[name] = text.split("expanded:")[1].strip(" )\n") if "expanded" in text \
                else text.strip()
            path.write_text(value)
        yield
    finally:
        for name, value in reversed(list(old.items())):
            (TRACING / name).write_text(value)


def state(env: Env) -> Dict[str, Any]:
    """The daemon's state.json (harness: RUNTIME_DIRECTORY is tmp/run)."""
    return json.loads((env.tmp / "run" / "state.json").read_text())  # type: ignore[no-any-return]


def nr_gnb_is_pushed(env: Env, gnb: Callable[..., GnbProcess], tracefs: Path) -> None:
    """nr-gnb and its thread write to trace_marker; the API gets exactly them, not the decoy."""
    g = gnb(threads=("nr-gnb-rlc",))
    decoy = gnb(name="nr-gnbx", threads=())
    decoy.mark("nr-gnbx", str(tracefs / "trace_marker"))
    g.mark("nr-gnb", str(tracefs / "trace_marker"))
    g.mark("nr-gnb-rlc", str(tracefs / "trace_marker"))
    post = env.api.wait_post(lambda s: {x["pid"] for x in s} == set(g.tids), timeout=5)
    assert decoy.pid not in {x["pid"] for x in post.body["strategies"]}


def test_trace_marker_lines_of_nr_gnb_reach_the_api(
        tracefs: Path, env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """The defaults: trace.pipe and trace.format "auto" read the real ring buffer, raw."""
    d = env.start(trace={"pipe": "auto"})  # auto finds /sys/kernel/tracing/trace_pipe
    nr_gnb_is_pushed(env, gnb, tracefs)
    trace = state(env)["trace"]
    assert (trace["format"], trace["path"], trace["open"]) == ("raw", str(tracefs), True)
    assert f"reading trace source {tracefs} (raw: " in d.log()


@pytest.mark.parametrize("fmt", ["raw", "text"])
def test_each_reader_finds_nr_gnb(tracefs: Path, env: Env, gnb: Callable[..., GnbProcess],
                                  fmt: str) -> None:
    env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": fmt})
    nr_gnb_is_pushed(env, gnb, tracefs)
    assert state(env)["trace"]["format"] == fmt
    # state.json is refreshed at each liveness pass (0.5 s here)
    wait_until(lambda: state(env)["trace"]["lines"] >= 3, 20, "lines counted")


def test_auto_reads_a_fifo_as_text(tracefs: Path, env: Env) -> None:
    d = env.start()  # trace.pipe: the test's FIFO
    assert state(env)["trace"]["format"] == "text"
    assert "with the text reader instead" not in d.log()  # chosen, not fallen back to


def test_raw_asked_for_on_a_fifo_falls_back_to_text(tracefs: Path, env: Env,
                                                    gnb: Callable[..., GnbProcess]) -> None:
    d = env.start(trace={"format": "raw"})
    d.wait_log("with the text reader instead")
    assert state(env)["trace"]["format"] == "text"
    g = gnb(threads=())
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: {x["pid"] for x in s} == {g.pid})


@pytest.mark.parametrize("fmt", ["raw", "text"])
def test_tracing_turned_off_under_the_daemon_is_said_once_and_so_is_its_return(
        tracefs: Path, env: Env, tmp_path: Path, fmt: str) -> None:
    """tracing_on = 0: the ring records nothing and the open source waits in silence;
    the daemon says why once, and doctor names it instead of the gtp5g tracer."""
    from tests.kernel.test_doctor_kernel import run_doctor

    # (the bpf_printk event on, as where the tracer is loaded: else, once tracing is on
    # again, the quiet source is rightly said to miss that event's lines, the next test)
    with tracefs_settings({PRINTK_ENABLE: "1"}):
        d = env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": fmt})
        with tracefs_settings({"tracing_on": "0"}):
            d.wait_log(f"tracing is off ({tracefs}/tracing_on = 0): the kernel records no")
            events = run_doctor(env.config_path, tmp_path, 0.5)["trace events"]
            assert events["saw"] == f"no trace events in 0.5 s: tracing is off ({tracefs}/" \
                                    "tracing_on = 0)"
        log = d.wait_log(f"the kernel records trace lines in {tracefs} again")
    assert log.count("tracing is off") == 1  # doctor's window held several liveness passes


@pytest.mark.parametrize("fmt", ["raw", "text"])
def test_the_bpf_printk_event_off_is_said_of_a_quiet_source_only(
        tracefs: Path, env: Env, fmt: str) -> None:
    """bpf_printk writes through the bpf_trace_printk event, which the kernel turns on
    only when a program calling it loads: with it off, the daemon waiting in silence says
    so once, and lines arriving meanwhile (trace_marker's) neither repeat it nor take
    it back; turned on, it is said to be back.  (A source that gets lines with the event
    off is not told of it at all: tests/unit/test_raw_reader.py.)"""
    said = f"bpf_printk lines are not recorded ({tracefs}/{PRINTK_ENABLE} = 0)"
    back = f"the kernel records trace lines in {tracefs} again"
    with tracefs_settings({PRINTK_ENABLE: "0"}):
        d = env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": fmt})
        d.wait_log(said)
        for _ in range(3):  # lines flow across several liveness passes
            mark_lines(tracefs, 50)
            after_passes(env)
        assert back not in d.log()
        with tracefs_settings({PRINTK_ENABLE: "1"}):
            d.wait_log(back)
    assert d.log().count(said) == 1


@pytest.mark.parametrize("fmt", ["raw", "text"])
def test_a_reader_that_holds_trace_pipe_first_is_named_and_waited_out(
        tracefs: Path, env: Env, gnb: Callable[..., GnbProcess], fmt: str) -> None:
    """trace_pipe takes one reader: a `cat trace_pipe` started first keeps the daemon out
    (EBUSY); each reader says that is why, and opens once the cat is gone."""
    cat = subprocess.Popen(["cat", str(tracefs / "trace_pipe")], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(os.path.realpath(f"/proc/{cat.pid}/fd/{fd}").endswith(
            "trace_pipe") for fd in os.listdir(f"/proc/{cat.pid}/fd")), 5, "cat holds trace_pipe")
        d = env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": fmt})
        d.wait_log(f"cannot open trace source {tracefs}/trace_pipe: another reader holds it "
                   f"(EBUSY): PID {cat.pid} (cat)")
    finally:
        cat.kill()
        cat.wait()
    d.wait_log("open again")
    nr_gnb_is_pushed(env, gnb, tracefs)


def mark_lines(tracefs: Path, count: int) -> None:
    fd = os.open(tracefs / "trace_marker", os.O_WRONLY)
    try:
        for i in range(count):
            os.write(fd, f"line {i} of {count}\n".encode())
    finally:
        os.close(fd)


def after_passes(env: Env, passes: int = 2) -> None:
    """Wait until state.json was written `passes` more times (a liveness pass writes it
    when the state changed: here, at least at each resync's push)."""
    def written_after(at: float) -> bool:
        return bool(state(env)["updated_at"] != at)

    for _ in range(passes):  # (generous: 10 s failed twice in 5 whole runs of this suite)
        wait_until(functools.partial(written_after, state(env)["updated_at"]), 30,
                   "a liveness pass")


SHARED = "another reader is taking trace events from this ring"
# another reader: reads the given trace_pipe_raw files without blocking until killed
DRAIN = r"""
import errno, os, sys, time
fds = []
for path in sys.argv[1:]:
    fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
while True:
    for fd in fds:
        try:
            os.read(fd, 65536)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENODEV):
                raise
    time.sleep(0.001)
"""


@pytest.mark.parametrize("fmt", ["raw", "text"])
def test_another_reader_of_the_ring_is_noticed(tracefs: Path, env: Env, fmt: str) -> None:
    """The kernel refuses a second trace_pipe, not a second reader of a CPU's
    trace_pipe_raw (trace-cmd, a cat): such a reader takes its share of the lines
    silently.  Alone, the daemon says nothing; with one, it warns once."""
    d = env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": fmt})
    mark_lines(tracefs, 3000)
    wait_until(lambda: state(env)["trace"]["lines"] >= 3000, 20, "the lines counted")
    after_passes(env)
    assert SHARED not in d.log()
    # The other reader drains every CPU while the daemon is stopped: it takes them all.
    other = subprocess.Popen(["python3", "-c", DRAIN, *map(str, tracefs.glob(
        "per_cpu/cpu*/trace_pipe_raw"))], stderr=subprocess.DEVNULL)
    try:
        d.signal(signal.SIGSTOP)
        try:
            mark_lines(tracefs, 3000)
            wait_until(lambda: all(s.entries == 0 for s in map(
                parse_cpu_stats, map(Path.read_text, tracefs.glob("per_cpu/cpu*/stats")))),
                20, "the other reader to drain the ring")
        finally:
            d.signal(signal.SIGCONT)
        log = d.wait_log(SHARED)
        mark_lines(tracefs, 3000)
        after_passes(env)
    finally:
        other.kill()
        other.wait()
    assert d.log().count(SHARED) == 1
    # named, as EBUSY is
    assert f"; it is PID {other.pid} (python3) (warning once per episode)" in log


@pytest.mark.parametrize("fmt", ["raw", "text"])
def test_the_readme_says_current_tracer_is_refused_while_the_daemon_reads(
        tracefs: Path, env: Env, fmt: str) -> None:
    """An admin enabling a tracer on the instance the daemon reads gets EBUSY from the
    kernel (6.18: while any trace_pipe or trace_pipe_raw is open), which the README
    explains; nothing the daemon can change."""
    tracers = (tracefs / "available_tracers").read_text().split()
    before = (tracefs / "current_tracer").read_text().strip()
    other = next((t for t in tracers if t != before), None)
    if other is None:
        pytest.skip(f"no tracer but {before} on this kernel")
    env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": fmt})
    try:
        with pytest.raises(OSError) as refused:
            (tracefs / "current_tracer").write_text(other)
    finally:
        if (tracefs / "current_tracer").read_text().strip() != before:
            (tracefs / "current_tracer").write_text(before)
    assert refused.value.errno == errno.EBUSY
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert ("So does changing that tracing instance's `current_tracer` (`echo function > "
            "current_tracer`: \"Device or resource busy\")") in readme


# --- lost events ------------------------------------------------------------------------------

FLOOD = r"""
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
line = "x" * 200 + "\n"
fd = os.open("/sys/kernel/tracing/trace_marker", os.O_WRONLY)
for _ in range(int(sys.argv[2])):
    os.write(fd, line.encode())
"""


def test_raw_counts_and_reports_events_the_kernel_overwrote(tracefs: Path, env: Env) -> None:
    """A stopped daemon, a small ring, a flood on CPU 0: the kernel overwrites events; the
    daemon, continued, counts them (state.json, log) and warns once."""
    with tracefs_settings({"buffer_size_kb": "64"}):
        d = env.start(trace={"pipe": str(tracefs / "trace_pipe"), "format": "raw"})
        d.signal(signal.SIGSTOP)
        try:
            subprocess.run(["python3", "-c", FLOOD, "0", "5000"], check=True)
        finally:
            d.signal(signal.SIGCONT)
        lost = wait_until(lambda: state(env)["trace"]["lost_events"], 10, "lost events counted")
        assert lost >= 1000  # ~1.1 MB of events into 64 KiB
        log = d.wait_log("trace events on CPU 0")
        assert log.count("the kernel dropped") == 1
        assert "the ring buffer is too small for this stream or the daemon is capped too " \
               "hard" in log


# --- the text reader under tracefs output options ----------------------------------------------

# option settings -> the layout the text reader must report in its log
OPTIONS = {
    "latency-format": ({"options/latency-format": "1"}, "latency-format"),
    "context-info-off": ({"options/context-info": "0"}, "payload PID"),
    "raw": ({"options/raw": "1"}, "raw"),
    "hex": ({"options/hex": "1"}, "hex"),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_text_reader_recognises_each_output_option(
        tracefs: Path, env: Env, gnb: Callable[..., GnbProcess], name: str) -> None:
    settings, layout = OPTIONS[name]
    with tracefs_settings(settings):  # on when the daemon opens trace_pipe
        d: DaemonProcess = env.start(trace={"pipe": str(tracefs / "trace_pipe"),
                                            "format": "text"})
        nr_gnb_is_pushed(env, gnb, tracefs)
        assert f"trace_pipe prints the {layout} layout" in d.log()
        d.stop()  # before the option is put back

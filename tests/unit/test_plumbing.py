"""Logging format and redaction; sd_notify watchdog rules; the signals handled."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Dict

import pytest

from gtp5g_operator.__main__ import RELOAD_REPORT_DEBUG
from gtp5g_operator.core.schedstat import Counters, TaskWait, WindowReport
from gtp5g_operator.core.schedstat_text import status_note
from gtp5g_operator.service.logsetup import redact, setup_logging, stderr_is_journal
from gtp5g_operator.service.notify import Notifier, watchdog_interval
from gtp5g_operator.service.signals import HANDLED, STOP
from gtp5g_operator.service.watchdog import WatchdogPinger, budget_problem
from testbed.harness import NOTIFY_BUFFER_MAX, NotifySocket

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_watchdog_interval_rules() -> None:
    assert watchdog_interval({}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 10) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, 10) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, 10) is None


@pytest.mark.parametrize("usec, wd_pid", [
    ("\u00b2", ""),  # str.isdigit() says yes, int() says no
    ("\u0661\u0662", ""),  # Arabic-Indic digits: not what systemd writes
    ("9" * 400, ""),  # too large for a float
    (str(2**64), ""),  # systemd's parser refuses what does not fit a u64
    ("30000000", "\u00b2"),
], ids=["superscript", "arabic-indic", "huge", "2**64", "pid-superscript"])
def test_a_watchdog_setting_systemd_could_not_parse_means_no_watchdog(usec: str,
                                                                      wd_pid: str) -> None:
    """A WATCHDOG_USEC or WATCHDOG_PID that is not a u64 decimal (set by hand in a drop-in:
    systemd writes plain ASCII) made the daemon die at start with a traceback
    (ValueError, OverflowError), a crash loop under Restart=on-failure."""
    assert watchdog_interval({"WATCHDOG_USEC": usec, "WATCHDOG_PID": wd_pid}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": str(2**64 - 1)}, 10) == (2**64 - 1) / 2e6


def test_a_watchdog_of_microseconds_does_not_spin_the_loop() -> None:
    """WatchdogSec=2us (a typo for seconds) is honoured as far as it can be, at most a
    ping every 10 ms, and warned of: before, the loop sent a ping every turn, tens of
    thousands a second."""
    interval = watchdog_interval({"WATCHDOG_USEC": "2"}, 10)
    assert interval is not None
    pinger = WatchdogPinger(Notifier({}), interval, clock=lambda: 100.0, status=str)
    pinger.run_due(100.0)
    assert pinger.next_deadline() >= 100.01
    assert "too long for WatchdogSec" in budget_problem(interval, 1.0)


@pytest.mark.parametrize("watchdog_sec", [2e-6, 0.5, 0.69, 0.75, 1.0, 1.7, 2.0, 4.0, 9.0,
                                          30.0])
@pytest.mark.parametrize("timeout", [0.1, 1.0, 5.0, 7.5, 29.5, 60.0])
def test_the_watchdog_warning_advises_values_that_fit(watchdog_sec: float,
                                                      timeout: float) -> None:
    """WATCHDOG_USEC=2 (2 µs) advised 'keep api.timeout below -0.5 s'; 1.7 s with a 1 s
    timeout, 'below 1.0 s'; 0.75 s, 'below 0.1 s' (api.timeout's least value is 0.1 s).
    Each value advised must end the warning."""
    problem = budget_problem(watchdog_sec / 2, timeout)
    if not problem:
        return
    raised = re.search(r"raise WatchdogSec= to ([\d.]+)s or more", problem)
    assert raised, problem
    assert budget_problem(float(raised[1]) / 2, timeout) == "", problem
    below = re.search(r"keep api.timeout below (-?[\d.]+) s", problem)
    if below:
        fits = float(below[1]) - 0.01
        assert fits > 0.1 and budget_problem(watchdog_sec / 2, fits) == "", problem
    elif "set api.timeout = 0.1 (its least)" in problem:
        assert budget_problem(watchdog_sec / 2, 0.1) == "", problem
    else:
        assert budget_problem(watchdog_sec / 2, 0.1), "a timeout of 0.1 s would fit: say so"


def test_redact() -> None:
    assert redact(f"Bearer {JWT} end") == "Bearer [REDACTED-TOKEN] end"
    assert redact("nothing secret") == "nothing secret"


def _log_through(env: Dict[str, str], stream: io.TextIOBase) -> None:
    setup_logging("debug", env, stream)  # type: ignore[arg-type]
    log = logging.getLogger("t")
    log.info("hello")
    log.warning("token %s", JWT)
    log.debug("detail")


def test_plain_format_without_journal() -> None:
    with tempfile.TemporaryFile("w+") as f:
        _log_through({}, f)
        f.seek(0)
        lines = f.read().splitlines()
    assert lines[0].endswith("INFO    hello") and lines[0][:4].isdigit()
    assert JWT not in lines[1] and "[REDACTED-TOKEN]" in lines[1]


def test_journal_prefixes_when_stderr_is_the_journal_stream() -> None:
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        _log_through({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
        f.seek(0)
        lines = f.read().splitlines()
    assert lines == ["<6>hello", "<4>token [REDACTED-TOKEN]", "<7>detail"]


def test_journal_stream_of_another_file_is_ignored() -> None:
    with tempfile.TemporaryFile("w+") as f:
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, f)


def test_a_forged_line_or_control_sequence_in_a_message_is_escaped() -> None:
    # an executable path is anyone's choice: it must not make a second journal entry
    # or reach a terminal as a control sequence; a traceback keeps its lines
    exe = "/tmp/x\n<6>process 1 (nr-gnb) removed: exited\x1b[8m/nr-gnb"
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        setup_logging("info", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)  # type: ignore[arg-type]
        log = logging.getLogger("t")
        log.info("process 7 (nr-gnb, exe %s) matches", exe)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        f.seek(0)
        lines = f.read().splitlines()
    assert lines[0] == ("<6>process 7 (nr-gnb, exe /tmp/x\\n<6>process 1 (nr-gnb) removed: "
                        "exited\\x1b[8m/nr-gnb) matches")
    assert lines[1] == "<3>failed" and lines[2] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>ValueError: boom"


def test_a_status_with_any_character_reaches_systemd_as_utf8(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # sdnotify encoded as latin-1: a "…" (one_line's shortening) or a path's "é" raised
    # UnicodeEncodeError in the loop; systemd wants UTF-8
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))  # sdnotify reads it
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        notifier.send("STATUS=trace source NOT OPEN (/srv/tracé/pipe …)", "X=\udcff")
        assert sock.recv(4096).decode("utf-8") == (
            "STATUS=trace source NOT OPEN (/srv/tracé/pipe …)\nX=\\udcff")
    finally:
        sock.close()


def test_a_notify_socket_nobody_reads_does_not_hold_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A datagram socket's sender blocks while the receiver's queue is full (PID 1 busy
    or hung): a notification waits a bounded time, then fails with one ERROR line, and
    the next ones do not wait until one gets through."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))  # sdnotify reads it
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    sent = threading.Event()

    def flood() -> None:
        for _ in range(5000):  # far beyond net.unix.max_dgram_qlen (512 by default)
            notifier.send("WATCHDOG=1")
        sent.set()

    worker = threading.Thread(target=flood, daemon=True)
    try:
        with caplog.at_level(logging.ERROR):
            worker.start()
            sent.wait(120)  # a blocking send never returns: generous for a loaded host
            assert sent.is_set(), "a notification blocked on a full queue"
        assert [r.getMessage()[:13] for r in caplog.records] == ["sd_notify to "]
        while True:  # systemd drains its queue: the next notification gets through
            try:
                sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        with caplog.at_level(logging.INFO):
            notifier.send("READY=1")
        assert sock.recv(4096) == b"READY=1"
        assert caplog.records[-1].getMessage() == "sd_notify works again"
    finally:
        sock.close()  # ends a blocked send (the peer is gone)
        worker.join(10)


def test_a_notify_socket_going_away_is_one_error_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A socket that goes away is closed (the next send: ECONNREFUSED), then its file
    removed (ENOENT): each error was a line of its own for one episode."""
    path = tmp_path / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # sdnotify reads it
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.INFO):
        notifier.send("WATCHDOG=1")
        receiver.close()
        notifier.send("WATCHDOG=1")  # refused
        path.unlink()
        notifier.send("WATCHDOG=1")  # not found
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
            again.bind(str(path))
            notifier.send("WATCHDOG=1")
            assert again.recv(4096) == b"WATCHDOG=1"
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"sd_notify to {path} failed: [Errno 111] Connection refused (will keep "
                    "trying)", "sd_notify works again"], said


# signal(7): the signals whose default action ends the process (Term or Core)
DEFAULT_ENDS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS",
                "SIGFPE", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM",
                "SIGSTKFLT", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR",
                "SIGSYS")


def test_the_docs_name_every_signal_that_still_ends_the_daemon() -> None:
    """README and gtp5g-operator(8) said every signal whose default ends the process
    stops it cleanly; SIGABRT and the crash signals are not caught (sent by hand, the
    daemon died and left its state.json).  Those left to their default are named."""
    left = [name for name in DEFAULT_ENDS if hasattr(signal, name)
            and getattr(signal, name) not in HANDLED
            and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]  # Python's
    assert "SIGABRT" in left  # the test sees what it is for
    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text()
    stop_bullet = readme.split("\n* SIGTERM, SIGINT", 1)[1].split("\n* ", 1)[0]
    man = (repo / "packaging" / "gtp5g-operator.8").read_text()
    man_signals = man.split("\n.SH SIGNALS\n", 1)[1].split("\n.SH ", 1)[0]
    for where, text in (("README", stop_bullet), ("gtp5g-operator(8)", man_signals)):
        unnamed = [name for name in left if name not in text]
        assert not unnamed, f"{where} says these stop the daemon cleanly: {unnamed}"


def test_a_status_longer_than_systemd_reads_is_cut_not_the_ping_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd ignores a notification of more than PIPE_BUF bytes whole: the CPU wait of
    120 gNB processes of distinct names made STATUS= 4,909 bytes, and the WATCHDOG=1
    sent with it was lost (a kill within WatchdogSec).  STATUS= is cut to fit."""
    reports = [WindowReport(f"gnb-cell-{i:06d}", 60.0, Counters(520, 480, 9), 2,
                            TaskWait(i, "w", Counters(500, 500, 9))) for i in range(120)]
    status = "tracking 120 process(es), 240 task(s); " + status_note(reports)
    assert len(status) > NOTIFY_BUFFER_MAX
    path = tmp_path / "notify"
    systemd = NotifySocket(path)  # takes only what systemd takes
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # sdnotify reads it
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        WatchdogPinger(notifier, 10.0, clock=lambda: 0.0, status=lambda: status).ping(0.0)
        # 4,095 bytes end between the two bytes of an "é": it is left out, not split
        notifier.send("READY=1", "STATUS=" + "é" * 3000)
        ping = systemd.wait("WATCHDOG", "1", timeout=30)
        assert ping["STATUS"].endswith("…") and status.startswith(ping["STATUS"][:-1])
        assert systemd.wait("READY", "1", timeout=30)["STATUS"] == "é" * 2038 + "…"
        assert systemd.oversized == []
    finally:
        systemd.close()


def test_the_entry_holds_every_handled_signal_that_is_no_stop() -> None:
    """__main__ lists them itself (it may import nothing before holding them): a signal
    the daemon came to handle and that list missed would kill it during the imports."""
    assert set(RELOAD_REPORT_DEBUG) == set(HANDLED) - set(STOP)

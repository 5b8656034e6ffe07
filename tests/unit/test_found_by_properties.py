"""Regression tests: the defects the property tests (tests/property/) found, each as
the plain example that showed it, so they stay fixed even where Hypothesis is not
installed (the Debian package build runs tests/unit only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gtp5g_operator.commands.status import format_status, show_status
from gtp5g_operator.config import ConfigError, parse_config
from gtp5g_operator.core.procfs import parse_status
from gtp5g_operator.files import read_json_file
from gtp5g_operator.service.runtime_files import daemon_alive
from gtp5g_operator.service.runtime_names import STATE_FILE
from gtp5g_operator.service.vocabulary import VOCABULARY
from gtp5g_operator.trace import ringbuf
from gtp5g_operator.trace.ringbuf import FormatError, parse_fields, parse_header_event
from gtp5g_operator.trace.tracefs import parse_cpu_list, parse_cpu_stats, subbuf_size
from tests.property.bounds import Limits, run_bounded

DATA = Path(__file__).resolve().parent.parent / "data" / "ringbuf"
HUGE = "9" * 5000  # int() refuses more than 4,300 digits with a plain ValueError

# --- trace/ringbuf: the layout files -------------------------------------------------------


@pytest.mark.parametrize("text", [
    "field:" + " " * 60_000 + "x",  # 2,000 spaces took 12 s; this many, hours
    "field:" * 10_000,
    "\tfield: u" + "9" * 60_000 + " timestamp;\toffset:0;\tsize:8;\tsigned:0;\n",  # 10k: 8 s
    "field:" + "a[" * 30_000 + ";offset:1;size:2;",
], ids=["spaces", "repeated-field", "long-declaration", "brackets"])
def test_parse_fields_is_linear_on_malformed_text(text: str) -> None:
    outcome = run_bounded(lambda: parse_fields(text), Limits(seconds=10.0))
    assert outcome.error is None or isinstance(outcome.error, FormatError)


def test_a_number_too_long_for_a_layout_is_a_format_error() -> None:
    header_page = (DATA / "header_page").read_text()
    with pytest.raises(FormatError):
        ringbuf.parse_header_page(header_page.replace("offset:16", "offset:" + HUGE))
    with pytest.raises(FormatError):
        parse_header_event((DATA / "header_event").read_text().replace("5 bits", HUGE + " bits"))


def test_a_sub_buffer_larger_than_a_kernel_makes_is_refused(tmp_path: Path) -> None:
    """The reader allocates one sub-buffer per read: a layout file must not ask for 1 GB."""
    header_page = (DATA / "header_page").read_text()
    with pytest.raises(FormatError):
        ringbuf.parse_header_page(header_page.replace("size:4080", "size:999999984"))
    (tmp_path / "buffer_subbuf_size_kb").write_text("1000000000\n")
    assert subbuf_size(str(tmp_path)) is None
    (tmp_path / "buffer_subbuf_size_kb").write_text("8\n")
    assert subbuf_size(str(tmp_path)) == 8192


# --- trace/tracefs, core/procfs ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["0-4000000000", "0-" + HUGE, "3-1", "-3", "1_0", "٣"])
def test_a_garbled_cpu_list_is_a_value_error_not_a_huge_set(text: str) -> None:
    outcome = run_bounded(lambda: parse_cpu_list(text))
    assert isinstance(outcome.error, ValueError)  # "0-4000000000" took 281 MiB, then more


def test_cpu_stats_counts_are_unsigned() -> None:
    stats = parse_cpu_stats("entries: 18446744073709551616\noverrun: -1\nbytes: 1_0\n"
                            "read events: +5\ndropped events: 7\nnow ts: nan\n"
                            "oldest event ts: inf\n")
    assert (stats.entries, stats.overrun, stats.bytes, stats.read_events) == (0, 0, 0, 0)
    assert stats.dropped_events == 7


def test_a_status_id_too_long_for_int_is_no_id() -> None:
    assert parse_status(b"Tgid:\t" + HUGE.encode() + b"\nUid:\t0\t0\t0\t0\n") == (None, 0)


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "a = " + "[" * 100_000 + "]" * 100_000,  # RecursionError inside tomllib
    "a = " + HUGE,  # tomllib's int() raised a plain ValueError
    "trace = 0x" + "f" * 5000,  # the message's repr() of the value raised ValueError
    "[strategy]\nexecution_time_ns = 0x" + "f" * 5000,
    "[match]\nuid = [0x" + "f" * 5000 + "]",
], ids=["deep", "long-decimal", "huge-section", "huge-value", "huge-in-list"])
def test_hostile_toml_is_a_one_line_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, VOCABULARY, "c.toml")
    message = str(caught.value)
    assert message.startswith("c.toml: ") and "\n" not in message
    assert "set_int_max_str_digits" not in message  # Python's advice is no help to a user


# --- commands/status and the published files ---------------------------------------------------


def test_status_of_times_beyond_any_float() -> None:
    text = format_status({"started_at": 10**400, "processes": [{"since": -(10**400)}]}, 1e9)
    assert "running since -" in text


@pytest.mark.parametrize("pid", [2**31, 2**64])
def test_a_pid_beyond_any_pid_t_is_not_running_not_a_traceback(tmp_path: Path,
                                                               pid: int) -> None:
    """daemon_alive's look for a process hidden by hidepid= (2c91d77) signals the PID
    when /proc has no directory for it: os.kill raised OverflowError past pid_t, and
    status (doctor, and run's check of its runtime directory) ended in a traceback
    where it said 'not running'."""
    (tmp_path / STATE_FILE).write_text(f'{{"pid": {pid}}}')
    assert not daemon_alive(pid)
    code, text = show_status(str(tmp_path), False)
    assert code == 3 and "not running" in text, text


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_state_json_nested_too_deeply_is_unreadable_not_a_traceback(
        tmp_path: Path, depth: int) -> None:
    """Python < 3.13 cannot parse 5,000 levels (RecursionError: refused as ValueError),
    3.13 can (then it is a state.json of PID 1: not a running operator); 100,000 is
    over the memory bound everywhere.  Never a traceback."""
    (tmp_path / STATE_FILE).write_text('{"pid": 1, "v": ' + "[" * depth + "]" * depth + "}")
    try:
        read_json_file(str(tmp_path / STATE_FILE))
    except ValueError as exc:
        assert "nested too deeply" in str(exc) or "JSON objects and arrays" in str(exc)
    code, text = show_status(str(tmp_path), False)
    assert code in (1, 3) and "Traceback" not in text and "\n" not in text.strip()

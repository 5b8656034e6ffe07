"""doctor's report: the Check record, the text and JSON formats, the exit status, and
the command-line options (pure: no probing)."""

from __future__ import annotations

import json

import pytest

from gtp5g_operator.cli import build_parser
from gtp5g_operator.commands.doctor.model import (
    FAIL,
    OK,
    WARN,
    Check,
    duration,
    fail,
    ok,
    plural,
    warn,
)
from gtp5g_operator.commands.doctor.options import options_from
from gtp5g_operator.commands.doctor.output import exit_status, format_json, format_text
from gtp5g_operator.commands.doctor.runner import guarded

CHECKS = [ok("config", "/etc/x.toml is valid"),
          warn("targets", "no process named nr-gnb is running", "start the gNB"),
          fail("scheduler", "no BPF scheduler is enabled", "start Gthulhu's scheduler")]


def test_one_line_per_check_with_advice_only_where_not_ok() -> None:
    lines = format_text([*CHECKS[:1], ok("x", "fine"), *CHECKS[1:]]).splitlines()
    assert lines == [
        "ok    config     /etc/x.toml is valid",
        "ok    x          fine",
        "warn  targets    no process named nr-gnb is running -> start the gNB",
        "FAIL  scheduler  no BPF scheduler is enabled -> start Gthulhu's scheduler",
    ]


def test_a_check_is_always_one_line() -> None:
    check = fail("api token", "HTTP 500:\n  boom\tagain", "see\nthe log")
    assert (check.saw, check.advice) == ("HTTP 500: boom again", "see the log")
    assert len(format_text([check]).splitlines()) == 1


def test_levels_are_checked() -> None:
    with pytest.raises(ValueError):
        Check("x", "error", "saw")


def test_json_is_a_list_of_objects() -> None:
    parsed = json.loads(format_json(CHECKS))
    assert parsed == [{"name": c.name, "level": c.level, "saw": c.saw, "advice": c.advice}
                      for c in CHECKS]
    assert [p["level"] for p in parsed] == [OK, WARN, FAIL]


@pytest.mark.parametrize("checks,status", [
    ([], 0), (CHECKS[:1], 0), (CHECKS[:2], 0),  # warnings do not fail
    (CHECKS, 1), (CHECKS[2:], 1),
])
def test_exit_status(checks: list[Check], status: int) -> None:
    assert exit_status(checks) == status


@pytest.mark.parametrize("seconds,text", [(0.4, "0 s"), (45, "45 s"), (119.4, "119 s"),
                                          (120, "2 min"), (3600, "60 min"),
                                          (86399, "23 h 59 min")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_plural() -> None:
    assert [plural(1, "process"), plural(2, "process"), plural(0, "thread"),
            plural(3, "strategy", "strategies")] == [
        "1 process", "2 processes", "0 threads", "3 strategies"]


def test_options_from_the_command_line() -> None:
    args = build_parser().parse_args(["doctor", "--config", "/c.toml", "--json", "--proc",
                                      "/p", "--sysfs", "/s", "--tracefs", "/t",
                                      "--runtime-dir", "/r", "--window", "0.25"])
    o = options_from(args)
    assert (o.config, o.as_json, o.proc, o.sysfs, o.tracefs, o.runtime_dir, o.window) == (
        "/c.toml", True, "/p", "/s", "/t", "/r", 0.25)
    default = options_from(build_parser().parse_args(["doctor"]))
    assert (default.proc, default.sysfs, default.tracefs, default.window) == (
        "/proc", "/sys", None, 1.0)
    assert options_from(build_parser().parse_args(["--config", "/g.toml", "doctor"])
                        ).config == "/g.toml"


@pytest.mark.parametrize("window", ["-1", "61", "soon"])
def test_a_bad_window_is_refused(window: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["doctor", "--window", window])


def test_a_group_that_breaks_is_one_fail_line_not_a_traceback() -> None:
    def broken() -> list[Check]:
        raise KeyError("nodeNames")

    assert guarded("api", broken) == [fail("api", "doctor could not check this: KeyError: "
                                                  "'nodeNames'", "please report this as a bug")]
    assert guarded("api", lambda: CHECKS) == CHECKS

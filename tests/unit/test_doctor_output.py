"""doctor's report: the Check record, the text and JSON formats, the exit status, and
the command-line options (pure: no probing)."""

from __future__ import annotations

import json

import pytest

from gtp5g_operator.cli import build_parser
from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check, fail, ok, warn
from gtp5g_operator.commands.doctor.options import options_from
from gtp5g_operator.commands.doctor.output import exit_status, format_json, format_text
from gtp5g_operator.commands.doctor.runner import guarded
from gtp5g_operator.core.words import duration, plural, when

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


def test_json_has_stable_lower_case_keys_and_levels() -> None:
    checks = [*CHECKS, warn("target", "PID 20055 nr-gnb: not boosted", "pin it", "20055")]
    parsed = json.loads(format_json(checks))
    assert [list(p) for p in parsed] == [["name", "subject", "level", "saw", "advice"]] * 4
    assert [p["level"] for p in parsed] == [OK, WARN, FAIL, WARN] == ["ok", "warn", "fail",
                                                                      "warn"]
    assert parsed[3] == {"name": "target", "subject": "20055", "level": "warn",
                         "saw": "PID 20055 nr-gnb: not boosted", "advice": "pin it"}
    assert parsed[0]["subject"] is None


def test_text_shows_the_subject_beside_the_name() -> None:
    lines = format_text([ok("config", "valid"), ok("target", "PID 7: fine", "7")]).splitlines()
    assert lines == ["ok    config    valid", "ok    target 7  PID 7: fine"]


@pytest.mark.parametrize("checks,status", [
    ([], 0), (CHECKS[:1], 0), (CHECKS[:2], 0),  # warnings do not fail
    (CHECKS, 1), (CHECKS[2:], 1),
])
def test_exit_status(checks: list[Check], status: int) -> None:
    assert exit_status(checks) == status


@pytest.mark.parametrize("seconds,text", [(0.4, "0 s"), (45, "45 s"), (119.4, "119 s"),
                                          (120, "2 min"), (3600, "60 min"),
                                          (86399, "23 h 59 min"), (172799, "47 h 59 min"),
                                          (172800, "2 d 0 h"), (100 * 86400 + 7300, "100 d 2 h")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_plural() -> None:
    assert [plural(1, "process"), plural(2, "process"), plural(0, "thread"),
            plural(3, "strategy", "strategies")] == [
        "1 process", "2 processes", "0 threads", "3 strategies"]


def test_options_from_the_command_line() -> None:
    args = build_parser().parse_args(["doctor", "--config", "/c.toml", "--json", "--proc",
                                      "/p", "--sysfs", "/s", "--tracefs", "/t",
                                      "--runtime-dir", "/r", "--window", "0.25",
                                      "--max-wait", "12.5"])
    o = options_from(args)
    assert (o.config, o.as_json, o.proc, o.sysfs, o.tracefs, o.runtime_dir, o.window,
            o.max_wait) == ("/c.toml", True, "/p", "/s", "/t", "/r", 0.25, 0.125)
    default = options_from(build_parser().parse_args(["doctor"]))
    assert (default.proc, default.sysfs, default.tracefs, default.window, default.max_wait) == (
        "/proc", "/sys", None, 1.0, 0.4)
    assert options_from(build_parser().parse_args(["--config", "/g.toml", "doctor"])
                        ).config == "/g.toml"


@pytest.mark.parametrize("option,value,said", [
    ("--window", "-1", "must be between 0 and 60 seconds"),
    ("--window", "61", "must be between 0 and 60 seconds"),
    ("--window", "soon", "not a number of seconds: 'soon'"),
    ("--max-wait", "101", "must be between 0 and 100 %"),
    ("--max-wait", "40%", "not a number of %: '40%'")])
def test_a_bad_number_is_refused_with_one_line(option: str, value: str, said: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["doctor", option, value])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"{option}: {said}")


def test_a_group_that_breaks_is_one_fail_line_not_a_traceback() -> None:
    def broken() -> list[Check]:
        raise KeyError("nodeNames")

    assert guarded("api", broken) == [fail("api", "doctor could not check this: KeyError: "
                                                  "'nodeNames'", "please report this as a bug")]
    assert guarded("api", lambda: CHECKS) == CHECKS


@pytest.mark.parametrize("age,ago", [(5, "(5s ago)"), (7199, "(119m ago)"), (7200, "(2h ago)"),
                                     (172799, "(47h ago)"), (90 * 86400 + 5, "(90d ago)")])
def test_when_says_an_age_in_the_largest_unit_a_person_reads(age: int, ago: str) -> None:
    now = 1_800_000_000.0
    assert when(now - age, now).endswith(ago)

"""Text others chose (a process's executable path or name, a server's message)
reaches `doctor` and `status` output escaped, never as terminal control
sequences (CWE-150): any local user can run a program named nr-gnb from a path
holding ESC, and doctor lists every such process, whatever the match rules."""

from __future__ import annotations

import time

from gtp5g_operator.commands.doctor.model import ok
from gtp5g_operator.commands.doctor.output import format_text
from gtp5g_operator.commands.status import format_status
from gtp5g_operator.core.words import one_line

HOSTILE = "/tmp/x\x1b[2K\x1b[1A\x1b]0;owned\x07\u202e\x9b1m/nr-gnb"


def _no_controls(text: str) -> bool:
    return all(c.isprintable() or c == "\n" for c in text)


def test_one_line_escapes_control_characters() -> None:
    assert one_line("a\x1bb\x07c\x7f") == "a\\x1bb\\x07c\\x7f"
    assert one_line("plain text, ünïcödé") == "plain text, ünïcödé"
    assert one_line("lone \udcff surrogate") == "lone \\udcff surrogate"


def test_doctor_text_shows_an_exe_path_with_escapes_escaped() -> None:
    text = format_text([ok("target", f"PID 1 nr-gnb, uid 1000, exe {HOSTILE}", "1")])
    assert _no_controls(text), repr(text)
    assert "\\x1b[2K" in text


def test_status_shows_a_tracked_process_with_escapes_escaped() -> None:
    state = {"processes": [{"tgid": 7, "comm": "nr-gnb\x1b[8m", "exe": HOSTILE, "uid": 1000,
                            "tids": [7], "since": time.time()}]}
    text = format_status(state, time.time())
    assert _no_controls(text), repr(text)

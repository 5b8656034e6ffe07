"""Logging to stderr, with syslog priority prefixes under journald.

Under systemd with StandardError=journal, JOURNAL_STREAM names the stream;
journald reads a leading `<N>` as the line's priority and stamps its own
time, so we print neither time nor level name there.  Anything shaped like
a JWT is redacted from every record, whatever logged it, and a message's
control characters are escaped.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Mapping, Optional, TextIO

from ..core.component import Component
from ..core.words import printable, u64

if TYPE_CHECKING:
    from ..config import Config

_JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]{4,}")
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def redact(text: str) -> str:
    return _JWT.sub("[REDACTED-TOKEN]", text)


class RedactingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message on one line with its controls escaped: a name or path in it is
        # anyone's choice, and a newline would forge a journal entry of its own (a
        # traceback, added after this, keeps its lines).
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# journald splits a line longer than its LineMax (48 KiB by default) into entries of their
# own and reads a "<N>" priority at the start of each: past that point a line said what
# whoever chose its text wanted, as an entry at the priority they wrote (SIGUSR1's
# `state: boost` lists every foreign task's path, anyone's, 4 KiB each).  Lines are cut
# in the middle well below it, their start and end kept.
LINE_MAX = 32 * 1024  # bytes


def _fits(line: str) -> str:
    data = line.encode("utf-8", "backslashreplace")
    if len(data) <= LINE_MAX:
        return line
    half = LINE_MAX // 2  # "ignore": a character the cut went through is left out
    return (data[:half].decode("utf-8", "ignore") + " … "
            + data[-half:].decode("utf-8", "ignore"))


class JournalFormatter(RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # One journal entry per line: prefix continuation lines too.
        return "\n".join(f"<{prio}>{_fits(line)}" for line in text.splitlines() or [""])


def stderr_is_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """True when stderr is the journal stream systemd told us about."""
    value = env.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # AttributeError: fd 2 closed at start,
        return False  # Python's sys.stderr is None (the start died there, silently)
    dev, _, ino = value.partition(":")
    return (u64(dev), u64(ino)) == (st.st_dev, st.st_ino)  # None for any other text


def setup_logging(level: str = "info", env: Mapping[str, str] = os.environ,
                  stream: Optional[TextIO] = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if stderr_is_journal(env, stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(RedactingFormatter(
            "%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class LogLevel(Component):
    """The log level as a loop component: `log.level` on reload, and SIGUSR2's
    switch to debug and back."""

    name = "log level"

    def __init__(self, level: str) -> None:
        self.level = level
        self.debugging = False

    def reconfigure(self, old: Config, new: Config) -> bool:
        self.level = new.log.level
        if not self.debugging:
            logging.getLogger().setLevel(self.level.upper())
        elif old.log.level != new.log.level:  # the journal said "log.level changed" only
            logging.getLogger(__name__).warning(
                "log.level = %s is in force once debug logging is switched off (SIGUSR2); "
                "debug until then", self.level)
        return False

    def toggle_debug(self) -> None:
        self.debugging = not self.debugging
        logging.getLogger().setLevel("DEBUG" if self.debugging else self.level.upper())
        logging.getLogger(__name__).warning(
            "debug logging %s (SIGUSR2)", "on" if self.debugging else f"off (back to {self.level})")

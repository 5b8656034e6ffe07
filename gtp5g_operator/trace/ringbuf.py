"""Pure parsing of the kernel's binary trace ring buffer (`trace_pipe_raw`).

Each read of `per_cpu/cpuN/trace_pipe_raw` returns one sub-buffer ("page"),
laid out as `events/header_page` describes::

    u64 timestamp | local_t commit | data[commit & ~flags] | (unsigned long missed) | zeros

`commit` is the number of data bytes; the kernel adds two flags to it
(kernel/trace/ring_buffer.c): RB_MISSED_EVENTS (1 << 31) when events were
overwritten before this page, and RB_MISSED_STORED (1 << 30) when the number
of lost events is stored as an unsigned long right after the data.  The flag
is the C int (1 << 31) added to a 64-bit local_t, so on 64-bit kernels it is
sign-extended: a page with lost events has a commit word of
0xffffffffc0000fc0, not 0xc0000fc0 (seen on 6.18).

The data is a sequence of records (`events/header_event`)::

    u32 type_len:5, time_delta:27 | u32 array[]

* type_len 1..28: a trace event of type_len * 4 bytes starting at array[0];
* type_len 0: array[0] is the length of the rest of the record (the event
  starts at array[1], so the record is 4 + array[0] bytes);
* 29, padding: 4 + array[0] bytes (a discarded event or the end of a page);
  with time_delta 0 it is the "null" padding: nothing follows on the page;
* 30, time extend, and 31, absolute time stamp: 8 bytes, and always followed
  by the event they time.

Every trace event starts with the same common fields (`common_type`,
`common_flags`, `common_preempt_count`, `common_pid`; see any event's
`format` file), so the task ID of a record is read at the same offset whatever
the event is.

What a record costs on our machines, and against `cat trace_pipe`, is
measured by the benchmark (bench/run.py, section kernel: the raw reader's CPU
per record) and kept, dated, in bench/results/ (module-figures-2026-11-28.md
has the figures this paragraph used to quote).

Why not less: the hot loop is one `Struct.unpack_from` that returns a record's
first byte and its pid together (the largest share of the time), one tuple
lookup that turns that byte into the record's length, an addition, a record
count, the loop test and a comparison with the previous pid; the set
insertion runs only when the pid changes.  Records have variable lengths and
only the previous record's length tells where the next one starts, so no
C-level bulk scan can find the boundaries (`re` and `struct.iter_unpack`
cannot; a memoryview cast to 32-bit words indexes more slowly than
`unpack_from`; an arithmetic type_len test instead of the table costs more).
Everything else is kept out of the loop: the page header has a
one-comparison fast path, bounds are tested only when the pid changes, and
the unusual record kinds make the loop jump past its end (`_RARE`) instead
of costing a test on every record.  Where the kernel sets
RB_FORCE_8BYTE_ALIGNMENT (64-bit architectures without efficient unaligned
access; not x86-64 or arm64) every event is type_len 0 and takes the slower
path.

Robustness: a page is never trusted.  `PageWalker.walk_into` never raises on
the contents of a page and always terminates (every step advances by at least
4 bytes, and nothing is read outside the buffer); a page that is truncated, has
an impossible commit, or a record that runs past the data is reported through
`PageStats.problem`, and what could be parsed before the problem is returned.
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Dict, NamedTuple, Optional, Set, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview]

# Record kinds (header_event's "type == N" lines; include/linux/ring_buffer.h).
DATA_TYPE_LEN_MAX = 28
TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TIME_RECORD_SIZE = 8  # RB_LEN_TIME_EXTEND and RB_LEN_TIME_STAMP
RECORD_HEADER_SIZE = 4  # RB_EVNT_HDR_SIZE: the type_len/time_delta word
ALIGNMENT = 4  # RB_ALIGNMENT: every record length is a multiple of it

# Flags in the page's commit word (kernel/trace/ring_buffer.c).
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
COMMIT_SIZE_MASK = MISSED_STORED - 1

_new_tuple = tuple.__new__
# Larger than any page, and still a one-digit int (< 2**30) so additions stay cheap.
_RARE = 1 << 29

LOST_UNKNOWN = -1  # PageStats.lost: events were lost but the page has no room for the count

# The field's name: the declaration's last word, before an optional array size
# ("char buf[]").  The look-behind lets the word start only at a word's start,
# and the brackets hold no bracket: both keep the search linear in the length.
_NAME_RE = re.compile(r"(?<!\w)(\w+)\s*(?:\[[^\[\]]*\])?$")
MAX_DIGITS = 9  # no offset or size of a format file comes near a billion
# The largest sub-buffer a kernel makes: buffer_subbuf_size_kb takes 1 to 128
# pages (kernel/trace/trace.c), 8 MiB with 64 KiB pages.  The reader allocates
# one sub-buffer per read, so a layout file must not be able to ask for more.
MAX_SUBBUF_SIZE = 128 * 65536


class FormatError(ValueError):
    """A tracefs format file does not describe a layout this module can read."""


class Field(NamedTuple):
    """One `field:` line of a tracefs format file."""

    name: str
    offset: int
    size: int
    signed: bool


class PageLayout(NamedTuple):
    """Where the page header's fields are, from `events/header_page`."""

    commit_offset: int  # 8 on every kernel so far
    commit_size: int  # sizeof(local_t): 8 on 64-bit kernels, 4 on 32-bit
    data_offset: int  # 16 on 64-bit kernels
    data_size: int  # sub-buffer size minus data_offset (4080 for 4 KiB sub-buffers)
    byteorder: str = sys.byteorder  # the kernel writes in the host's order

    @property
    def subbuf_size(self) -> int:
        """The size of one sub-buffer: what one read of trace_pipe_raw returns."""
        return self.data_offset + self.data_size


class EventHeader(NamedTuple):
    """The record header described by `events/header_event`."""

    type_len_bits: int
    time_delta_bits: int
    array_bits: int
    padding: int
    time_extend: int
    time_stamp: int
    data_max_type_len: int


# What the kernel prints (read on 6.18; the 8-byte time stamp record dates from
# Linux 4.17); the walker is written for exactly this.
SUPPORTED_EVENT_HEADER = EventHeader(5, 27, 32, TYPE_PADDING, TYPE_TIME_EXTEND,
                                     TYPE_TIME_STAMP, DATA_TYPE_LEN_MAX)


class PageStats(NamedTuple):
    """What one page held, besides its pids."""

    records: int  # data records (trace events) parsed, with repeated pids counted
    lost: int  # events lost before this page: 0, a count, or LOST_UNKNOWN
    problem: str  # "" for a well-formed page, else why it is not


class Record(NamedTuple):
    """One record, as `PageWalker.decode` reads it."""

    type_len: int
    length: int  # bytes the record occupies, header included
    pid: Optional[int]  # common_pid of a data record, else None


# --- format files ------------------------------------------------------------


def parse_fields(text: str) -> Dict[str, Field]:
    """All `field:` lines of a format file (header_page or an event's format), by name.

    A line is ``field:DECL; offset:N; size:N; [signed:N;]``.  It is split with
    str methods, a line at a time: one pattern over the whole text that may skip
    whitespace between its parts backtracks polynomially over a malformed file
    (2,000 spaces after "field:" took 12 s; read_small_text allows 64 KiB).
    Lines that are not fields are skipped; a number too long for a layout is a
    FormatError.
    """
    fields: Dict[str, Field] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(";")
        lead, sep, decl = head.partition("field:")
        if not sep or lead.strip():
            continue
        attrs = {}
        for part in rest.split(";"):
            key, sep, value = part.partition(":")
            if sep:
                attrs[key.strip()] = value.strip()
        name = _NAME_RE.search(decl.strip())
        numbers = [attrs.get("offset", ""), attrs.get("size", ""), attrs.get("signed", "0")]
        if name is None or not all(n.isascii() and n.isdigit() for n in numbers):
            continue
        if any(len(n) > MAX_DIGITS for n in numbers):
            raise FormatError(f"field {name.group(1)!r}: a number of more than "
                              f"{MAX_DIGITS} digits")
        offset, size, signed = map(int, numbers)
        fields[name.group(1)] = Field(name.group(1), offset, size, signed == 1)
    return fields


def parse_header_page(text: str, byteorder: str = sys.byteorder) -> PageLayout:
    """The page layout from the text of `events/header_page`.

    Raises FormatError when a field is missing or the layout is not one a
    kernel produces (the walker relies on it: better to refuse at start-up).
    """
    fields = parse_fields(text)
    for name in ("timestamp", "commit", "data"):
        if name not in fields:
            raise FormatError(f"header_page has no {name!r} field")
    commit, data = fields["commit"], fields["data"]
    if commit.size not in (4, 8):
        raise FormatError(f"header_page: commit of {commit.size} bytes")
    if data.offset < commit.offset + commit.size or data.offset % ALIGNMENT:
        raise FormatError(f"header_page: data at offset {data.offset}")
    if data.size < 2 * RECORD_HEADER_SIZE or data.size % ALIGNMENT or \
            data.offset + data.size > MAX_SUBBUF_SIZE:
        raise FormatError(f"header_page: data of {data.size} bytes")
    if byteorder not in ("little", "big"):
        raise FormatError(f"byte order {byteorder!r}")
    return PageLayout(commit.offset, commit.size, data.offset, data.size, byteorder)


def parse_header_event(text: str) -> EventHeader:
    """The record header from the text of `events/header_event`."""
    def number(pattern: str) -> int:
        m = re.search(pattern, text)
        if m is None:
            raise FormatError(f"header_event: no match for {pattern!r}")
        if len(m.group(1)) > MAX_DIGITS:  # int() refuses over 4,300 digits: a ValueError
            raise FormatError(f"header_event: {pattern!r}: a number of more than "
                              f"{MAX_DIGITS} digits")
        return int(m.group(1))

    return EventHeader(
        number(r"type_len\s*:\s*([0-9]+)\s*bits"),
        number(r"time_delta\s*:\s*([0-9]+)\s*bits"),
        number(r"array\s*:\s*([0-9]+)\s*bits"),
        number(r"padding\s*:\s*type\s*==\s*([0-9]+)"),
        number(r"time_extend\s*:\s*type\s*==\s*([0-9]+)"),
        number(r"time_stamp\s*:\s*type\s*==\s*([0-9]+)"),
        number(r"data max type_len\s*==\s*([0-9]+)"),
    )


def parse_event_format(text: str) -> Field:
    """Offset (within the event) and size of `common_pid`, from an event's `format` file."""
    field = parse_fields(text).get("common_pid")
    if field is None:
        raise FormatError("event format has no 'common_pid' field")
    if field.size not in (1, 2, 4, 8):
        raise FormatError(f"common_pid of {field.size} bytes")
    return field


def _int_code(field: Field) -> str:
    """The struct format character for an integer field."""
    code = {1: "b", 2: "h", 4: "i", 8: "q"}[field.size]
    return code if field.signed else code.upper()


# --- the page walker ---------------------------------------------------------


class PageWalker:
    """Reads the pids of every data record of a sub-buffer.

    Build one per (layout, pid field) at start-up; `walk_into` is the hot path.
    The sub-buffer size is taken from each page's length, not from the layout,
    so a page is whatever one read() of trace_pipe_raw returned.
    """

    def __init__(self, layout: PageLayout, pid: Field,
                 header: EventHeader = SUPPORTED_EVENT_HEADER) -> None:
        if header != SUPPORTED_EVENT_HEADER:
            raise FormatError(f"unsupported record header {header}")
        self.layout = layout
        self.pid = pid
        self._data_offset = layout.data_offset
        self.commit_offset = layout.commit_offset
        order = "<" if layout.byteorder == "little" else ">"
        self._big = order == ">"
        code = _int_code(pid)
        self.commit = struct.Struct(order + ("Q" if layout.commit_size == 8 else "I"))
        self._u32 = struct.Struct(order + "I")
        self._pid = struct.Struct(order + code)
        # The record's first byte and its pid in one call: `B` is the byte that
        # holds type_len (the low 5 bits on little-endian, the high 5 of the
        # word's top byte on big-endian), the pid sits pid.offset bytes into
        # the event, which starts right after the 4-byte header.
        self._fast = struct.Struct(f"{order}B{RECORD_HEADER_SIZE - 1 + pid.offset}x{code}")
        self._pid_end = pid.offset + pid.size  # an event must be at least this long
        self._type_lens = tuple(b >> 3 if self._big else b & 0x1F for b in range(256))
        # The record's length by its first byte.  Only data records of 1..28 words
        # whose event is long enough to hold the pid take the fast path.  Every
        # other kind (type_len 0, padding, the time records, impossibly short
        # events) gets _RARE: the jump takes the fast loop past its end without a
        # test per record, and the walker subtracts it again and decodes the
        # record with every bound checked.
        self._steps = tuple(
            RECORD_HEADER_SIZE + words * 4
            if 1 <= words <= DATA_TYPE_LEN_MAX and words * 4 >= self._pid_end else _RARE
            for words in self._type_lens)
        # type_len 0: array[0] (the length of the rest of the record, the
        # length word included) and the pid of the event that follows it.
        self._long = struct.Struct(f"{order}I{pid.offset}x{code}")
        self._long_len_min = 4 + self._pid_end

    # --- page header ---

    def page_header(self, page: Buffer) -> Tuple[int, int, str]:
        """(data size, lost events, problem) from the page header; never raises.

        The data size is clamped to what the page holds, so the caller can
        parse whatever is there even when the header is wrong.
        """
        layout = self.layout
        room = len(page) - layout.data_offset
        if room < 0:
            return 0, 0, f"truncated page: {len(page)} bytes, header needs {layout.data_offset}"
        (word,) = self.commit.unpack_from(page, layout.commit_offset)
        size = word & COMMIT_SIZE_MASK
        problem = ""
        if word >> 32 and not (word & MISSED_EVENTS and word >> 32 == 0xFFFFFFFF):
            # The kernel adds the int (1 << 31) to a 64-bit local_t: it is
            # sign-extended, so a 64-bit commit with MISSED_EVENTS reads
            # 0xffffffff8....... (seen on 6.18).  Other high bits are garbage.
            problem = f"commit word {word:#x} has bits above 31"
        lost = 0
        if word & MISSED_EVENTS:
            lost = LOST_UNKNOWN
            # RB_MISSED_STORED: the count follows the data, an unsigned long (as wide as local_t)
            if word & MISSED_STORED and size + layout.commit_size > room:
                problem = problem or "missed-events count runs past the page"
            elif word & MISSED_STORED:
                (lost,) = self.commit.unpack_from(page, layout.data_offset + size)
        elif word & MISSED_STORED:
            problem = problem or "commit has MISSED_STORED without MISSED_EVENTS"
        if size > room:
            problem = problem or f"commit {size} > {room} data bytes in the page"
            size = room
        return size, lost, problem

    # --- records ---

    def walk_into(self, page: Buffer, pids: Set[int]) -> PageStats:
        """Add the pid of every data record of one page to `pids` (the hot path).

        Longer than the package's other functions on purpose: it runs once per
        trace record, and every call or attribute look-up moved out of it into
        a helper costs more than the whole loop body (see the module docstring).
        """
        off = self._data_offset
        room = len(page) - off
        size = self.commit.unpack_from(page, self.commit_offset)[0] if room >= 0 else -1
        lost, problem = 0, ""
        if not 0 <= size <= room:  # flags set, or a bad or truncated page
            size, lost, problem = self.page_header(page)
        end = off + size
        # The fast unpack reads _fast.size bytes from the record's start: it
        # may only run where that stays inside the buffer.
        fast_end = min(end, len(page) - self._fast.size + 1)
        unpack = self._fast.unpack_from
        steps = self._steps
        add = pids.add
        type_lens = self._type_lens
        unpack_long = self._long.unpack_from
        long_len_min = self._long_len_min
        long_min = RECORD_HEADER_SIZE + long_len_min
        records = 0
        byte = 0
        last: Optional[int] = None  # the previous pid: a set insertion only when it changes
        while off < end:
            while off < fast_end:
                byte, pid = unpack(page, off)
                off += steps[byte]
                records += 1
                if pid != last:
                    # Checked here only, where it is rare: a record that ends
                    # past the data (or a _RARE jump) leaves the loop before its
                    # pid is added; one that repeats the last pid adds nothing.
                    if off > end:
                        break
                    last = pid
                    add(pid)
            if off >= _RARE:  # not a small data record: undo the jump
                off -= _RARE
                if not type_lens[byte] and off + long_min <= end:
                    # type_len 0: an event of more than 112 bytes (long
                    # bpf_printk lines), common enough to deserve this shortcut
                    length, pid = unpack_long(page, off + RECORD_HEADER_SIZE)
                    nxt = off + RECORD_HEADER_SIZE + length
                    if length >= long_len_min and not length % ALIGNMENT and nxt <= end:
                        off = nxt  # already counted by the fast loop
                        if pid != last:
                            last = pid
                            add(pid)
                        continue
                records -= 1  # not a data record with a pid: counted by mistake
            elif off >= end:
                break
            # Padding, a time record or a problem: a data record with a pid that fits
            # the data is at least _fast.size long, so the loops above took it.
            rec = self.decode(page, off, end)
            if isinstance(rec, str):
                problem = problem or rec
                break
            if not rec.length:  # the null padding: nothing follows on this page
                break
            off += rec.length
        if off > end:  # the fast loop's last record ran past the data
            records -= 1
            problem = problem or f"record ending at {off} runs past the data end {end}"
        # tuple.__new__: a NamedTuple's own __new__ is Python code, far slower
        return _new_tuple(PageStats, (records, lost, problem))

    def decode(self, page: Buffer, off: int, end: int) -> Union[Record, str]:
        """The record at `off` (length 0: the null padding), or why it is malformed.

        `end` is the end of the page's data; nothing at or past it is read.  One
        branch per record kind and per bound, kept together (above complexity 10)
        so that every bound is checked in one place, before anything is read.
        """
        if off + RECORD_HEADER_SIZE > end:
            return f"record header at {off} runs past the data end {end}"
        (word,) = self._u32.unpack_from(page, off)
        if self._big:
            type_len, delta = word >> 27, word & 0x7FFFFFF
        else:
            type_len, delta = word & 0x1F, word >> 5
        if type_len == TYPE_PADDING and delta == 0:
            return Record(type_len, 0, None)
        if type_len >= TYPE_TIME_EXTEND:
            length = TIME_RECORD_SIZE  # array[0] holds the upper time bits
        elif type_len in (0, TYPE_PADDING):
            if off + 8 > end:
                return f"record at {off} (type_len {type_len}) has no length word"
            length = RECORD_HEADER_SIZE + self._u32.unpack_from(page, off + 4)[0]
            if length < 8:  # the kernel's own lengths always cover the length word
                return f"record at {off} (type_len {type_len}) shorter than its length word"
        else:
            length = RECORD_HEADER_SIZE + type_len * 4
        # Bounds first: nothing past the data end is read, not even the pid.
        if length % ALIGNMENT:
            return f"record at {off} has an unaligned length {length}"
        if off + length > end:
            return f"record at {off} of {length} bytes runs past the data end {end}"
        pid = None
        if type_len <= DATA_TYPE_LEN_MAX:
            # type_len 0: the event follows the length word (array[1])
            event = off + (8 if type_len == 0 else RECORD_HEADER_SIZE)
            if off + length - event < self._pid_end:
                return f"event at {off} of {off + length - event} bytes cannot hold the pid"
            pid = self._pid.unpack_from(page, event + self.pid.offset)[0]
        return Record(type_len, length, pid)


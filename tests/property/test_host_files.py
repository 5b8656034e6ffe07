"""Properties of the parsers of small kernel files: tracefs's per-CPU stats and CPU
lists (trace/tracefs) and /proc/PID/stat and status (core/procfs)."""

from __future__ import annotations

from typing import Optional, Set

from hypothesis import example, given
from hypothesis import strategies as st

from gtp5g_operator.core.procfs import TaskStat, parse_stat, parse_status
from gtp5g_operator.trace.tracefs import CpuStats, parse_cpu_list, parse_cpu_stats
from tests.property.bounds import check_total
from tests.property.strategies import HOSTILE_DIGITS, mutated_bytes, texts_of

STATS = ("entries: 12\noverrun: 0\ncommit overrun: 0\nbytes: 1416\n"
         "oldest event ts:   668.334805\nnow ts:  1004.861250\ndropped events: 0\n"
         "read events: 339\n")
CPU_LISTS = ["0-3\n", "0\n", "0-1,4,6-7\n", "\n", "0-8191\n"]


@given(texts_of([STATS]))
def test_parse_cpu_stats_is_total_and_counts_are_counts(text: str) -> None:
    stats = check_total(lambda: parse_cpu_stats(text), returns=CpuStats)
    assert isinstance(stats, CpuStats)
    counts = (stats.entries, stats.overrun, stats.commit_overrun, stats.bytes,
              stats.dropped_events, stats.read_events)
    # the kernel prints unsigned longs: anything else is not a count (left at 0)
    assert all(type(c) is int and 0 <= c < 2**64 for c in counts), counts


cpu_lists = st.one_of(
    texts_of(CPU_LISTS),
    st.lists(st.one_of(st.integers(0, 300).map(str), st.sampled_from(HOSTILE_DIGITS)),
             min_size=1, max_size=6).map(lambda parts: ",".join(
                 f"{a}-{b}" for a, b in zip(parts[::2], parts[1::2], strict=False)) or parts[0]),
)


@given(cpu_lists)
@example("0-" + "9" * 5000)  # int() refuses it: a ValueError, as documented
@example("0-4000000000")  # a set of four billion CPUs: memory, not a ValueError
def test_parse_cpu_list_is_total_and_bounded(text: str) -> None:
    cpus = check_total(lambda: parse_cpu_list(text), returns=set, raises=(ValueError,))
    if isinstance(cpus, set):
        assert all(type(c) is int and c >= 0 for c in cpus)
        assert len(cpus) <= 1 << 16  # beyond any kernel's NR_CPUS


STAT = b"4242 (nr-gnb) S 1 4242 4242 0 -1 4194560 3200 0 0 0 12 9 0 0 20 0 7 0 31337 " \
       b"2097152000 5120 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
STATUS = b"Name:\tnr-gnb\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n" \
         b"Pid:\t4243\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n"


@given(st.one_of(st.binary(max_size=300), mutated_bytes(st.just(STAT)),
                 st.builds(lambda comm: b"1 (" + comm + b") " + STAT.split(b") ", 1)[1],
                           st.binary(max_size=40))))
def test_parse_stat_is_total(data: bytes) -> None:
    stat = check_total(lambda: parse_stat(data), returns=(TaskStat, type(None)))
    if isinstance(stat, TaskStat):
        assert type(stat.start_time) is int and isinstance(stat.state, str)


@given(st.one_of(st.binary(max_size=300), mutated_bytes(st.just(STATUS)),
                 st.sampled_from(HOSTILE_DIGITS).map(lambda n: b"Tgid:\t%s\nUid:\t%s\n" % (
                     n.encode(), n.encode()))))
@example(b"Tgid:\t" + b"9" * 5000 + b"\n")
def test_parse_status_is_total(data: bytes) -> None:
    ids = check_total(lambda: parse_status(data), returns=tuple)
    assert isinstance(ids, tuple) and len(ids) == 2

    def an_id(value: Optional[int]) -> bool:
        return value is None or (type(value) is int and value >= 0)

    assert all(an_id(v) for v in ids), ids


def test_cpu_lists_the_kernel_prints_still_parse() -> None:
    expected: Set[int] = {0, 1, 4, 6, 7}
    assert parse_cpu_list("0-1,4,6-7\n") == expected
    assert parse_cpu_list("") == set()

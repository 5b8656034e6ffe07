"""Capture real sub-buffers of the kernel's trace ring buffer for the unit tests.

Run as root on a real kernel (x86-64 for the BPF part)::

    python3 testbed/capture_ring_pages.py                 # writes tests/data/ringbuf/
    python3 testbed/capture_ring_pages.py --bench /tmp/pages --records 200000

It mounts tracefs if needed, writes trace_marker lines from this process and,
with bench/bpf_printk.py's PrintkProbe attached to sys_enter_sendto, makes a
child process's threads print gtp5g-tracer lines with bpf_trace_printk.  Then it
reads `per_cpu/cpuN/trace_pipe_raw` one sub-buffer at a time and saves the
pages with the format files that describe them, and `pages.json` with, for each
page, what the tests must find in it.

The expected values do not come from the parser under test: the pids are read
from the events' TEXT (`PID=%u` of the BPF format string, which is the task's
thread ID, and `tid=%d` written into each marker line), the record count is the
number of those texts, and the lost-event count is read from the page header's
flag bits directly.

Reading trace_pipe_raw consumes events: it drains whatever was in the buffer
first.  Everything it changes (buffer_size_kb, buffer_subbuf_size_kb,
tracing_on, the BPF program, the mount) is put back on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

ROOT = Path(__file__).resolve().parent.parent
TRACING = Path("/sys/kernel/tracing")
OUT = ROOT / "tests" / "data" / "ringbuf"
MISSED_EVENTS, MISSED_STORED = 1 << 31, 1 << 30

# The oracle: every bpf_printk record's text carries its thread ID; so does
# every marker line this script writes.
BPF_PID = re.compile(rb"fentry/gtp5g_encap_recv: PID=(\d+),")
MARK_PID = re.compile(rb"ringbuf-capture tid=(\d+) ")

SENDER = r"""
import os, socket, sys, threading
cpu, per, nthreads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tids, ready, go = [], threading.Barrier(nthreads + 1), threading.Event()
def send():
    os.sched_setaffinity(0, {cpu})          # this thread only
    tids.append(threading.get_native_id())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ready.wait(); go.wait()
    for _ in range(per):
        s.sendto(b"x", ("127.0.0.1", 9))
ts = [threading.Thread(target=send) for _ in range(nthreads)]
for t in ts: t.start()
ready.wait(); sys.stdout.write(" ".join(map(str, tids)) + "\n"); sys.stdout.flush()
sys.stdin.readline(); go.set()
for t in ts: t.join()
"""


class Tracefs:
    """The settings this script touches, remembered and put back by restore()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False
        if not (path / "trace_pipe").exists():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(path)], check=True)
            self.mounted = True
        self.saved: Dict[str, str] = {}
        for name in ("buffer_subbuf_size_kb", "buffer_size_kb", "tracing_on"):
            if (path / name).exists():
                self.saved[name] = self.read(name)

    def read(self, name: str) -> str:
        return (self.path / name).read_text().strip()

    def write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def restore(self) -> None:
        for name in ("buffer_subbuf_size_kb", "buffer_size_kb", "tracing_on"):
            if name not in self.saved or self.read(name) == self.saved[name]:
                continue
            # "7 (expanded: 1408)": the buffer was not yet expanded; once it has
            # been (any size change does that) the closest is the expanded size.
            value = self.saved[name].split("expanded:")[-1].strip(" )")
            self.write(name, value)
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=False)


def cpus(tracing: Path) -> List[int]:
    return sorted(int(p.name[3:]) for p in (tracing / "per_cpu").glob("cpu*"))


def read_pages(tracing: Path, cpu: int, size: int) -> Iterator[bytes]:
    """Non-blocking reads of one CPU's trace_pipe_raw until EAGAIN."""
    fd = os.open(tracing / f"per_cpu/cpu{cpu}/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                page = os.read(fd, size)  # one read returns one whole sub-buffer
            except BlockingIOError:
                return
            if not page:
                return
            yield page
    finally:
        os.close(fd)


def drain(tracing: Path, size: int) -> Dict[int, List[bytes]]:
    return {cpu: list(read_pages(tracing, cpu, size)) for cpu in cpus(tracing)}


def oracle(page: bytes) -> Dict[str, Any]:
    """What the page holds, from the events' text and the raw header word."""
    (commit,) = struct.unpack_from("<Q", page, 8)
    size = commit & (MISSED_STORED - 1)
    data = page[16:16 + size]
    pids = [int(m) for m in BPF_PID.findall(data)] + [int(m) for m in MARK_PID.findall(data)]
    lost = 0
    if commit & MISSED_EVENTS:
        lost = struct.unpack_from("<Q", page, 16 + size)[0] if commit & MISSED_STORED else -1
    return {"pids": sorted(set(pids)), "records": len(pids), "lost": lost,
            "commit": commit, "size": len(page)}


def mark(tracing: Path, lines: List[str]) -> None:
    fd = os.open(tracing / "trace_marker", os.O_WRONLY)
    try:
        for line in lines:
            os.write(fd, line.encode())
    finally:
        os.close(fd)


def marker_line(seq: int, pad: int = 0) -> str:
    return f"ringbuf-capture tid={os.getpid()} seq={seq} {'x' * pad}\n"


def printk_burst(tracing: Path, cpu: int, records: int, threads: int = 3) -> List[int]:
    """`records` bpf_printk lines from `threads` threads of a child pinned to `cpu`."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bpf_printk import PrintkProbe  # type: ignore[import-not-found]

    child = subprocess.Popen([sys.executable, "-c", SENDER, str(cpu), str(records // threads),
                              str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdin is not None
    tids = [int(t) for t in child.stdout.readline().split()]
    probe = PrintkProbe(str(tracing))
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(timeout=300)
    finally:
        probe.close()  # detach before anything else can fail
    return tids


class Capture:
    def __init__(self, fs: Tracefs, out: Path) -> None:
        self.fs = fs
        self.out = out
        self.pages: List[Dict[str, Any]] = []

    def keep(self, scenario: str, got: Dict[int, List[bytes]], limit: int,
             note: str, known: List[int]) -> None:
        """Save up to `limit` pages per CPU (the first ones) and their oracles."""
        for cpu, pages in got.items():
            for i, page in enumerate(pages[:limit]):
                name = f"{scenario}-cpu{cpu}-{i}.bin"
                (self.out / name).write_bytes(page)
                entry = {"file": name, "scenario": scenario, "cpu": cpu, "note": note,
                         "known_pids": sorted(set(known))}
                entry.update(oracle(page))
                self.pages.append(entry)

    def formats(self) -> None:
        files = {"header_page": "events/header_page", "header_event": "events/header_event",
                 "bpf_trace_printk.format": "events/bpf_trace/bpf_trace_printk/format",
                 "print.format": "events/ftrace/print/format"}
        for name, rel in files.items():
            (self.out / name).write_text((self.fs.path / rel).read_text())


def run(fs: Tracefs, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        old.unlink()
    cap = Capture(fs, out)
    fs.write("tracing_on", "1")
    subbufs = "buffer_subbuf_size_kb" in fs.saved  # Linux >= 6.8
    if subbufs:
        fs.write("buffer_subbuf_size_kb", "4")
    cap.formats()
    size = 4096
    drain(fs.path, size)  # whatever was there before is not ours
    cpu0, cpu1 = cpus(fs.path)[0], cpus(fs.path)[-1]
    me = os.getpid()
    os.sched_setaffinity(0, {cpu0})

    # Short markers: one partial page of small data records (type_len <= 28).
    mark(fs.path, [marker_line(i) for i in range(5)])
    cap.keep("marker-short", drain(fs.path, size), 2, "5 trace_marker lines", [me])

    # A long line (type_len 0: the length in array[0]) and a pause of more than
    # 2^27 ns between two events (a time-extend record).
    mark(fs.path, [marker_line(0, 300)])
    time.sleep(0.3)
    mark(fs.path, [marker_line(1), marker_line(2, 150)])
    cap.keep("marker-long-gap", drain(fs.path, size), 2,
             "a 330-byte line, 0.3 s pause, two more lines", [me])

    # bpf_printk from three threads of one process: several full pages.
    tids = printk_burst(fs.path, cpu1, 240)
    cap.keep("printk", drain(fs.path, size), 3, "240 bpf_trace_printk records, 3 threads",
             tids)

    # Overwrite: a ring of 2-3 sub-buffers and far more records than fit.
    fs.write("buffer_size_kb", "8")
    tids = printk_burst(fs.path, cpu1, 900)
    cap.keep("missed", drain(fs.path, size), 2, "900 records into an 8 KiB ring", tids)
    fs.write("buffer_size_kb", fs.saved["buffer_size_kb"].split("expanded:")[-1].strip(" )"))

    if subbufs:  # 8 KiB sub-buffers; only header_page depends on their size
        fs.write("buffer_subbuf_size_kb", "8")
        (out / "header_page-8k").write_text((fs.path / "events/header_page").read_text())
        tids = printk_burst(fs.path, cpu1, 150)
        cap.keep("subbuf8k", drain(fs.path, 8192), 2, "150 records, 8 KiB sub-buffers", tids)
        fs.write("buffer_subbuf_size_kb", fs.saved["buffer_subbuf_size_kb"])

    (out / "pages.json").write_text(json.dumps(cap.pages, indent=1) + "\n")
    for p in cap.pages:
        print(f"{p['file']:28} {p['size']:5} B commit={p['commit']:#x} "
              f"records={p['records']:3} lost={p['lost']} pids={p['pids']}")


def bench(fs: Tracefs, out: Path, records: int) -> None:
    """Fill the ring with `records` bpf_printk lines and save every page, for timing."""
    out.mkdir(parents=True, exist_ok=True)
    fs.write("tracing_on", "1")
    size = int(fs.saved.get("buffer_subbuf_size_kb", "4")) * 1024
    per_cpu_kb = records * 80 // 1024 + 1024
    fs.write("buffer_size_kb", str(per_cpu_kb))
    drain(fs.path, size)
    tids = printk_burst(fs.path, cpus(fs.path)[-1], records, threads=4)
    n = 0
    with open(out / "pages.bin", "wb") as f:
        for pages in drain(fs.path, size).values():
            for page in pages:
                f.write(page)
                n += 1
    (out / "pages.json").write_text(json.dumps({"subbuf": size, "pages": n, "tids": tids}))
    print(f"{n} pages of {size} B in {out / 'pages.bin'}")
    time_walker(fs.path, out / "pages.bin", size)


def time_walker(tracing: Path, pages_file: Path, size: int, rounds: int = 7) -> None:
    """CPU time of PageWalker.walk_into per record over the saved pages (best of `rounds`)."""
    sys.path.insert(0, str(ROOT))
    from gtp5g_operator.trace import ringbuf

    events = tracing / "events"
    walker = ringbuf.PageWalker(
        ringbuf.parse_header_page((events / "header_page").read_text()),
        ringbuf.parse_event_format((events / "bpf_trace/bpf_trace_printk/format").read_text()),
        ringbuf.parse_header_event((events / "header_event").read_text()))
    data = pages_file.read_bytes()
    pages = [data[i:i + size] for i in range(0, len(data), size)]
    pids: Set[int] = set()
    records = sum(walker.walk_into(page, pids).records for page in pages)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for page in pages:
            walker.walk_into(page, pids)
        best = min(best, time.process_time() - start)
    print(f"walk_into: {records} records, {len(pids)} pids: {best / records * 1e6:.3f} us/record, "
          f"{records / best / 1e6:.2f} M records/s ({sys.executable})")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tracing", type=Path, default=TRACING)
    ap.add_argument("--bench", type=Path, help="save pages for timing here instead")
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    fs = Tracefs(args.tracing)
    try:
        if args.bench:
            bench(fs, args.bench, args.records)
        else:
            run(fs, args.out)
    finally:
        fs.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())

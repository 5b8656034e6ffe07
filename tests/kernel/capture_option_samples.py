"""Capture real trace_pipe text with each output option that changes its layout.

Run as root on a real kernel (x86-64 for the BPF lines)::

    python3 -m tests.kernel.capture_option_samples      # writes tests/data/trace-samples/

For each option in `OPTIONS`, it sets the option, makes a child process named
`nr-gnb` (threads `nr-gnb`, `nr-gnb-rlc`, `gnb worker`) print gtp5g-tracer lines
twice — once through trace_marker, once with bpf_trace_printk from
bench/bpf_printk.py's probe on sys_enter_sendto — reads trace_pipe until it is
empty and saves the text as `option-<name>.trace`, with a JSON sidecar
(`option-<name>.json`) naming the layout it must be read as and the thread IDs
it holds (the oracle: each thread reports its own ID; not this parser).

Every option it changes is restored (try/finally), and tracefs is unmounted
again if it was mounted here.  Reading trace_pipe consumes whatever was in the
buffer first.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

ROOT = Path(__file__).resolve().parent.parent.parent
TRACING = Path("/sys/kernel/tracing")
OUT = ROOT / "tests" / "data" / "trace-samples"

SENDTO = "syscalls/sys_enter_sendto"
# Inside dev_queue_xmit's rcu_read_lock_bh(): the BPF lines carry the "bottom halves
# off" flag, which the latency format prints as 'b' in its first flag column.
BH_OFF = "net/net_dev_queue"

# name -> (option settings, the textscan layout that must recognise the text, tracepoint)
OPTIONS: Dict[str, Tuple[Dict[str, str], str, str]] = {
    "latency-format": ({"latency-format": "1"}, "latency-format", SENDTO),
    "latency-format-bh-off": ({"latency-format": "1"}, "latency-format", BH_OFF),
    "context-info-off": ({"context-info": "0"}, "payload PID", SENDTO),
    "raw": ({"raw": "1"}, "raw", SENDTO),
    "hex": ({"hex": "1"}, "hex", SENDTO),
    "latency-format-record-tgid": ({"latency-format": "1", "record-tgid": "1"},
                                   "latency-format", SENDTO),
}

CHILD = r"""
import ctypes, json, socket, sys, threading
libc = ctypes.CDLL(None)
def name(n): libc.prctl(15, n.encode(), 0, 0, 0)
marker, per = sys.argv[1], int(sys.argv[2])
name("nr-gnb")
tids, lock = [], threading.Lock()
def body(n):
    name(n)
    tid = threading.get_native_id()
    with lock:
        tids.append(tid)
    with open(marker, "w") as f:
        f.write(f"fentry/gtp5g_encap_recv: PID={tid}, TGID={tid}, CPU=0\n")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(per):
        s.sendto(b"x", ("127.0.0.1", 9))
for n in ("nr-gnb-rlc", "gnb worker"):
    t = threading.Thread(target=body, args=(n,)); t.start(); t.join()
body("nr-gnb")
print(json.dumps(sorted(tids)))
"""


@contextmanager
def options(settings: Dict[str, str]) -> Iterator[None]:
    """Set tracefs options; put back what they were, whatever happens."""
    old: Dict[str, str] = {}
    try:
        for name, value in settings.items():
            path = TRACING / "options" / name
            old[name] = path.read_text().strip()
            path.write_text(value)
        yield
    finally:
        for name, value in old.items():
            (TRACING / "options" / name).write_text(value)


def drain_text(max_bytes: int = 1 << 20) -> bytes:
    """Everything trace_pipe holds now (non-blocking), as text."""
    fd = os.open(TRACING / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
    chunks: List[bytes] = []
    try:
        while sum(map(len, chunks)) < max_bytes:
            try:
                data = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break
                raise
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks)


def capture(name: str, settings: Dict[str, str], layout: str, tracepoint: str,
            probe_cls: object) -> None:
    drain_text()  # start from an empty buffer
    probe = probe_cls(str(TRACING), tracepoint)  # type: ignore[operator]
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(TRACING / "trace_marker"), "2"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        probe.close()
    tids = json.loads(out)
    time.sleep(0.1)
    with options(settings):  # the layout is chosen when the text is formatted: at read
        text = drain_text()
    (OUT / f"option-{name}.trace").write_bytes(text)
    (OUT / f"option-{name}.json").write_text(json.dumps(
        {"options": settings, "layout": layout, "tids": tids, "bpf_tracepoint": tracepoint,
         "kernel": os.uname().release}, indent=1) + "\n")
    lines = text.count(b"\n")
    print(f"option-{name}.trace: {lines} lines, tids {tids}")


def main() -> int:
    mounted = False
    if not (TRACING / "trace_pipe").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
        mounted = True
    sys.path.insert(0, str(ROOT))
    from bench.bpf_printk import PrintkProbe

    try:
        for name, (settings, layout, tracepoint) in OPTIONS.items():
            capture(name, settings, layout, tracepoint, PrintkProbe)
    finally:
        if mounted:
            subprocess.run(["umount", str(TRACING)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real process that looks like UERANSIM's nr-gnb to /proc.

The main thread renames itself with prctl(PR_SET_NAME) (so /proc/PID/comm is
the process name) and starts threads with their own names.  It prints one JSON
line {"pid": P, "threads": {"name": tid, ...}} and then obeys stdin commands:

Fields are separated by tabs (thread names may contain spaces):

    exit NAME        end the thread called NAME (prints "ok NAME")
    mark NAME PATH   the thread called NAME (or the main thread, by the process
                     name) writes one gtp5g-tracer line to PATH, e.g. the
                     kernel's trace_marker (prints "ok NAME")
    rename NAME      the main thread renames itself (and so the process) to
                     NAME with prctl(PR_SET_NAME) (prints "ok NAME")
    setuid UID       the process switches its real, effective and saved uid
                     (every thread) to UID (prints "ok UID")
    exec ARG...      execv(ARG[0], ARG): another program under the same PID and
                     start time (prints nothing itself)
    (EOF)            exit the process

With --burn-us N, every named thread also uses N µs of CPU every --every-ms
milliseconds, like a gNB serving traffic (hashing, which releases the GIL:
the threads compete for CPUs, not for the interpreter).

Run: python3 -m testbed.gnb_sim --name nr-gnb --thread nr-gnb-rlc --thread "gnb worker"
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import queue
import sys
import threading
import time
from typing import Dict, List, Tuple

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def set_thread_name(name: str) -> None:
    # surrogateescape: a name of any bytes, as argv carries them ("rlc\udce2\udc80")
    if _libc.prctl(PR_SET_NAME, name.encode("utf-8", "surrogateescape")[:15], 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="nr-gnb")
    ap.add_argument("--thread", action="append", default=[])
    ap.add_argument("--workers", type=int, default=0,
                    help="add this many more threads, named gnb-w0, gnb-w1, ...")
    ap.add_argument("--burn-us", type=int, default=0,
                    help="CPU each named thread uses every --every-ms (0: none)")
    ap.add_argument("--every-ms", type=float, default=10.0)
    a = ap.parse_args(argv)
    a.thread += [f"gnb-w{i}" for i in range(a.workers)]
    threading.stack_size(256 * 1024)  # thousands of threads stay cheap
    set_thread_name(a.name)
    tids: Dict[str, int] = {}
    inboxes: Dict[str, queue.Queue[Tuple[str, str]]] = {}
    started = threading.Barrier(len(a.thread) + 1)
    threads = {}

    def body(name: str, inbox: queue.Queue[Tuple[str, str]]) -> None:
        set_thread_name(name)
        tids[name] = threading.get_native_id()
        started.wait()
        while True:
            try:
                cmd, arg = inbox.get(timeout=a.every_ms / 1e3) if a.burn_us else inbox.get()
            except queue.Empty:
                burn(a.burn_us / 1e6)
                continue
            if cmd == "exit":
                return
            mark(arg, tids[name], os.getpid())
            print(f"ok {name}", flush=True)

    for name in a.thread:
        inboxes[name] = queue.Queue()
        threads[name] = threading.Thread(target=body, args=(name, inboxes[name]), daemon=True)
        threads[name].start()
    started.wait()
    print(json.dumps({"pid": os.getpid(), "threads": tids}), flush=True)
    for line in sys.stdin:
        cmd, _, rest = line.rstrip("\n").partition("\t")
        name, _, path = rest.partition("\t")
        if name == a.name and cmd == "mark":
            mark(path, os.getpid(), os.getpid())
            print(f"ok {name}", flush=True)
        elif cmd == "rename":
            set_thread_name(name)
            a.name = name
            print(f"ok {name}", flush=True)
        elif cmd == "setuid":
            os.setresuid(int(name), int(name), int(name))  # glibc applies it to every thread
            print(f"ok {name}", flush=True)
        elif cmd == "exec":
            argv = rest.split("\t")
            sys.stdout.flush()
            os.execv(argv[0], argv)
        elif cmd in ("exit", "mark") and name in inboxes:
            inboxes[name].put((cmd, path))
            if cmd == "exit":
                threads[name].join()
                print(f"ok {name}", flush=True)


_BLOCK = bytes(16384)


def burn(seconds: float) -> None:
    """Use `seconds` of this thread's CPU time, mostly without the GIL."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        hashlib.sha256(_BLOCK).digest()


def mark(path: str, tid: int, tgid: int) -> None:
    with open(path, "w") as f:
        f.write(f"fentry/gtp5g_encap_recv: PID={tid}, TGID={tgid}, CPU=0\n")


if __name__ == "__main__":
    main(sys.argv[1:])

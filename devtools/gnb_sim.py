"""A real process that looks like UERANSIM's nr-gnb to /proc.

The main thread renames itself with prctl(PR_SET_NAME) (so /proc/PID/comm is
the process name) and starts threads with their own names.  It prints one JSON
line {"pid": P, "threads": {"name": tid, ...}} and then obeys stdin commands:

    exit NAME     end the thread called NAME (prints "ok NAME")
    (EOF)         exit the process

Run: python3 -m devtools.gnb_sim --name nr-gnb --thread nr-gnb-rlc --thread "gnb worker"
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
from typing import Dict, List

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def set_thread_name(name: str) -> None:
    if _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="nr-gnb")
    ap.add_argument("--thread", action="append", default=[])
    a = ap.parse_args(argv)
    set_thread_name(a.name)
    tids: Dict[str, int] = {}
    stops: Dict[str, threading.Event] = {}
    started = threading.Barrier(len(a.thread) + 1)
    threads = {}

    def body(name: str, stop: threading.Event) -> None:
        set_thread_name(name)
        tids[name] = threading.get_native_id()
        started.wait()
        stop.wait()

    for name in a.thread:
        stops[name] = threading.Event()
        threads[name] = threading.Thread(target=body, args=(name, stops[name]), daemon=True)
        threads[name].start()
    started.wait()
    print(json.dumps({"pid": os.getpid(), "threads": tids}), flush=True)
    for line in sys.stdin:
        cmd, _, name = line.strip().partition(" ")
        if cmd == "exit" and name in stops:
            stops[name].set()
            threads[name].join()
            print(f"ok {name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

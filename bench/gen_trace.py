#!/usr/bin/env python3
# Copied from the project's shared/bench/gen_trace.py so the benchmark runs from a clone.
"""Generate a synthetic ftrace trace_pipe stream in the format the gtp5g-tracer
eBPF program produces (bpf_printk lines from fentry/fexit probes on the gtp5g
module), mixed with lines from other tasks.  Deterministic for a given seed.

Ground truth (which TIDs/TGIDs belong to nr-gnb) is written with --truth FILE
as JSON: {"gnb_tids": [...], "gnb_tgid": N, "ue_tids": [...], ...}.
"""
import argparse
import json
import random
import sys

MSGS = [  # (probe, format) as printed by the tracer, PID/TGID/CPU filled in
    "fentry/gtp5g_encap_recv: DEV={dev}",
    "fentry/gtp5g_encap_recv: GTP packet detected (len >= 8)",
    "fentry/gtp5g_encap_recv: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fentry/gtp5g_encap_recv: LEN={len}",
    "fexit/gtp5g_encap_recv: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fexit/gtp5g_encap_recv: DEV={dev}",
    "fentry/pdr_find_by_gtp1u: PID={pid}, TGID={tgid}",
    "fexit/pdr_find_by_gtp1u: PID={pid}, PDR=Found",
    "fentry/policePacket: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fentry/ip4_find_route: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fexit/ip4_find_route: PID={pid}, Route=Found",
    "fentry/gtp5g_xmit_skb_ipv4: DEV={dev}",
    "fentry/gtp5g_xmit_skb_ipv4: LEN={len}, TS={ts}",
    "fentry/gtp5g_xmit_skb_ipv4: pktinfo exists",
    "fentry/gtp5g_xmit_skb_ipv4: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fexit/gtp5g_xmit_skb_ipv4: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fentry/gtp5g_handle_skb_ipv4: PID={pid}, TGID={tgid}, CPU={cpu}",
    "fexit/gtp5g_handle_skb_ipv4: PID={pid}, TGID={tgid}, RET=0x{ret:x} (skb ptr)",
    "fentry/gtp5g_push_header: PID={pid}, TGID={tgid}, LEN={len}",
    "fexit/gtp5g_push_header: RET=0x{ret:x} (skb ptr), LEN={len}, TS={ts}",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gnb-share", type=float, default=0.5)
    ap.add_argument("--unknown-comm-share", type=float, default=0.01,
                    help="share of lines whose comm is shown as <...>")
    ap.add_argument("--record-tgid", action="store_true",
                    help="print the (tgid) column, as options/record-tgid does")
    ap.add_argument("--truth")
    a = ap.parse_args()
    r = random.Random(a.seed)
    gnb_tgid = 1150348
    gnb_tids = [gnb_tgid] + [gnb_tgid + 3 + i for i in range(7)]
    ue_tgid = 365000
    ue_tids = [ue_tgid, ue_tgid + 12]
    others = [("iperf3", 2001, 2001), ("ksoftirqd/5", 41, 41), ("<idle>", 0, 0),
              ("kworker/u32:3", 9120, 9120), ("nr-gnbx", 7777, 7777),
              ("sshd", 801, 801), ("upf", 4100, 4100), ("upf", 4103, 4100)]
    out = sys.stdout
    buf = []
    ts = 34202.0
    for _i in range(a.lines):
        x = r.random()
        if x < a.gnb_share:
            comm, tid, tgid = "nr-gnb", r.choice(gnb_tids), gnb_tgid
        elif x < a.gnb_share + 0.1:
            comm, tid, tgid = "nr-ue", r.choice(ue_tids), ue_tgid
        else:
            comm, tid, tgid = r.choice(others)
        shown = "<...>" if r.random() < a.unknown_comm_share else comm
        cpu = r.randrange(16)
        ts += r.random() * 1e-5
        flags = r.choice(["..s21", "d.s31", "..s1.", "d..31", "...1."])
        msg = r.choice(MSGS).format(pid=tid, tgid=tgid, cpu=cpu, dev="upfgtp",
                                    len=r.randrange(60, 1500), ts=int(ts * 1e9),
                                    ret=r.getrandbits(48))
        head = f"{shown:>16}-{tid:<7} "
        if a.record_tgid:
            head += f"({tgid:>7}) " if shown != "<...>" else "(-------) "
        buf.append(f"{head}[{cpu:03d}] {flags} {ts:12.6f}: bpf_trace_printk: {msg}\n")
        if len(buf) >= 4096:
            out.write("".join(buf)); buf.clear()
    out.write("".join(buf))
    if a.truth:
        with open(a.truth, "w") as f:
            json.dump({"gnb_tgid": gnb_tgid, "gnb_tids": gnb_tids,
                       "ue_tgid": ue_tgid, "ue_tids": ue_tids,
                       "decoys": [7777]}, f)


if __name__ == "__main__":
    main()

"""A tiny BPF program, loaded with raw bpf(2) and perf_event_open(2) via ctypes,
that prints the gtp5g-tracer line format with bpf_trace_printk on a tracepoint.

It stands in for free5gc's gtp5g-tracer (which needs the gtp5g module) so the
benchmark can measure readers of the real kernel trace_pipe, where the
kernel formats every line at read time.  x86_64 only (syscall numbers).
"""

from __future__ import annotations

import ctypes
import os
import struct

SYS_BPF, SYS_PERF_EVENT_OPEN = 321, 298
BPF_PROG_LOAD, BPF_PROG_TYPE_TRACEPOINT = 5, 5
PERF_TYPE_TRACEPOINT, PERF_FLAG_FD_CLOEXEC = 2, 8
PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408
HELPER_TRACE_PRINTK, HELPER_SMP_PROCESSOR_ID, HELPER_PID_TGID = 6, 8, 14
FORMAT = b"fentry/gtp5g_encap_recv: PID=%u, TGID=%u, CPU=%u"  # the kernel adds the newline

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program() -> bytes:
    fmt = FORMAT + b"\0" * (8 - len(FORMAT) % 8)
    size = len(fmt)
    code = [
        _insn(0x85, imm=HELPER_PID_TGID),         # r0 = pid_tgid
        _insn(0xBF, dst=6, src=0),                # r6 = r0
        _insn(0x85, imm=HELPER_SMP_PROCESSOR_ID),  # r0 = cpu
        _insn(0xBF, dst=7, src=0),                # r7 = r0
    ]
    for i in range(0, size, 8):                   # the format string onto the stack
        lo, hi = struct.unpack("<iI", fmt[i:i + 8])[0], struct.unpack("<I", fmt[i + 4:i + 8])[0]
        hi_s = struct.unpack("<i", struct.pack("<I", hi))[0]
        code += [_insn(0x18, dst=1, imm=lo), _insn(0, imm=hi_s),   # r1 = imm64
                 _insn(0x7B, dst=10, src=1, off=-size + i)]          # *(u64*)(r10-..) = r1
    code += [
        _insn(0xBF, dst=1, src=10), _insn(0x07, dst=1, imm=-size),  # r1 = fmt
        _insn(0xB7, dst=2, imm=size),             # r2 = size
        _insn(0xBC, dst=3, src=6),                # w3 = (u32) pid_tgid = tid
        _insn(0xBF, dst=4, src=6), _insn(0x77, dst=4, imm=32),  # r4 = tgid
        _insn(0xBF, dst=5, src=7),                # r5 = cpu
        _insn(0x85, imm=HELPER_TRACE_PRINTK),
        _insn(0xB7, dst=0, imm=0), _insn(0x95),   # return 0
    ]
    return b"".join(code)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


class PrintkProbe:
    """Attach the program to a tracepoint; close() detaches it.

    One perf event (CPU 0) suffices: a BPF program on a tracepoint runs on
    every CPU, and attaching it again gives EEXIST (this is what bcc does).
    """

    def __init__(self, tracing: str, tracepoint: str = "syscalls/sys_enter_sendto") -> None:
        insns = program()
        self._insns = ctypes.create_string_buffer(insns)
        self._license = ctypes.create_string_buffer(b"GPL")
        self._log = ctypes.create_string_buffer(65536)
        attr = ctypes.create_string_buffer(struct.pack(
            "<IIQQIIQ", BPF_PROG_TYPE_TRACEPOINT, len(insns) // 8,
            ctypes.addressof(self._insns), ctypes.addressof(self._license),
            1, len(self._log), ctypes.addressof(self._log)).ljust(128, b"\0"))
        prog = _libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, 128)
        if prog < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_PROG_LOAD: {os.strerror(err)}: "
                               f"{self._log.value.decode(errors='replace')[-500:]}")
        self.prog_fd = prog
        with open(f"{tracing}/events/{tracepoint}/id") as f:
            tp_id = int(f.read())
        pattr = ctypes.create_string_buffer(struct.pack(
            "<IIQQ", PERF_TYPE_TRACEPOINT, 128, tp_id, 1).ljust(128, b"\0"))
        self.fd = _check(_libc.syscall(SYS_PERF_EVENT_OPEN, pattr, -1, 0, -1,
                                       PERF_FLAG_FD_CLOEXEC), "perf_event_open")
        _check(_libc.ioctl(self.fd, PERF_EVENT_IOC_SET_BPF, prog), "PERF_EVENT_IOC_SET_BPF")
        _check(_libc.ioctl(self.fd, PERF_EVENT_IOC_ENABLE, 0), "PERF_EVENT_IOC_ENABLE")

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.prog_fd)

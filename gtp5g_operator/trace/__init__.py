"""Trace sources: where the task IDs come from.

`source` (the shared component: open, retry, rest, counters), `text_reader`
(trace_pipe text: `framing` + `textscan`), `raw_reader` (the binary per-CPU
ring buffer: `ringbuf`), `tracefs` (locating and inspecting tracefs files).
"""

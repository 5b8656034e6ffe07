"""Trace sources: where the task IDs come from.

`feed` (the loop's trace component: chooses the reader, falls back to text),
`source` (the shared component: open, retry, rest, counters), `text_reader`
(trace_pipe text: `framing` + `textscan`), `raw_reader` (the binary per-CPU
ring buffer: `ringbuf`, with `lost` counting what the kernel dropped),
`tracefs` (locating and inspecting tracefs files, per-CPU stats).
"""

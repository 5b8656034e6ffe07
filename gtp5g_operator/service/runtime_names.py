"""The names of the files the daemon publishes, and the heartbeat's layout.

Shared by the daemon (runtime_files.py) and the endpoint process
(endpoint_server.py), which must import as little as possible: this module
imports only `struct`.
"""

from __future__ import annotations

import struct

STATE_FILE = "state.json"
METRICS_FILE = "metrics.prom"
HEALTH_FILE = "health.json"
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT = struct.Struct("<dd")  # turned_at, next_turn_by (CLOCK_MONOTONIC seconds)


def decode_heartbeat(data: bytes | None) -> tuple[float, float] | None:
    """(turned_at, next_turn_by) from the heartbeat file's bytes; None for none."""
    if data is None or len(data) != HEARTBEAT.size:
        return None
    return HEARTBEAT.unpack(data)

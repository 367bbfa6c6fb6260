"""Ports for test servers.

A port from ``bind(("", 0))`` comes from the kernel's ephemeral range, the same range
every outgoing connection (the test's HTTP client, psycopg, pika, a webhook) takes its
local port from. Between the test picking such a port and the server binding it, one
of those connections can take it, and the server exits with "port ... is already in
use" (it happened in CI). So test ports are drawn at random from below the ephemeral
range, where the kernel never hands out a local port by itself.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_DEFAULT_EPHEMERAL_LOW = 32768
_LOWEST = 10000
# Ports this process has handed out: a test that asks for two ports before binding
# either must not get the same one twice (nothing listens on it yet, so the bind
# check alone would pass it again).
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("", port))
        return True
    except OSError:
        return False


def free_port(count: int = 1) -> int:
    """The first of ``count`` consecutive ports nothing is bound to (``count=2`` also
    keeps the default probe port, app port + 1, free)."""
    high = max(_ephemeral_low(), _LOWEST + 1000) - count
    for _ in range(500):
        port = random.randrange(_LOWEST, high)
        ports = range(port, port + count)
        if _handed_out.isdisjoint(ports) and all(_bindable(each) for each in ports):
            _handed_out.update(ports)
            return port
    raise RuntimeError(f"no {count} free consecutive ports found below {high}")

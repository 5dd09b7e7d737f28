"""Free TCP ports for stacks that run beside the developer's own (tests, chaos drills)."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

# The local stack's default ports: a second stack never takes one of a developer's.
DEV_PORTS = {5433, 5434, 5435, 5436, 5437, 6380, 8000, 8001, 8002, 8003}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(count: int) -> list[int]:
    """``count`` consecutive free ports, away from the dev defaults and below the ephemeral
    range: there, any outgoing connection may take a port between our check and the server's
    bind, and a client connecting to a stopped member's port can connect to itself."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())  # noqa: S311 - not a secret
    top = max(_ephemeral_low(), 25000)
    for _ in range(500):
        base = rng.randrange(20000, top - count)
        block = list(range(base, base + count))
        if not DEV_PORTS.intersection(block) and all(_port_free(p) for p in block):
            return block
    raise RuntimeError("no free port block found")

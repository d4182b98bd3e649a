"""Free loopback ports (bind port 0, read the port, close)."""

from __future__ import annotations

import socket

MAX_PORTS_PER_CALL = 256


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago (all held open until chosen)."""
    if not 0 < n <= MAX_PORTS_PER_CALL:
        raise ValueError(f"n must be in 1..{MAX_PORTS_PER_CALL}")
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports

"""Run an N-member geokv cluster in one process, each member with its gRPC server.

Used by the e2e fixtures until (or besides) the multi-process LocalCluster:
    python tests/e2e/inproc_cluster_main.py N BASE_DIR
prints one JSON line {"endpoints": [...], "metrics": [...], "ids": [...]} once a leader
is agreed, then serves until SIGTERM/SIGINT or until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from geokv.api.http import serve_http
from geokv.api.server import serve_grpc
from geokv.testing.inproc import InProcCluster
from geokv.testing.ports import free_ports


async def main(n: int, base_dir: str) -> None:
    cluster = InProcCluster(n, base_dir)
    metrics_ports = free_ports(n)
    for cfg, port in zip(cluster.configs, metrics_ports):
        cfg.listen_metrics_urls = [f"http://127.0.0.1:{port}"]
    servers, https = [], []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:  # a parent that dies closes our stdin: stop then too
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
    except (PermissionError, OSError, ValueError):
        pass  # stdin is not pollable (a file, /dev/null): rely on signals
    try:
        await cluster.start()
        for m, cfg in zip(cluster.members, cluster.configs):
            servers.append(await serve_grpc(m, cfg))
            https.append(await serve_http(m, cfg))
        await cluster.wait_leader()
        print(json.dumps({
            "endpoints": [c.listen_client_urls[0].removeprefix("http://") for c in cluster.configs],
            "metrics": [c.listen_metrics_urls[0] for c in cluster.configs],
            "ids": [m.id for m in cluster.members],
        }), flush=True)
        await stop.wait()
    finally:
        for s in servers:
            await s.stop(None)
        for h in https:
            await h.close()
        await cluster.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))

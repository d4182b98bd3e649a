"""The /health and /metrics HTTP server over real in-process members."""

from __future__ import annotations

import asyncio
import json

from geokv.api.http import HTTPServer
from geokv.testing.inproc import InProcCluster
from geokv.testing.ports import free_ports


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_health_metrics_and_bad_requests(tmp_path):
    async def main():
        async with InProcCluster(1, str(tmp_path)) as c:
            m = await c.wait_leader()
            srv = HTTPServer(m)
            (port,) = await srv.start([f"http://127.0.0.1:{free_ports(1)[0]}"])
            try:
                code, body = await request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (code, json.loads(body)) == (200, {"health": "true"})
                code, body = await request(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                assert code == 200 and b"geokv_watch_watchers" in body
                assert (await request(port, b"POST /health HTTP/1.1\r\n\r\n"))[0] == 405
                assert (await request(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
                assert (await request(port, b"garbage\r\n\r\n"))[0] == 400
                code, body = await request(port, b"GET /health?x=1 HTTP/1.1\r\n\r\n")  # still served after all that
                assert code == 200
            finally:
                await srv.close()

    asyncio.run(main())


def test_health_is_503_with_a_reason_without_a_leader(tmp_path):
    async def main():
        c = InProcCluster(3, str(tmp_path))
        m = await c.start_member(0)  # alone: it can never win an election
        srv = HTTPServer(m)
        try:
            (port,) = await srv.start([f"http://127.0.0.1:{free_ports(1)[0]}"])
            code, body = await request(port, b"GET /health HTTP/1.1\r\n\r\n")
            doc = json.loads(body)
            assert code == 503 and doc["health"] == "false" and doc["reason"]
        finally:
            await srv.close()
            await c.stop()

    asyncio.run(main())

"""Native edge request-stream cost: process CPU per request message on a client-streaming
call, in-process (no sockets: HTTP/2 bytes fed straight into one H2Connection, responses
written to a sink), so the edge's own Python work is what is measured.

Rows:
  servicer only (reference)   the same messages deserialized and summed without any edge
  stream, N B messages        one Sum call (stream-unary, reads every message), messages
                              of N bytes, 16 DATA frames per read, the loop run between
                              reads so the handler drains its queue
  unary Echo, 64 B            one call per request (HEADERS + DATA), for scale

``--src DIR`` imports geokv from another checkout's ``src`` (e.g. an older commit
extracted with ``git archive``), to compare two versions in one run:

    python bench/edge_flow.py [--messages 40000] [--reps 5] [--src /tmp/old/src]

Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PER_READ = 16
SIZES = (64, 4096)


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


class Sink:
    def write(self, b: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=40000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--src", default=os.path.join(HERE, "..", "src"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.src))

    import grpc

    from geokv.edge import EdgeServer
    from geokv.edge import frames as f
    from geokv.edge import hpack
    from geokv.edge.connection import H2Connection

    assert os.path.abspath(sys.modules["geokv.edge"].__file__).startswith(os.path.abspath(args.src))
    n = args.messages

    class Svc:
        def __init__(self) -> None:
            self.total = 0

        async def Sum(self, it, context) -> bytes:
            total = 0
            async for req in it:
                total += len(req)
            self.total = total
            return str(total).encode()

        async def Echo(self, req: bytes, context) -> bytes:
            return req

    def ident(b: bytes) -> bytes:
        return b

    def headers(path: bytes) -> bytes:
        hs = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"x"),
              (b"content-type", b"application/grpc"), (b"te", b"trailers")]
        return b"".join(hpack.encode_literal(k, v) for k, v in hs)

    def msg(size: int) -> bytes:
        return struct.pack(">BI", 0, size) + b"s" * size

    async def stream_us(size: int) -> float:
        svc = Svc()
        server = EdgeServer(max_receive_message_bytes=8 << 20)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("b.B", {
            "Sum": grpc.stream_unary_rpc_method_handler(svc.Sum, ident, ident)}),))
        conn = H2Connection(server)
        conn.connection_made(Sink())  # type: ignore[arg-type]
        conn.data_received(f.PREFACE + f.settings_frame({}))
        conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, headers(b"/b.B/Sum")))
        await asyncio.sleep(0)
        frame = f.frame(f.DATA, 0, 1, msg(size))
        chunk = frame * PER_READ
        wu = f.window_update_frame(0, len(chunk))  # keep our (ignored) send side honest
        t0 = time.process_time()
        for _ in range(n // PER_READ):
            conn.data_received(chunk + wu)
            await asyncio.sleep(0)
        conn.data_received(f.frame(f.DATA, f.END_STREAM, 1, b""))
        await asyncio.sleep(0)
        t = time.process_time() - t0
        assert svc.total == (n // PER_READ) * PER_READ * size, (svc.total, conn.streams)
        return t / n * 1e6

    async def unary_us() -> float:
        svc = Svc()
        server = EdgeServer()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("b.B", {
            "Echo": grpc.unary_unary_rpc_method_handler(svc.Echo, ident, ident)}),))
        conn = H2Connection(server)
        conn.connection_made(Sink())  # type: ignore[arg-type]
        conn.data_received(f.PREFACE + f.settings_frame({}))
        hb = headers(b"/b.B/Echo")
        body = msg(64)
        sid = 1
        reads = []
        for _ in range(n // PER_READ):
            parts = []
            for _ in range(PER_READ):
                parts += [f.frame(f.HEADERS, f.END_HEADERS, sid, hb), f.frame(f.DATA, f.END_STREAM, sid, body)]
                sid += 2
            reads.append(b"".join(parts))
        t0 = time.process_time()
        for r in reads:
            conn.data_received(r + f.window_update_frame(0, 1 << 20))
        return (time.process_time() - t0) / n * 1e6

    def bare_us(size: int) -> float:
        payload = b"s" * size
        t0 = time.process_time()
        total = 0
        for _ in range(n):
            total += len(ident(bytes(payload)))
        return (time.process_time() - t0) / n * 1e6

    rows: dict[str, list[float]] = {"servicer only (reference)": []}
    for size in SIZES:
        rows[f"stream, {size} B messages"] = []
    rows["unary Echo, 64 B"] = []
    for _ in range(args.reps):
        rows["servicer only (reference)"].append(bare_us(64))
        for size in SIZES:
            rows[f"stream, {size} B messages"].append(asyncio.run(stream_us(size)))
        rows["unary Echo, 64 B"].append(asyncio.run(unary_us()))
    best = {k: min(v) for k, v in rows.items()}
    print(f"load average {loadavg()} (2 cores, shared); src {os.path.abspath(args.src)}; "
          f"{n} messages, {PER_READ} per read, best of {args.reps}")
    print(f"{'path':<32}{'CPU us/message':>16}")
    for k, v in best.items():
        print(f"{k:<32}{v:>16.2f}")
    print("RESULT " + json.dumps({"bench": "edge_flow", "src": os.path.abspath(args.src), "load": loadavg(),
                                  "cpu_us_per_message": {k: round(v, 3) for k, v in best.items()}}))


if __name__ == "__main__":
    main()

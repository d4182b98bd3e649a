from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from geokv.geo.wan import (
    DelayLine,
    DelayLineFull,
    RttError,
    UnknownRegion,
    WanEmulator,
    WanProxy,
    build_rtt_table,
    default_rtt_table,
    delay_for_peer_urls,
    emulator_from_flags,
    parse_duration_ms,
    parse_route,
    parse_rtt_overrides,
)


# --- table and parsing ---------------------------------------------------------------------
def test_issue_rtts_are_in_the_default_table():
    t = default_rtt_table()
    assert t.rtt_ms("us-east", "eu-west") == 75.0
    assert t.rtt_ms("ap-south", "us-east") == 190.0
    assert t.rtt_ms("eu-west", "ap-south") == 120.0
    assert t.rtt_ms("eu-west", "eu-west") == 0.0
    regions = {"us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast", "sa-east"}
    assert set(t.regions) == regions
    for a in regions:
        for b in regions:
            assert t.rtt_ms(a, b) == t.rtt_ms(b, a) >= 0


@pytest.mark.parametrize("text, ms", [("120ms", 120.0), ("0.12s", 120.0), ("120", 120.0), ("1.5 ms", 1.5), ("500us", 0.5)])
def test_parse_duration(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


def test_parse_overrides():
    got = parse_rtt_overrides("eu-west:ap-south=130ms, us-east:mars=2s")
    assert got == {("eu-west", "ap-south"): 130.0, ("us-east", "mars"): 2000.0}
    t = build_rtt_table("eu-west:ap-south=130ms,us-east:mars=2s")
    assert t.rtt_ms("ap-south", "eu-west") == 130.0
    assert t.rtt_ms("mars", "us-east") == 2000.0


def test_parse_overrides_from_file(tmp_path):
    f = tmp_path / "rtt.txt"
    f.write_text("# measured\neu-west:ap-south=121ms\nus-east:eu-west=74 # comment\n")
    assert parse_rtt_overrides(f"@{f}") == {("eu-west", "ap-south"): 121.0, ("us-east", "eu-west"): 74.0}
    assert parse_rtt_overrides(str(f)) == parse_rtt_overrides(f"@{f}")


@pytest.mark.parametrize(
    "bad", ["eu-west=120ms", "eu-west:ap-south", "eu-west:ap-south=fast", "EU:ap=1ms", "a:b:c=1ms", "a:b=99999s", "@/nonexistent/file"]
)
def test_bad_overrides_give_clear_errors(bad):
    with pytest.raises(RttError) as e:
        parse_rtt_overrides(bad)
    assert str(e.value)


def test_unknown_region_message_names_it():
    with pytest.raises(UnknownRegion, match="moon"):
        default_rtt_table().rtt_ms("moon", "us-east")
    with pytest.raises(UnknownRegion, match="moon"):
        WanEmulator(default_rtt_table(), "moon")


def test_emulator_delays():
    em = WanEmulator(default_rtt_table(), "us-east")
    assert em.one_way_delay_s("eu-west") == pytest.approx(0.0375)
    assert em.one_way_delay_s("us-east") == 0.0
    jit = WanEmulator(default_rtt_table(), "us-east", jitter_ms=10, seed=7)
    ds = [jit.one_way_delay_s("ap-south") for _ in range(200)]
    assert min(ds) >= 0.095 and max(ds) <= 0.105 and len(set(ds)) > 100
    lossy = WanEmulator(default_rtt_table(), "us-east", loss=0.5, seed=1)
    ds = [lossy.one_way_delay_s("eu-west") for _ in range(200)]
    assert {round(d, 4) for d in ds} == {0.0375, 0.2375}   # penalty = max(200 ms RTO, RTT)


def test_emulator_from_flags():
    assert emulator_from_flags("us-east", "off", None) is None
    em = emulator_from_flags("us-east", "on", "us-east:eu-west=10ms")
    assert em is not None and em.one_way_delay_s("eu-west") == pytest.approx(0.005)
    em = emulator_from_flags("us-east", "jitter=4ms,loss=0.01", None)
    assert em is not None and (em.jitter_ms, em.loss) == (4.0, 0.01)
    for bad in ("maybe", "loss=2", "jitter=fast", "on,colour=blue"):
        with pytest.raises(RttError):
            emulator_from_flags("us-east", bad, None)


def test_parse_route():
    assert parse_route("127.0.0.1:9000=127.0.0.1:2380@37.5ms") == (("127.0.0.1", 9000), ("127.0.0.1", 2380), 0.0375)
    with pytest.raises(RttError):
        parse_route("9000=2380")


# --- delay line ---------------------------------------------------------------------------------
def test_delay_line_preserves_order_and_delays():
    async def run():
        loop = asyncio.get_running_loop()
        got: list[tuple[int, float]] = []
        line = DelayLine(lambda item: got.append((item, loop.time())))
        t0 = loop.time()
        # Decreasing delays: a naive timer per item would reverse them.
        for i, d in enumerate([0.06, 0.04, 0.02, 0.0, 0.05]):
            line.put_nowait(i, d)
        await line.drain()
        await line.aclose()
        assert [i for i, _ in got] == [0, 1, 2, 3, 4]
        times = [t for _, t in got]
        assert times == sorted(times)
        assert times[0] - t0 >= 0.06 - 0.002

    asyncio.run(run())


def test_delay_line_bound_and_async_deliver():
    async def run():
        got: list[int] = []

        async def deliver(item):
            await asyncio.sleep(0)
            got.append(item)

        line = DelayLine(deliver, max_items=3)
        for i in range(3):
            line.put_nowait(i, 0.01)
        with pytest.raises(DelayLineFull):
            line.put_nowait(99, 0.0)
        await line.put(3, 0.0)      # waits for room, then keeps order
        await line.drain()
        await line.aclose()
        assert got == [0, 1, 2, 3]

    asyncio.run(run())


# --- proxy -------------------------------------------------------------------------------
async def _echo_server():
    async def handle(r, w):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_proxy_forwards_in_order_with_delay_both_ways():
    async def run():
        server = await _echo_server()
        port = server.sockets[0].getsockname()[1]
        async with WanProxy(("127.0.0.1", 0), ("127.0.0.1", port), 0.03) as proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            w.write(b"ping")
            await w.drain()
            assert await r.readexactly(4) == b"ping"
            rtt = loop.time() - t0
            assert rtt >= 0.06 - 0.003     # one delay each way
            payload = os.urandom(1 << 20)
            w.write(payload)
            await w.drain()
            assert await r.readexactly(len(payload)) == payload
            w.write_eof()
            assert await r.read() == b""   # half-close crosses the proxy after the data
            w.close()
            assert proxy.stats.connections_total == 1
        server.close()
        await server.wait_closed()

    asyncio.run(run())


def test_proxy_delay_by_etcd_peer_header():
    table = default_rtt_table()
    fn = delay_for_peer_urls({"http://127.0.0.1:1111": "ap-south"}, table, "us-east")
    req = b"GET /raft/stream/message/1 HTTP/1.1\r\nHost: x\r\nX-Peerurls: http://127.0.0.1:1111\r\n\r\n"
    assert fn(req) == pytest.approx(0.095)
    assert fn(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n") == 0.0

    async def run():
        server = await _echo_server()
        port = server.sockets[0].getsockname()[1]
        async with WanProxy(("127.0.0.1", 0), ("127.0.0.1", port), fn) as proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            w.write(req)
            assert await r.readexactly(len(req)) == req
            assert loop.time() - t0 >= 0.19 - 0.003
            w.close()
            assert proxy.stats.delays_s == {0.095: 1}
        server.close()
        await server.wait_closed()

    asyncio.run(run())


def test_proxy_target_down_closes_client():
    async def run():
        # A port with nothing listening: bind, read the port, close.
        s = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead = s.sockets[0].getsockname()[1]
        s.close()
        await s.wait_closed()
        async with WanProxy(("127.0.0.1", 0), ("127.0.0.1", dead), 0.0) as proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()

    asyncio.run(run())


def test_proxy_process_cli():
    """The stand-alone proxy process starts, forwards, and stops on SIGTERM."""
    async def run():
        server = await _echo_server()
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geokv.geo.wan", "proxy", "--route", f"127.0.0.1:0=127.0.0.1:{port}@5ms",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line.startswith("READY ")
            pport = int(line.split()[1].rsplit(":", 1)[1])
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            w.write(b"hello")
            assert await r.readexactly(5) == b"hello"
            w.close()
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        server.close()
        await server.wait_closed()

    asyncio.run(run())


def test_proxy_cli_bad_route_is_a_clear_error():
    p = subprocess.run([sys.executable, "-m", "geokv.geo.wan", "proxy", "--route", "nonsense"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2
    assert "invalid route" in p.stderr and "Traceback" not in p.stderr

"""The client subcommands of ``geokv`` (put, get, del, watch, txn, lease, lock, elect,
member, endpoint, compaction, snapshot, move-leader), on the AsyncClient."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

from geokv.cli import output as out
from geokv.cli.txnparse import parse_txn
from geokv.client import AsyncClient, GetResult, PutResult, DeleteResult, TxnResult
from geokv.client.types import Status
from geokv.errors import GeoKVError

#: The largest value ``put`` reads from stdin (etcd rejects requests over 1.5 MiB anyway).
STDIN_VALUE_BYTES_MAX = 64 * 1024 * 1024
#: How long ``lock`` and ``elect`` wait to acquire (Ctrl-C gives up sooner).
ACQUIRE_WAIT_S_MAX = 24 * 3600.0
#: Shortest period of ``lease keep-alive`` renewals.
KEEPALIVE_PERIOD_S_MIN = 0.5
#: Most probes per endpoint of ``endpoint rtt``.
RTT_PROBES_MAX = 1000
_SORT_TARGETS = {"CREATE": "create", "KEY": "key", "MODIFY": "mod", "VALUE": "value", "VERSION": "version"}


def _client(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(args.endpoints, timeout_s=args.timeout, region=args.region, read_mode=args.read_mode,
                       max_staleness_ms=args.max_staleness_ms, emulate_wan=args.emulate_wan)


async def run(args: argparse.Namespace) -> int:
    handler = globals().get("cmd_" + args.command.replace("-", "_"))
    if handler is None:  # pragma: no cover - the parser only admits known commands
        raise ValueError(f"unknown command {args.command}")
    async with _client(args) as client:
        return int(await handler(client, args) or 0)


def _emit(args: argparse.Namespace, result: Any) -> None:
    if args.write_out == "json":
        out.print_json(out.result_json(result))
        return
    if args.write_out == "table":
        _print_table(result)
        return
    _print_simple(result, args)


def _print_simple(r: Any, args: argparse.Namespace | None = None) -> None:
    w = sys.stdout.write
    if isinstance(r, GetResult):
        value_only = args is not None and getattr(args, "print_value_only", False)
        keys_only = args is not None and getattr(args, "keys_only", False)
        if args is not None and getattr(args, "count_only", False):
            w(f"{r.count}\n")
        for kv in r.kvs:
            if not value_only:
                w(out.text(kv.key) + "\n")
            if not keys_only:
                w(out.text(kv.value) + "\n")
    elif isinstance(r, PutResult):
        w("OK\n")
        if r.prev_kv is not None:
            w(out.text(r.prev_kv.key) + "\n" + out.text(r.prev_kv.value) + "\n")
    elif isinstance(r, DeleteResult):
        w(f"{r.deleted}\n")
        for kv in r.prev_kvs:
            w(out.text(kv.key) + "\n" + out.text(kv.value) + "\n")
    elif isinstance(r, TxnResult):
        w("SUCCESS\n" if r.succeeded else "FAILURE\n")
        for sub in r.responses:
            w("\n")
            _print_simple(sub)
    sys.stdout.flush()


def _print_table(r: Any) -> None:
    if isinstance(r, GetResult):
        rows = [[out.text(kv.key), out.text(kv.value), kv.create_revision, kv.mod_revision, kv.version,
                 f"{kv.lease:x}" if kv.lease else "-"] for kv in r.kvs]
        print(out.table(["KEY", "VALUE", "CREATE REV", "MOD REV", "VERSION", "LEASE"], rows))
    elif isinstance(r, (PutResult, DeleteResult, TxnResult)):
        extra = {PutResult: [], DeleteResult: [("DELETED", getattr(r, "deleted", 0))],
                 TxnResult: [("SUCCEEDED", str(getattr(r, "succeeded", False)).lower())]}[type(r)]
        heads = ["REVISION", "RAFT TERM", "MEMBER"] + [h for h, _ in extra]
        print(out.table(heads, [[r.header.revision, r.header.raft_term, f"{r.header.member_id:x}"]
                                + [v for _, v in extra]]))
    else:  # pragma: no cover
        print(r)


# ---- KV -------------------------------------------------------------------------------------------
async def cmd_put(c: AsyncClient, args: argparse.Namespace) -> int:
    value = args.value
    if value is None and args.ignore_value:
        value = b""  # the key keeps its value; only the lease changes
    if value is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise ValueError("put needs a value (as an argument or on stdin)")
        value = sys.stdin.buffer.read(STDIN_VALUE_BYTES_MAX + 1)
        if len(value) > STDIN_VALUE_BYTES_MAX:
            raise ValueError(f"value on stdin is larger than {STDIN_VALUE_BYTES_MAX} bytes")
    r = await c.put(args.key, value, lease=args.lease, prev_kv=args.prev_kv, ignore_value=args.ignore_value,
                    ignore_lease=args.ignore_lease)
    _emit(args, r)
    return 0


async def cmd_get(c: AsyncClient, args: argparse.Namespace) -> int:
    order = (args.order or ("ASCEND" if args.sort_by != "KEY" else "NONE")).lower()
    mode = "serializable" if args.consistency == "s" else ("linearizable" if args.consistency == "l" else None)
    r = await c.get(args.key, range_end=args.range_end, prefix=args.prefix, from_key=args.from_key,
                    limit=args.limit, revision=args.rev, sort_order=order, sort_target=_SORT_TARGETS[args.sort_by],
                    keys_only=args.keys_only, count_only=args.count_only, read_mode=mode)
    _emit(args, r)
    return 0


async def cmd_del(c: AsyncClient, args: argparse.Namespace) -> int:
    r = await c.delete(args.key, range_end=args.range_end, prefix=args.prefix, from_key=args.from_key,
                       prev_kv=args.prev_kv)
    _emit(args, r)
    return 0


async def cmd_watch(c: AsyncClient, args: argparse.Namespace) -> int:
    w = c.watch(args.key, range_end=args.range_end, prefix=args.prefix, start_revision=args.rev,
                prev_kv=args.prev_kv, no_put=args.no_put, no_delete=args.no_delete)
    seen = 0
    async with w:
        async for ev in w:
            if args.write_out == "json":
                out.print_json(out.result_json(ev))
            else:
                lines = [ev.type, out.text(ev.kv.key), out.text(ev.kv.value)]
                if ev.prev_kv is not None:
                    lines[1:1] = []
                    lines += [out.text(ev.prev_kv.key), out.text(ev.prev_kv.value)]
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            seen += 1
            if args.max_events and seen >= args.max_events:
                break
    return 0


async def cmd_txn(c: AsyncClient, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if sys.stdin is not None else ""
    compares, success, failure = parse_txn(text)
    r = await c.txn().if_(*compares).then(*success).else_(*failure).commit()
    _emit(args, r)
    return 0


async def cmd_compaction(c: AsyncClient, args: argparse.Namespace) -> int:
    h = await c.compact(args.revision, physical=args.physical)
    if args.write_out == "json":
        out.print_json({"header": out.header_json(h), "compacted_revision": args.revision})
    else:
        print(f"compacted revision {args.revision}")
    return 0


# ---- leases ----------------------------------------------------------------------------------------
async def cmd_lease(c: AsyncClient, args: argparse.Namespace) -> int:
    sub = args.lease_cmd
    js = args.write_out == "json"
    if sub == "grant":
        g = await c.lease_grant(args.ttl)
        out.print_json({"header": out.header_json(g.header), "ID": g.id, "TTL": g.ttl}) if js else \
            print(f"lease {g.id:x} granted with TTL({g.ttl}s)")
    elif sub == "revoke":
        h = await c.lease_revoke(args.id)
        out.print_json({"header": out.header_json(h)}) if js else print(f"lease {args.id:x} revoked")
    elif sub == "timetolive":
        t = await c.lease_time_to_live(args.id, keys=args.keys)
        if js:
            out.print_json({"header": out.header_json(t.header), "ID": t.id, "TTL": t.ttl, "grantedTTL": t.granted_ttl,
                            "keys": [out.b64(k) for k in t.keys]})
        elif t.ttl == -1:
            print(f"lease {args.id:x} already expired")
        else:
            line = f"lease {t.id:x} granted with TTL({t.granted_ttl}s), remaining({t.ttl}s)"
            if args.keys:
                line += ", attached keys([" + " ".join(out.text(k) for k in t.keys) + "])"
            print(line)
    elif sub == "list":
        ids = await c.leases()
        if js:
            out.print_json({"leases": [{"ID": i} for i in ids]})
        else:
            print(f"found {len(ids)} leases")
            for i in ids:
                print(f"{i:x}")
    elif sub == "keep-alive":
        while True:
            ttl = await c.lease_keep_alive_once(args.id)
            out.print_json({"ID": args.id, "TTL": ttl}) if js else print(f"lease {args.id:x} keepalived with TTL({ttl})",
                                                                          flush=True)
            if args.once:
                break
            await asyncio.sleep(max(ttl / 3, KEEPALIVE_PERIOD_S_MIN))
    else:
        raise ValueError("usage: geokv lease grant|revoke|timetolive|list|keep-alive")
    return 0


# ---- lock and election --------------------------------------------------------------------------------
async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def cmd_lock(c: AsyncClient, args: argparse.Namespace) -> int:
    async with c.locked(args.name, ttl_s=args.ttl, timeout_s=ACQUIRE_WAIT_S_MAX) as key:
        print(out.text(key), flush=True)
        if args.cmd:
            proc = await asyncio.create_subprocess_exec(*args.cmd)
            return await proc.wait()
        await _wait_for_stop_signal()
    return 0


async def cmd_elect(c: AsyncClient, args: argparse.Namespace) -> int:
    if args.listen or args.proposal is None:
        async for kv in c.observe(args.name):
            print(out.text(kv.key) + "\n" + out.text(kv.value), flush=True)
        return 0
    grant = await c.lease_grant(args.ttl)
    async with c.keep_alive(grant.id):
        leader = await c.campaign(args.name, args.proposal, lease=grant.id, timeout_s=ACQUIRE_WAIT_S_MAX)
        print(out.text(leader.key) + "\n" + args.proposal, flush=True)
        try:
            await _wait_for_stop_signal()
        finally:
            await c.resign(leader)
    await c.lease_revoke(grant.id)
    return 0


# ---- cluster -------------------------------------------------------------------------------------------
async def cmd_member(c: AsyncClient, args: argparse.Namespace) -> int:
    sub = args.member_cmd
    js = args.write_out == "json"
    if sub == "list":
        members = await c.member_list()
        if js:
            out.print_json({"members": [out.member_json(m) for m in members]})
        elif args.write_out == "table":
            print(out.table(out.MEMBER_HEADERS, out.member_rows(members)))
        else:
            for row in out.member_rows(members):
                print(", ".join(str(x) for x in row))
        return 0
    if sub == "add":
        urls = [u.strip() for u in args.peer_urls.split(",") if u.strip()]
        member, members = await c.member_add(urls, is_learner=args.learner, region=args.member_region, zone=args.zone)
        if js:
            out.print_json({"member": out.member_json(member), "members": [out.member_json(m) for m in members]})
        else:
            # What the new member needs to join, as etcdctl prints it.
            initial = ",".join(f"{args.name if m.id == member.id else m.name}={u}"
                               for m in members for u in m.peer_urls if m.name or m.id == member.id)
            print(f"Member {member.id:x} added to cluster\n")
            print(f'ETCD_NAME="{args.name}"')
            print(f'ETCD_INITIAL_CLUSTER="{initial}"')
            print(f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{",".join(member.peer_urls)}"')
            print('ETCD_INITIAL_CLUSTER_STATE="existing"')
        return 0
    if sub == "remove":
        members = await c.member_remove(args.id)
        out.print_json({"members": [out.member_json(m) for m in members]}) if js else \
            print(f"Member {args.id:x} removed from cluster")
        return 0
    if sub == "promote":
        members = await c.member_promote(args.id)
        out.print_json({"members": [out.member_json(m) for m in members]}) if js else \
            print(f"Member {args.id:x} promoted in cluster")
        return 0
    raise ValueError("usage: geokv member list|add|remove|promote")


async def cmd_endpoint(c: AsyncClient, args: argparse.Namespace) -> int:
    sub = args.endpoint_cmd
    if getattr(args, "cluster", False):
        urls = [u for m in await c.member_list() for u in m.client_urls[:1]]
        if not urls:
            raise ValueError("member list returned no client URLs")
        await c.close()
        c = AsyncClient(urls, timeout_s=args.timeout, region=args.region, read_mode=args.read_mode,
                        max_staleness_ms=args.max_staleness_ms, emulate_wan=args.emulate_wan)
        try:
            return await _endpoint(c, args, sub)
        finally:
            await c.close()
    return await _endpoint(c, args, sub)


async def _endpoint(c: AsyncClient, args: argparse.Namespace, sub: str) -> int:
    if sub == "status":
        results = await c.statuses()
        ok = [s for s in results if isinstance(s, Status)]
        failed = [(ep, e) for ep, e in zip(c.endpoints, results) if not isinstance(e, Status)]
        if args.write_out == "json":
            out.print_json([out.result_json(s) for s in ok])
        elif args.write_out == "table":
            print(out.table(out.STATUS_HEADERS, out.status_rows(ok)))
        else:
            for row in out.status_rows(ok):
                print(", ".join(str(x) for x in row))
        for ep, e in failed:
            print(f"Error: {ep}: {e}", file=sys.stderr)
        return 1 if failed else 0
    if sub == "health":
        rows = []
        unhealthy = 0
        for ep in c.endpoints:
            t0 = time.perf_counter()
            try:
                one = AsyncClient([ep], timeout_s=c.timeout_s)
                try:
                    await one.get("health")
                finally:
                    await one.close()
                took_ms = (time.perf_counter() - t0) * 1000
                rows.append((ep, True, f"{took_ms:.1f}ms", ""))
            except GeoKVError as e:
                unhealthy += 1
                rows.append((ep, False, f"{(time.perf_counter() - t0) * 1000:.1f}ms", str(e)))
        if args.write_out == "json":
            out.print_json([{"endpoint": ep, "health": h, "took": took, "error": err} for ep, h, took, err in rows])
        elif args.write_out == "table":
            print(out.table(["ENDPOINT", "HEALTH", "TOOK", "ERROR"], [[ep, str(h).lower(), t, e] for ep, h, t, e in rows]))
        else:
            for ep, h, took, err in rows:
                if h:
                    print(f"{ep} is healthy: successfully committed proposal: took = {took}")
                else:
                    print(f"{ep} is unhealthy: failed to commit proposal: {err}", file=sys.stderr)
        return 1 if unhealthy else 0
    if sub == "rtt":
        count = max(1, min(args.count, RTT_PROBES_MAX))
        rows = []
        for ep in c.endpoints:
            samples: list[float] = []
            region = "-"
            try:
                for _ in range(count):
                    t0 = time.perf_counter()
                    st = await c.status(ep)
                    samples.append((time.perf_counter() - t0) * 1000)
                    region = st.region or "-"
            except GeoKVError as e:
                rows.append([ep, region, "-", "-", "-", str(e)])
                continue
            samples.sort()
            rows.append([ep, region, f"{samples[0]:.2f}", f"{samples[len(samples) // 2]:.2f}",
                         f"{samples[-1]:.2f}", ""])
        if args.write_out == "json":
            out.print_json([dict(zip(["endpoint", "region", "min_ms", "p50_ms", "max_ms", "error"], r)) for r in rows])
        else:
            print(out.table(["ENDPOINT", "REGION", "MIN MS", "P50 MS", "MAX MS", "ERROR"], rows))
        return 1 if any(r[-1] for r in rows) else 0
    raise ValueError("usage: geokv endpoint status|health|rtt")


async def cmd_snapshot(c: AsyncClient, args: argparse.Namespace) -> int:
    if args.snapshot_cmd != "save":
        raise ValueError("usage: geokv snapshot save FILE")
    size = await c.snapshot_save(args.path)
    if args.write_out == "json":
        out.print_json({"path": args.path, "bytes": size})
    else:
        print(f"Snapshot saved at {args.path} ({size} bytes)")
    return 0


async def cmd_alarm(c: AsyncClient, args: argparse.Namespace) -> int:
    if args.alarm_cmd == "list":
        alarms = await c.alarms()
    elif args.alarm_cmd == "disarm":
        alarms = await c.alarm_disarm()
    else:
        raise ValueError("usage: geokv alarm list|disarm")
    if args.write_out == "json":
        out.print_json([{"memberID": m, "alarm": a} for m, a in alarms])
    else:
        for m, a in alarms:
            print(f"memberID:{m} alarm:{a} ")  # etcdctl's form
    return 0


async def cmd_defrag(c: AsyncClient, args: argparse.Namespace) -> int:
    endpoints = list(c.endpoints)
    if args.cluster:
        endpoints = [u for m in await c.member_list() for u in m.client_urls[:1]]
        if not endpoints:
            raise ValueError("member list returned no client URLs")
    failed = 0
    for ep in endpoints:  # one at a time, as etcdctl does: a member is busy while it defragments
        try:
            await c.defragment(ep)
            print(f"Finished defragmenting etcd member[{ep}]")
        except GeoKVError as e:
            failed += 1
            print(f"Failed to defragment etcd member[{ep}] ({e})", file=sys.stderr)
    return 1 if failed else 0


async def cmd_move_leader(c: AsyncClient, args: argparse.Namespace) -> int:
    before = await c.status()
    await c.move_leader(args.target)
    print(f"Leadership transferred from {before.leader:x} to {args.target:x}")
    return 0

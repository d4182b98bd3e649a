"""Printing results as ``simple`` (etcdctl-like lines), ``json`` or ``table``.

JSON follows etcdctl's ``-w json`` shapes: keys and values are base64, revisions and ids
are numbers, every answer carries its ``header``.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any, Iterable, Sequence, TextIO

from geokv.client.types import (
    DeleteResult,
    Event,
    GetResult,
    Header,
    KeyValue,
    Member,
    PutResult,
    Status,
    TxnResult,
)

FORMATS = ("simple", "json", "table")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def header_json(h: Header) -> dict[str, int]:
    return {"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision, "raft_term": h.raft_term}


def kv_json(kv: KeyValue) -> dict[str, Any]:
    return {"key": b64(kv.key), "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
            "version": kv.version, "value": b64(kv.value), "lease": kv.lease}


def member_json(m: Member) -> dict[str, Any]:
    return {"ID": m.id, "name": m.name, "peerURLs": m.peer_urls, "clientURLs": m.client_urls,
            "isLearner": m.is_learner, "region": m.region, "zone": m.zone}


def result_json(r: Any) -> dict[str, Any]:
    if isinstance(r, GetResult):
        return {"header": header_json(r.header), "kvs": [kv_json(kv) for kv in r.kvs], "more": r.more,
                "count": r.count}
    if isinstance(r, PutResult):
        out: dict[str, Any] = {"header": header_json(r.header)}
        if r.prev_kv is not None:
            out["prev_kv"] = kv_json(r.prev_kv)
        return out
    if isinstance(r, DeleteResult):
        return {"header": header_json(r.header), "deleted": r.deleted, "prev_kvs": [kv_json(k) for k in r.prev_kvs]}
    if isinstance(r, TxnResult):
        kinds = {GetResult: "response_range", PutResult: "response_put", DeleteResult: "response_delete_range",
                 TxnResult: "response_txn"}
        return {"header": header_json(r.header), "succeeded": r.succeeded,
                "responses": [{kinds[type(x)]: result_json(x)} for x in r.responses]}
    if isinstance(r, Event):
        out = {"type": r.type, "kv": kv_json(r.kv)}
        if r.prev_kv is not None:
            out["prev_kv"] = kv_json(r.prev_kv)
        return out
    if isinstance(r, Status):
        return {"Endpoint": r.endpoint, "Status": {
            "header": header_json(r.header), "version": r.version, "dbSize": r.db_size, "leader": r.leader,
            "raftIndex": r.raft_index, "raftTerm": r.raft_term, "raftAppliedIndex": r.raft_applied_index,
            "dbSizeInUse": r.db_size_in_use, "isLearner": r.is_learner, "errors": r.errors, "region": r.region,
            "zone": r.zone, "leader_region": r.leader_region}}
    raise TypeError(f"no JSON form for {type(r).__name__}")


def print_json(obj: Any, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(obj, sort_keys=False) + "\n")
    out.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An ASCII table with etcdctl's look (+---+ borders)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda r: "|" + "|".join(f" {c:^{w}} " for c, w in zip(r, widths)) + "|"  # noqa: E731
    out = [line, fmt(cells[0]), line]
    out += [fmt(r) for r in cells[1:]]
    out.append(line)
    return "\n".join(out)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def status_rows(statuses: Sequence[Status]) -> list[list[Any]]:
    return [[s.endpoint, f"{s.header.member_id:x}", s.region or "-", str(s.is_leader).lower(),
             str(s.is_learner).lower(), s.raft_term, s.raft_index, s.raft_applied_index, human_bytes(s.db_size),
             s.version, ", ".join(s.errors)] for s in statuses]


STATUS_HEADERS = ["ENDPOINT", "ID", "REGION", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX",
                  "RAFT APPLIED INDEX", "DB SIZE", "VERSION", "ERRORS"]
MEMBER_HEADERS = ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER", "REGION"]


def member_rows(members: Sequence[Member]) -> list[list[Any]]:
    return [[f"{m.id:x}", "started" if m.name else "unstarted", m.name, ",".join(m.peer_urls),
             ",".join(m.client_urls), str(m.is_learner).lower(), m.region or "-"] for m in members]

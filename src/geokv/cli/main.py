"""The ``geokv`` command: a server launcher, an etcdctl-like client and cluster tooling.

Every user mistake (bad endpoint, no leader, key too large, unknown lease, bad flag) is
one line on stderr starting with ``Error:`` and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Sequence

from geokv.errors import GeoKVError

DEFAULT_ENDPOINTS = "127.0.0.1:2379"


class UserError(Exception):
    """A mistake in the command line; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 1, as every other user mistake
        raise UserError(f"{message} (see '{self.prog} --help')")


def _timeout(text: str) -> float:
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            v = float(t[:-2]) / 1000
        elif t.endswith("s"):
            v = float(t[:-1])
        else:
            v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad timeout {text!r}: expected seconds, e.g. 5 or 5s or 500ms") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("timeout must be > 0")
    return v


def _hex_id(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad id {text!r}: expected a hexadecimal id, e.g. 694d7c2a1f0e5b3c") from None


def _add_global_flags(p: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    d = (lambda v: v) if with_defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--endpoints", default=d(os.environ.get("GEOKV_ENDPOINTS", DEFAULT_ENDPOINTS)),
                   help="comma-separated host:port list (env GEOKV_ENDPOINTS; default %s)" % DEFAULT_ENDPOINTS)
    p.add_argument("-w", "--write-out", choices=("simple", "json", "table"), default=d("simple"))
    p.add_argument("--read-mode", choices=("linearizable", "lease", "serializable", "bounded"),
                   default=d("linearizable"), help="default consistency of reads")
    p.add_argument("--max-staleness-ms", type=int, default=d(None), help="bound for --read-mode bounded")
    p.add_argument("--timeout", type=_timeout, default=d(5.0), help="per-request timeout (default 5s)")
    p.add_argument("--region", default=d(None), help="the client's own region (routing, WAN emulation)")
    p.add_argument("--emulate-wan", action="store_true", default=d(False),
                   help="delay requests by the RTT to the server's region")


class _Subs:
    """add_subparsers() whose parsers all accept the global flags."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("add_help", True):
            kwargs.setdefault("parents", [self._common])
        return self._action.add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="geokv", description="geokv: a geo-distributed, strongly consistent key-value store "
                                            "(etcd v3 API).")
    _add_global_flags(p, with_defaults=True)
    # The same flags are accepted after the subcommand too (as etcdctl does); there they
    # have no defaults, so an absent flag keeps the value parsed before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_flags(common, with_defaults=False)
    sub = _Subs(p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser), common)

    s = sub.add_parser("serve", help="run a geokv server (flags as etcd's)", add_help=False)
    s.add_argument("args", nargs=argparse.REMAINDER)

    s = sub.add_parser("put", help="put a key (value from stdin if omitted)")
    s.add_argument("key")
    s.add_argument("value", nargs="?")
    s.add_argument("--lease", type=_hex_id, default=0, help="attach to a lease (hex id)")
    s.add_argument("--prev-kv", action="store_true")
    s.add_argument("--ignore-value", action="store_true")
    s.add_argument("--ignore-lease", action="store_true")

    s = sub.add_parser("get", help="get a key or a range")
    s.add_argument("key")
    s.add_argument("range_end", nargs="?")
    s.add_argument("--prefix", action="store_true")
    s.add_argument("--from-key", action="store_true")
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--rev", type=int, default=0)
    s.add_argument("--order", choices=("ASCEND", "DESCEND"), default=None)
    s.add_argument("--sort-by", choices=("CREATE", "KEY", "MODIFY", "VALUE", "VERSION"), default="KEY")
    s.add_argument("--keys-only", action="store_true")
    s.add_argument("--count-only", action="store_true")
    s.add_argument("--print-value-only", action="store_true")
    s.add_argument("--consistency", choices=("l", "s"), default=None, help="l: linearizable, s: serializable")

    s = sub.add_parser("del", help="delete a key or a range")
    s.add_argument("key")
    s.add_argument("range_end", nargs="?")
    s.add_argument("--prefix", action="store_true")
    s.add_argument("--from-key", action="store_true")
    s.add_argument("--prev-kv", action="store_true")

    s = sub.add_parser("watch", help="print events on a key or range until Ctrl-C")
    s.add_argument("key")
    s.add_argument("range_end", nargs="?")
    s.add_argument("--prefix", action="store_true")
    s.add_argument("--rev", type=int, default=0)
    s.add_argument("--prev-kv", action="store_true")
    s.add_argument("--no-put", action="store_true")
    s.add_argument("--no-delete", action="store_true")
    s.add_argument("--max-events", type=int, default=0, help="exit after this many events (0: never)")

    sub.add_parser("txn", help="run a txn read from stdin (compares, blank line, success ops, blank line, failure ops)")

    s = sub.add_parser("lease", help="lease grant|revoke|timetolive|list|keep-alive")
    ls = _Subs(s.add_subparsers(dest="lease_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    x = ls.add_parser("grant")
    x.add_argument("ttl", type=int)
    x = ls.add_parser("revoke")
    x.add_argument("id", type=_hex_id)
    x = ls.add_parser("timetolive")
    x.add_argument("id", type=_hex_id)
    x.add_argument("--keys", action="store_true")
    ls.add_parser("list")
    x = ls.add_parser("keep-alive")
    x.add_argument("id", type=_hex_id)
    x.add_argument("--once", action="store_true")

    s = sub.add_parser("lock", help="hold a lock until Ctrl-C, or while running a command")
    s.add_argument("name")
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s.add_argument("--ttl", type=int, default=10)

    s = sub.add_parser("elect", help="campaign with a proposal (held until Ctrl-C), or observe the leader (-l)")
    s.add_argument("name")
    s.add_argument("proposal", nargs="?")
    s.add_argument("-l", "--listen", action="store_true")
    s.add_argument("--ttl", type=int, default=10)

    s = sub.add_parser("member", help="member list|add|remove|promote")
    ms = _Subs(s.add_subparsers(dest="member_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    ms.add_parser("list")
    x = ms.add_parser("add")
    x.add_argument("name")
    x.add_argument("--peer-urls", required=True)
    x.add_argument("--learner", action="store_true")
    x.add_argument("--member-region", default="")
    x.add_argument("--zone", default="")
    x = ms.add_parser("remove")
    x.add_argument("id", type=_hex_id)
    x = ms.add_parser("promote")
    x.add_argument("id", type=_hex_id)

    s = sub.add_parser("endpoint", help="endpoint status|health|rtt")
    es = _Subs(s.add_subparsers(dest="endpoint_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    for name in ("status", "health", "rtt"):
        x = es.add_parser(name)
        x.add_argument("--cluster", action="store_true", help="every member's client URL, from member list")
        if name == "rtt":
            x.add_argument("--count", type=int, default=10)

    s = sub.add_parser("compaction", help="compact the history up to a revision")
    s.add_argument("revision", type=int)
    s.add_argument("--physical", action="store_true")

    s = sub.add_parser("snapshot", help="snapshot save FILE")
    ss = _Subs(s.add_subparsers(dest="snapshot_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    x = ss.add_parser("save")
    x.add_argument("path")

    s = sub.add_parser("alarm", help="alarm list|disarm")
    als = _Subs(s.add_subparsers(dest="alarm_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    als.add_parser("list")
    als.add_parser("disarm")

    s = sub.add_parser("defrag", help="defragment the members' backends (shrink the files)")
    s.add_argument("--cluster", action="store_true", help="every member's client URL, from member list")

    s = sub.add_parser("move-leader", help="transfer leadership to a member (hex id)")
    s.add_argument("target", type=_hex_id)

    s = sub.add_parser("cluster", help="cluster up|down: a local cluster of real processes")
    cs = _Subs(s.add_subparsers(dest="cluster_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    x = cs.add_parser("up")
    x.add_argument("-n", type=int, default=3, help="number of members")
    x.add_argument("--regions", default="", help="comma-separated regions, one per member (cycled)")
    x.add_argument("--base-dir", default=os.environ.get("GEOKV_CLUSTER_DIR", "geokv-cluster"))
    x.add_argument("--wan", action="store_true", help="emulate the WAN between the members' regions")
    x.add_argument("--leader-preference", default="", help="region(s) where the leader should live")
    x = cs.add_parser("down")
    x.add_argument("--base-dir", default=os.environ.get("GEOKV_CLUSTER_DIR", "geokv-cluster"))

    s = sub.add_parser("demo", help="run the multi-region demo", add_help=False)
    s.add_argument("args", nargs=argparse.REMAINDER)

    s = sub.add_parser("wal", help="wal repair: truncate a torn WAL tail")
    ws = _Subs(s.add_subparsers(dest="wal_cmd", metavar="SUBCOMMAND", parser_class=_Parser), common)
    x = ws.add_parser("repair", add_help=False)
    x.add_argument("args", nargs=argparse.REMAINDER)
    return p


#: Global flags that take a value (so the command word can be found before parsing).
_VALUE_FLAGS = frozenset({"--endpoints", "-w", "--write-out", "--read-mode", "--max-staleness-ms", "--timeout",
                          "--region"})
#: Commands whose remaining arguments belong to another program's parser.
_DELEGATED = {
    ("serve",): ("geokv.runtime.serve", "the geokv server (geokv.runtime.serve)"),
    ("demo",): ("geokv.geo.demo", "the demo (geokv.geo.demo)"),
    ("wal", "repair"): ("geokv.storage.repair", "WAL repair (geokv.storage.repair)"),
}


def _split_delegated(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """(command words, rest) if argv names a delegated command, else None."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_FLAGS:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        for words in _DELEGATED:
            if tuple(argv[i:i + len(words)]) == words:
                return words, argv[i + len(words):]
        return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        delegated = _split_delegated(argv)
        if delegated is not None:
            words, rest = delegated
            module, what = _DELEGATED[words]
            return _delegate(module, "main", rest, what)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 1
        return _dispatch(args, argv)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except GeoKVError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command in ("serve", "demo", "wal"):  # serve/demo/wal repair are split off before parsing
        raise UserError("usage: geokv wal repair [--truncate-at-corruption] DATA_DIR")
    if args.command == "cluster":
        from geokv.cli import cluster

        if args.cluster_cmd == "up":
            return cluster.up(args)
        if args.cluster_cmd == "down":
            return cluster.down(args)
        raise UserError("usage: geokv cluster up|down")
    from geokv.cli import commands

    return asyncio.run(commands.run(args))


def _delegate(module: str, func: str, argv: list[str], what: str) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.startswith(e.name):
            raise UserError(f"{what} is not available in this build yet") from None
        raise
    entry = getattr(mod, func, None)
    if entry is None:
        raise UserError(f"{what} has no entry point {func}()")
    rc = entry(list(argv))
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Parse etcdctl's txn text: compares, a blank line, success ops, a blank line, failure ops.

    mod("key1") > "0"
    value("key2") = "x"

    put key1 "new value"
    get key2

    del key1

Compare targets: value, version, create, mod, lease; operators: = != > <.
Ops: ``put KEY VALUE [--lease=ID]``, ``get KEY [END] [--prefix]``, ``del KEY [END] [--prefix]``.
"""

from __future__ import annotations

import re
import shlex

from geokv.client.ops import Compare, Op
from geokv.etcdpb import rpc_pb2

#: The most lines a txn text may have (etcd's default --max-txn-ops is 128 per branch).
MAX_TXN_LINES = 3 * 128 + 2

_COMPARE_RE = re.compile(r'^\s*(value|version|create|mod|lease)\(\s*"((?:[^"\\]|\\.)*)"\s*\)\s*(=|==|!=|>|<)\s*(.+?)\s*$')


_UNESCAPE_RE = re.compile(r"\\(.)")


class TxnSyntaxError(ValueError):
    pass


def parse_compare(line: str) -> rpc_pb2.Compare:
    m = _COMPARE_RE.match(line)
    if not m:
        raise TxnSyntaxError(f'bad compare {line.strip()!r}: expected e.g. value("key") = "v" or mod("key") > "3"')
    target, key, op, raw = m.groups()
    key = _UNESCAPE_RE.sub(r"\1", key)  # \" and \\ inside the quoted key
    try:
        operand_words = shlex.split(raw)
    except ValueError as e:
        raise TxnSyntaxError(f"bad compare {line.strip()!r}: {e}") from None
    if len(operand_words) != 1:
        raise TxnSyntaxError(f"bad compare {line.strip()!r}: expected one operand")
    operand: str | int = operand_words[0]
    if target != "value":
        try:
            operand = int(operand_words[0], 0) if target == "lease" else int(operand_words[0])
        except ValueError:
            raise TxnSyntaxError(f"bad compare {line.strip()!r}: {target} needs an integer") from None
    return Compare.parse(target, key, "==" if op == "=" else op, operand)


def parse_op(line: str) -> rpc_pb2.RequestOp:
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise TxnSyntaxError(f"bad operation {line.strip()!r}: {e}") from None
    # As etcdctl's flag parser: a bare "--" ends the flags; every word after it is an
    # argument, even one that starts with "--".
    end = words.index("--") if "--" in words else len(words)
    head, tail = words[:end], words[end + 1:]
    flags = {w.split("=", 1)[0]: (w.split("=", 1)[1] if "=" in w else "") for w in head if w.startswith("--")}
    args = [w for w in head if not w.startswith("--")] + tail
    unknown = set(flags) - {"--lease", "--prefix", "--prev-kv"}
    if unknown:
        raise TxnSyntaxError(f"bad operation {line.strip()!r}: unknown flag {sorted(unknown)[0]}")
    if not args:
        raise TxnSyntaxError("empty operation")
    verb, rest = args[0], args[1:]
    prefix = "--prefix" in flags
    if verb == "put":
        if len(rest) != 2:
            raise TxnSyntaxError(f"bad operation {line.strip()!r}: put needs KEY VALUE")
        lease = int(flags["--lease"], 16) if flags.get("--lease") else 0
        return Op.put(rest[0], rest[1], lease=lease, prev_kv="--prev-kv" in flags)
    if verb in ("get", "del", "delete"):
        if len(rest) not in (1, 2) or (prefix and len(rest) == 2):
            raise TxnSyntaxError(f"bad operation {line.strip()!r}: {verb} needs KEY [RANGE_END] (or KEY --prefix)")
        end = rest[1] if len(rest) == 2 else None
        if verb == "get":
            return Op.get(rest[0], prefix=prefix, range_end=end)
        return Op.delete(rest[0], prefix=prefix, range_end=end, prev_kv="--prev-kv" in flags)
    raise TxnSyntaxError(f"bad operation {line.strip()!r}: expected put, get or del")


def parse_txn(text: str) -> tuple[list[rpc_pb2.Compare], list[rpc_pb2.RequestOp], list[rpc_pb2.RequestOp]]:
    lines = text.splitlines()
    if len(lines) > MAX_TXN_LINES:
        raise TxnSyntaxError(f"txn text has {len(lines)} lines, more than {MAX_TXN_LINES}")
    sections: list[list[str]] = [[]]
    for line in lines:
        if not line.strip():
            if len(sections) < 3:
                sections.append([])
            continue
        if line.lstrip().startswith("#"):
            continue
        sections[-1].append(line)
    while len(sections) < 3:
        sections.append([])
    compares = [parse_compare(line) for line in sections[0]]
    success = [parse_op(line) for line in sections[1]]
    failure = [parse_op(line) for line in sections[2]]
    return compares, success, failure

"""Data-driven interaction tests: each testdata/*.txt script drives a Network and
states the expected outcome beside the commands.

Commands (one per line, '#' starts a comment):
  cluster IDS... [key=value ...]   new network (Config options; voters=1,2 learners=3)
  campaign ID | tick N [IDS...] | stabilize | isolate ID | cut A B | heal
  propose ID DATA | transfer FROM TO | read ID CTX | compact ID | restart ID
  conf ID add|remove|learner NODE [NODE...]   (several = joint, auto leave)
  leave ID                                    (leave a joint config explicitly)
  add-node ID
Expectations:
  expect leader ID | expect role ID ROLE | expect term ID N | expect commit ID N
  expect applied ID D1,D2,... | expect voters ID A,B | expect read ID CTX@INDEX
  expect dropped ID DATA "reason words"       (propose refused with that reason)
  expect lease ID yes|no
"""

from __future__ import annotations

import pathlib
import shlex

import pytest

from geokv.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ProposalDropped,
    ReadOnlyOption,
    StateRole,
)

from .harness import Network

DATA = pathlib.Path(__file__).parent / "testdata"
SCRIPTS = sorted(DATA.glob("*.txt"))

_CC = {"add": ConfChangeType.ADD_NODE, "remove": ConfChangeType.REMOVE_NODE,
       "learner": ConfChangeType.ADD_LEARNER}


def _value(v: str):
    if v in ("true", "false"):
        return v == "true"
    if v == "lease":
        return ReadOnlyOption.LEASE_BASED
    if "," in v or v.endswith(","):
        return tuple(int(x) for x in v.split(",") if x)
    return int(v)


def run_script(path: pathlib.Path) -> None:
    net: Network | None = None
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path.name}:{lineno}: {line}"
        cmd, *args = shlex.split(line)
        if cmd == "cluster":
            ids = [int(a) for a in args if "=" not in a]
            kw = {k: _value(v) for k, v in (a.split("=", 1) for a in args if "=" in a)}
            if "voters" in kw and isinstance(kw["voters"], int):
                kw["voters"] = (kw["voters"],)
            if "learners" in kw and isinstance(kw["learners"], int):
                kw["learners"] = (kw["learners"],)
            net = Network(ids, bootstrap_log=True, **kw)
            net.stabilize()
            continue
        assert net is not None, f"{where}: no cluster yet"
        n = lambda i: net[int(i)]  # noqa: E731
        if cmd == "campaign":
            net.campaign(int(args[0]))
        elif cmd == "tick":
            net.tick(int(args[0]), ids=[int(a) for a in args[1:]] or None)
        elif cmd == "stabilize":
            net.stabilize()
        elif cmd == "isolate":
            net.isolate(int(args[0]))
        elif cmd == "cut":
            net.cut(int(args[0]), int(args[1]))
        elif cmd == "heal":
            net.heal()
        elif cmd == "propose":
            net.propose(int(args[0]), args[1].encode())
        elif cmd == "transfer":
            n(args[0]).rn.transfer_leader(int(args[1]))
            net.stabilize()
        elif cmd == "read":
            n(args[0]).rn.read_index(args[1].encode())
            net.stabilize()
        elif cmd == "compact":
            node = n(args[0])
            st = node.rn.status()
            node.storage.create_snapshot(st.applied, st.config, b"snap")
            node.storage.compact(st.applied)
        elif cmd == "restart":
            net.restart(int(args[0]))
        elif cmd == "add-node":
            net.add_node(int(args[0]))
        elif cmd == "conf":
            changes = tuple(ConfChangeSingle(_CC[args[1]], int(x)) for x in args[2:])
            n(args[0]).rn.propose_conf_change(ConfChange(changes))
            net.stabilize()
        elif cmd == "leave":
            n(args[0]).rn.propose_conf_change(ConfChange((), ConfChangeTransition.EXPLICIT))
            net.stabilize()
        elif cmd == "expect":
            _expect(net, args, where)
        else:
            raise AssertionError(f"{where}: unknown command {cmd!r}")


def _expect(net: Network, args: list[str], where: str) -> None:
    what, i, *rest = args
    node = net[int(i)] if what != "leader" else None
    if what == "leader":
        assert net.leader() == int(i), f"{where}: leaders are {net.leaders()}"
    elif what == "role":
        assert node.rn.role == StateRole[rest[0].upper()], f"{where}: got {node.rn.role.name}"
    elif what == "term":
        assert node.rn.term == int(rest[0]), f"{where}: got {node.rn.term}"
    elif what == "commit":
        got = node.rn.status().commit
        assert got == int(rest[0]), f"{where}: got {got}"
    elif what == "applied":
        want = [d.encode() for d in rest[0].split(",")] if rest else []
        assert node.applied == want, f"{where}: got {node.applied}"
    elif what == "voters":
        got = node.rn.status().config.voters
        assert got == tuple(int(x) for x in rest[0].split(",")), f"{where}: got {got}"
    elif what == "read":
        ctx, idx = rest[0].split("@")
        got = [(rs.request_ctx, rs.index) for rs in node.read_states]
        assert (ctx.encode(), int(idx)) in got, f"{where}: got {got}"
    elif what == "dropped":
        with pytest.raises(ProposalDropped) as ei:
            node.rn.propose(rest[0].encode())
        assert rest[1] in ei.value.reason, f"{where}: reason was {ei.value.reason!r}"
    elif what == "lease":
        got = node.rn.status().lease_valid
        assert got == (rest[0] == "yes"), f"{where}: lease_valid is {got}"
    else:
        raise AssertionError(f"{where}: unknown expectation {what!r}")


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path):
    run_script(path)


def test_scripts_exist():
    assert len(SCRIPTS) >= 4

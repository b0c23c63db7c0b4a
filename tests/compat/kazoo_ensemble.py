#!/usr/bin/python3
"""Ensemble suite: kazoo (Debian python3-kazoo) against a three-member ensemble, through a leader
failover and a host-list change.

usage: /usr/bin/python3 tests/compat/kazoo_ensemble.py HOST:PORT,HOST:PORT,HOST:PORT

Run by crates/corral/tests/compat_ensemble.rs, which owns the ensemble: the suite steers it by
printing `@@ <command>` lines and reading one answer line from stdin each (`kill-leader`,
`kill HOST:PORT`, `restart HOST:PORT`, `wait-stable`; see `run_steering_suite` in
crates/corral/tests/ensemble_support/mod.rs). Prints "PASS name" / "FAIL name: detail" per
check and ends with "N passed, N failed".
"""

import logging
import sys
import threading
import traceback

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from checks import check, finish

WAIT_S = 20.0  # upper bound for anything awaited; never a sleep
SESSION_TIMEOUT_S = 15.0  # outlasts an election plus a reconnect on a busy machine
IN_FAILOVER_OPS = 5


def steer(command):
    """Asks the test harness to act on the ensemble; returns its answer line."""
    print(f"@@ {command}", flush=True)
    answer = sys.stdin.readline().strip()
    if not answer:
        raise RuntimeError(f"no answer from the harness to {command!r}")
    return answer


def check_eq(name, actual, expected):
    check(name, actual == expected, f"expected {expected!r}, got {actual!r}")


class StateLog:
    """Records kazoo's connection states and lets the suite wait for the next one of a kind."""

    def __init__(self, client):
        self.cond = threading.Condition()
        self.states = []
        client.add_listener(self.on_state)

    def on_state(self, state):
        with self.cond:
            self.states.append(state)
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.states)

    def wait_for(self, state, since):
        """Waits until `state` was reported after position `since`; returns whether it was."""
        with self.cond:
            return self.cond.wait_for(lambda: state in self.states[since:], timeout=WAIT_S)


class DataLog:
    """The values a kazoo DataWatch reports, in order."""

    def __init__(self, client, path):
        self.cond = threading.Condition()
        self.values = []
        client.DataWatch(path, self.on_data)

    def on_data(self, data, _stat):
        with self.cond:
            self.values.append(data)
            self.cond.notify_all()

    def wait_for(self, value):
        with self.cond:
            return self.cond.wait_for(lambda: value in self.values, timeout=WAIT_S)


def peer(client):
    """host:port of the member the client's connection goes to (kazoo keeps it private)."""
    host, port = client._connection._socket.getpeername()[:2]
    return f"{host}:{port}"


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    all_hosts = sys.argv[1]
    members = all_hosts.split(",")

    client = KazooClient(hosts=all_hosts, timeout=SESSION_TIMEOUT_S)
    client.start(timeout=WAIT_S)
    other = KazooClient(hosts=all_hosts, timeout=SESSION_TIMEOUT_S)
    other.start(timeout=WAIT_S)
    states = StateLog(client)
    session_id = client.client_id[0]

    # Basics through whichever member kazoo picked.
    client.ensure_path("/kz")
    client.create("/kz/data", b"v0")
    client.create("/kz/eph", b"mine", ephemeral=True)
    other.sync("/kz")
    check_eq("create seen by a second client", other.get("/kz/data")[0], b"v0")
    eph_stat = other.exists("/kz/eph")
    check("ephemeral seen by a second client",
          eph_stat is not None and eph_stat.ephemeralOwner == session_id, f"{eph_stat}")
    data = DataLog(client, "/kz/data")
    check("DataWatch reports the initial value", data.wait_for(b"v0"), f"{data.values}")
    child_events = []
    child_fired = threading.Event()

    def on_children(event):
        child_events.append(event)
        child_fired.set()

    client.get_children("/kz", watch=on_children)
    other.create("/kz/child", b"")
    check("child watch fires for another client's create", child_fired.wait(WAIT_S),
          f"{child_events}")
    other.set("/kz/data", b"v1")
    check("DataWatch sees another client's set", data.wait_for(b"v1"), f"{data.values}")

    # Leader failover. Every leader change closes client connections, so kazoo suspends; the
    # requests issued while it is suspended are queued and sent after it reconnects.
    mark = states.mark()
    killed = steer("kill-leader")
    check("harness killed the leader", killed.startswith("killed "), killed)
    killed = killed.removeprefix("killed ")
    suspended = states.wait_for(KazooState.SUSPENDED, mark)
    check("client suspends when the leader dies", suspended, f"{states.states}")
    queued = [client.create_async(f"/kz/during-{i}", b"") for i in range(IN_FAILOVER_OPS)]
    check("client reconnects", states.wait_for(KazooState.CONNECTED, mark), f"{states.states}")
    check("no session loss", KazooState.LOST not in states.states[mark:], f"{states.states}")
    results = []
    for i, op in enumerate(queued):
        try:
            results.append(op.get(timeout=WAIT_S))
        except Exception as e:  # reported below
            results.append(f"error {type(e).__name__}: {e}")
    check_eq("operations issued during the failover complete", results,
             [f"/kz/during-{i}" for i in range(IN_FAILOVER_OPS)])
    check_eq("same session after the failover", client.client_id[0], session_id)
    eph_stat = client.exists("/kz/eph")
    check("ephemeral kept across the failover",
          eph_stat is not None and eph_stat.ephemeralOwner == session_id, f"{eph_stat}")
    other.retry(other.set, "/kz/data", b"v2")
    check("DataWatch keeps working after the failover", data.wait_for(b"v2"), f"{data.values}")

    # Bring the killed member back so a quorum survives losing one more.
    steer(f"restart {killed}")
    steer("wait-stable")

    # set_hosts. kazoo reads a new host list only when it starts its next pass over the hosts
    # (it finishes the pass in progress first), so the client that moves starts with a
    # one-member list: when that member dies the pass is over and the next one uses the list
    # set_hosts gave it, which names a different member.
    current = peer(client)
    target = next(m for m in members if m != current)
    mover = KazooClient(hosts=current, timeout=SESSION_TIMEOUT_S)
    mover.start(timeout=WAIT_S)
    mover_states = StateLog(mover)
    mover_session = mover.client_id[0]
    mover.create("/kz/mover-eph", b"", ephemeral=True)
    mover_data = DataLog(mover, "/kz/data")
    check("DataWatch of the moving client starts", mover_data.wait_for(b"v2"),
          f"{mover_data.values}")
    mover.set_hosts(target)
    mark = mover_states.mark()
    check_eq("harness killed the current member", steer(f"kill {current}"), "ok")
    check("client reconnects after set_hosts",
          mover_states.wait_for(KazooState.SUSPENDED, mark)
          and mover_states.wait_for(KazooState.CONNECTED, mark), f"{mover_states.states}")
    mover.retry(mover.sync, "/kz")
    check_eq("connected to the member set_hosts named", peer(mover), target)
    check_eq("same session after set_hosts", mover.client_id[0], mover_session)
    eph_stat = mover.retry(mover.exists, "/kz/mover-eph")
    check("ephemeral kept after set_hosts",
          eph_stat is not None and eph_stat.ephemeralOwner == mover_session, f"{eph_stat}")
    other.retry(other.set, "/kz/data", b"v3")
    check("DataWatch works after set_hosts", mover_data.wait_for(b"v3"), f"{mover_data.values}")
    # The first client was on the killed member too; it moves on within its own list.
    client.retry(client.sync, "/kz")
    check_eq("first client keeps its session", client.client_id[0], session_id)
    check("first client's DataWatch still works", data.wait_for(b"v3"), f"{data.values}")

    for c in (client, other, mover):
        c.stop()
        c.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a crash is a failed check, with its traceback
        check("suite ran to completion", False, traceback.format_exc())
    sys.exit(finish())

#!/usr/bin/python3
"""Compatibility suite: drives a ZooKeeper-protocol server with the kazoo client (Debian python3-kazoo).

usage: /usr/bin/python3 tests/compat/kazoo_suite.py HOST:PORT

Prints one line per check ("PASS name" / "FAIL name: detail") and finishes with
"N passed, N failed"; the exit code is non-zero when any check failed.

kazoo 2.8 has no API for containers, TTL nodes, persistent watches, getEphemerals,
getAllChildrenNumber, whoAmI, checkWatches/removeWatches or SetWatches, so those requests are
encoded here (jute wire format) and sent through kazoo's own connection with `raw_call`. Every
notification the server sends is also recorded raw (see `EventTap`) so persistent watches and
"fires exactly once" can be checked without kazoo's one-shot bookkeeping in the way.
"""

import logging
import os
import queue
import socket
import struct
import sys
import threading
import time
import traceback

from kazoo.client import KazooClient
from kazoo.exceptions import (
    _zookeeper_exception,
    ZookeeperError,
    BadArgumentsError,
    BadVersionError,
    InvalidACLError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.serialization import int_struct, read_string, stat_struct, write_buffer, write_string
from kazoo.protocol.states import EventType, ZnodeStat
from kazoo.security import ACL, Id, make_digest_acl, make_digest_acl_credential, OPEN_ACL_UNSAFE

WAIT_S = 10.0  # upper bound for anything awaited; never a sleep
# Establishing a session is a readiness wait, not a check: a loaded machine (or a JVM server
# still warming up) may take much longer than any single event should. Kazoo retries inside.
CONNECT_WAIT_S = 120.0
EVENT_NAMES = {1: "NodeCreated", 2: "NodeDeleted", 3: "NodeDataChanged", 4: "NodeChildrenChanged"}

from checks import check, finish  # noqa: E402  (shared by every suite)


def check_eq(name, actual, expected):
    check(name, actual == expected, f"expected {expected!r}, got {actual!r}")


def check_raises(name, exc_type, fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except exc_type:
        check(name, True)
        return
    except Exception as e:  # a different error is a failure too
        check(name, False, f"expected {exc_type.__name__}, got {type(e).__name__}: {e}")
        return
    check(name, False, f"expected {exc_type.__name__}, call returned {result!r}")


# ---------------------------------------------------------------------------------------------
# Raw requests through kazoo's connection


class RawRequest:
    """A request kazoo can queue: it only needs `type`, `serialize` and `deserialize`."""

    def __init__(self, op, payload, decode=None):
        self.type = op
        self.payload = bytes(payload)
        self.decode = decode

    def serialize(self):
        return self.payload

    def deserialize(self, buf, offset):
        return self.decode(buf, offset) if self.decode else None

    def __repr__(self):
        return f"RawRequest(op={self.type})"


def raw_call(client, op, payload, decode=None):
    result = client.handler.async_result()
    client._call(RawRequest(op, payload, decode), result)
    return result.get(timeout=WAIT_S)


def enc_acl(acls):
    out = int_struct.pack(len(acls))
    for a in acls:
        out += int_struct.pack(a.perms) + write_string(a.id.scheme) + write_string(a.id.id)
    return out


def enc_strings(items):
    out = int_struct.pack(len(items))
    for s in items:
        out += write_string(s)
    return out


def dec_path_stat(buf, off):
    path, off = read_string(buf, off)
    return path, ZnodeStat._make(stat_struct.unpack_from(buf, off))


def dec_strings(buf, off):
    (n,) = int_struct.unpack_from(buf, off)
    off += 4
    out = []
    for _ in range(max(n, 0)):
        s, off = read_string(buf, off)
        out.append(s)
    return out


def dec_int(buf, off):
    return int_struct.unpack_from(buf, off)[0]


def dec_whoami(buf, off):
    (n,) = int_struct.unpack_from(buf, off)
    off += 4
    out = []
    for _ in range(n):
        scheme, off = read_string(buf, off)
        user, off = read_string(buf, off)
        out.append((scheme, user))
    return out


OP_CHECK_WATCHES = 17
OP_REMOVE_WATCHES = 18
OP_CREATE_CONTAINER = 19
OP_CREATE_TTL = 21
OP_SET_WATCHES = 101
OP_GET_EPHEMERALS = 103
OP_GET_ALL_CHILDREN_NUMBER = 104
OP_ADD_WATCH = 106
OP_WHO_AM_I = 107

# ZooKeeper stores containers/TTL nodes with a marker ephemeralOwner internally but reports 0.
REPORTED_OWNER_OF_CONTAINER_AND_TTL = 0


@_zookeeper_exception(-121)
class NoWatcherError(ZookeeperError):
    """kazoo 2.8 does not know error -121; without this its connection loop dies on it."""


def create_container(client, path, data=b""):
    payload = write_string(path) + write_buffer(data) + enc_acl(OPEN_ACL_UNSAFE) + int_struct.pack(4)
    return raw_call(client, OP_CREATE_CONTAINER, payload, dec_path_stat)


def create_ttl(client, path, ttl_ms, sequential=False, data=b""):
    flags = 6 if sequential else 5
    payload = (
        write_string(path) + write_buffer(data) + enc_acl(OPEN_ACL_UNSAFE) + int_struct.pack(flags)
        + struct.pack("!q", ttl_ms)
    )
    return raw_call(client, OP_CREATE_TTL, payload, dec_path_stat)


def add_watch(client, path, recursive):
    return raw_call(client, OP_ADD_WATCH, write_string(path) + int_struct.pack(1 if recursive else 0))


def watches_request(client, op, path, watcher_type):
    return raw_call(client, op, write_string(path) + int_struct.pack(watcher_type))


def set_watches(client, rel_zxid, data=(), exist=(), child=()):
    payload = struct.pack("!q", rel_zxid) + enc_strings(data) + enc_strings(exist) + enc_strings(child)
    return raw_call(client, OP_SET_WATCHES, payload)


class EventTap:
    """Records every notification the server sends on one kazoo connection, in arrival order."""

    def __init__(self, client):
        self.events = queue.Queue()
        conn = client._connection
        original = conn._read_watch_event

        def tapped(buf, offset):
            type_, state = struct.unpack_from("!ii", buf, offset)
            path, _ = read_string(buf, offset + 8)
            self.events.put((EVENT_NAMES.get(type_, str(type_)), path))
            return original(buf, offset)

        conn._read_watch_event = tapped

    def next(self):
        try:
            return self.events.get(timeout=WAIT_S)
        except queue.Empty:
            return None

    def drain_after(self, client, marker_path):
        """Returns all events already delivered, using a round trip as the fence."""
        client.sync(marker_path)
        client.exists(marker_path)
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out


# ---------------------------------------------------------------------------------------------
# A TCP proxy whose connections the test can cut without the client saying goodbye


class CuttableProxy:
    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.blocked = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.sockets = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked.is_set():
                conn.close()  # refuse service while "partitioned"
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=WAIT_S)
            except OSError:
                conn.close()
                continue
            with self.lock:
                self.sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, block=True):
        if block:
            self.blocked.set()
        with self.lock:
            socks, self.sockets = self.sockets, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def unblock(self):
        self.blocked.clear()

    def close(self):
        self.stopped.set()
        self.cut()
        self.listener.close()


# ---------------------------------------------------------------------------------------------


def four_letter(host, port, cmd):
    with socket.create_connection((host, port), timeout=WAIT_S) as s:
        s.sendall(cmd.encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def new_client(hosts, **kwargs):
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault(
        "connection_retry", dict(max_tries=-1, delay=0.05, backoff=1, max_delay=0.2)
    )
    c = KazooClient(hosts=hosts, **kwargs)
    c.start(timeout=CONNECT_WAIT_S)
    return c


def watch_queue():
    q = queue.Queue()
    return q, (lambda ev: q.put((ev.type, ev.path)))


def wait_event(q):
    try:
        return q.get(timeout=WAIT_S)
    except queue.Empty:
        return None


def no_more(q, client, fence_path):
    """True when nothing else is queued after a full round trip on `client`."""
    client.sync(fence_path)
    client.exists(fence_path)
    return q.empty()


# ---------------------------------------------------------------------------------------------
# Sections


def section_crud(zk, root):
    path, stat = zk.create(f"{root}/p", b"hello", include_data=True)
    check_eq("create2 returns path", path, f"{root}/p")
    check_eq("create2 stat version", stat.version, 0)
    check_eq("create2 stat dataLength", stat.dataLength, 5)
    check("create2 stat czxid==mzxid==pzxid", stat.czxid == stat.mzxid == stat.pzxid, str(stat))
    check_eq("create2 stat ephemeralOwner", stat.ephemeralOwner, 0)
    check_raises("create existing -> NodeExists", NodeExistsError, zk.create, f"{root}/p")
    check_raises("create without parent -> NoNode", NoNodeError, zk.create, f"{root}/missing/x")
    # kazoo normalises paths itself, so malformed ones go out as raw create requests.
    # ZooKeeper looks the parent up before validating the name, hence the NoNode cases.
    for bad, err in (
        (f"{root}/.", BadArgumentsError),
        (f"{root}/..", BadArgumentsError),
        ("relative", BadArgumentsError),
        (f"{root}/nul\x00", BadArgumentsError),
        (f"{root}/trailing/", NoNodeError),
        (f"{root}//", NoNodeError),
        ("/", NodeExistsError),
    ):
        payload = write_string(bad) + write_buffer(b"") + enc_acl(OPEN_ACL_UNSAFE) + int_struct.pack(0)
        check_raises(f"create {bad!r} -> {err.__name__}", err, raw_call, zk, 1, payload)

    data, st = zk.get(f"{root}/p")
    check_eq("get data", data, b"hello")
    check_eq("get stat equals create2 stat", st, stat)
    st2 = zk.set(f"{root}/p", b"world", version=0)
    check_eq("set bumps version", st2.version, 1)
    check("set advances mzxid only", st2.mzxid > st2.czxid and st2.pzxid == st2.czxid, str(st2))
    check_raises("set stale version -> BadVersion", BadVersionError, zk.set, f"{root}/p", b"x", version=0)
    check_raises("set missing -> NoNode", NoNodeError, zk.set, f"{root}/nope", b"x")
    check_eq("set -1 ignores version", zk.set(f"{root}/p", b"", version=-1).version, 2)
    check_eq("empty data reads back as empty", zk.get(f"{root}/p")[0], b"")

    check_eq("exists present", zk.exists(f"{root}/p").version, 2)
    check_eq("exists missing", zk.exists(f"{root}/nope"), None)

    zk.create(f"{root}/p/c1")
    check_raises("delete non-empty -> NotEmpty", NotEmptyError, zk.delete, f"{root}/p")
    check_raises("delete wrong version -> BadVersion", BadVersionError, zk.delete, f"{root}/p/c1", version=5)
    zk.delete(f"{root}/p/c1", version=0)
    check_eq("delete with version", zk.exists(f"{root}/p/c1"), None)
    check_raises("delete missing -> NoNode", NoNodeError, zk.delete, f"{root}/p/c1")
    check_raises("get missing -> NoNode", NoNodeError, zk.get, f"{root}/p/c1")

    big = os.urandom(100_000)
    zk.create(f"{root}/big", big)
    check_eq("100kB data round-trips", zk.get(f"{root}/big")[0], big)
    check_eq("unicode path", zk.create(f"{root}/ünï"), f"{root}/ünï")


def section_children_stat(zk, root):
    base = f"{root}/kids"
    zk.create(base)
    for name in ("b", "a", "c"):
        zk.create(f"{base}/{name}")
    zk.create(f"{base}/a/deep")
    kids, st = zk.get_children(base, include_data=True)
    check_eq("get_children names", sorted(kids), ["a", "b", "c"])
    check_eq("children stat numChildren", st.numChildren, 3)
    check_eq("children stat cversion", st.cversion, 3)
    check("pzxid is last child create", st.pzxid == zk.exists(f"{base}/c").czxid, str(st))
    zk.delete(f"{base}/b")
    st_after = zk.exists(base)
    check_eq("cversion counts deletes", st_after.cversion, 4)
    check_eq("numChildren after delete", st_after.numChildren, 2)
    check("pzxid moves on delete", st_after.pzxid > st.pzxid, f"{st.pzxid} -> {st_after.pzxid}")
    check_eq("parent version untouched by children", st_after.version, 0)
    check_raises("get_children missing -> NoNode", NoNodeError, zk.get_children, f"{root}/none")
    total = raw_call(zk, OP_GET_ALL_CHILDREN_NUMBER, write_string(base), dec_int)
    check_eq("getAllChildrenNumber counts descendants", total, 3)
    check_eq("getAllChildrenNumber leaf", raw_call(zk, OP_GET_ALL_CHILDREN_NUMBER, write_string(f"{base}/c"), dec_int), 0)
    check_raises(
        "getAllChildrenNumber missing -> NoNode", NoNodeError,
        raw_call, zk, OP_GET_ALL_CHILDREN_NUMBER, write_string(f"{root}/none"), dec_int,
    )


def section_ephemeral_sequential(zk, hosts, root):
    base = f"{root}/eph"
    zk.create(base)
    p = zk.create(f"{base}/e", b"x", ephemeral=True)
    st = zk.exists(p)
    check_eq("ephemeralOwner == session id", st.ephemeralOwner, zk.client_id[0])
    check_raises(
        "child of ephemeral -> NoChildrenForEphemerals",
        NoChildrenForEphemeralsError, zk.create, f"{p}/child",
    )
    eph = raw_call(zk, OP_GET_EPHEMERALS, write_string(base), dec_strings)
    check_eq("getEphemerals by prefix", eph, [p])
    all_eph = raw_call(zk, OP_GET_EPHEMERALS, write_string("/"), dec_strings)
    check("getEphemerals '/' lists own", p in all_eph, repr(all_eph))

    seq = f"{root}/seq"
    zk.create(seq)
    a = zk.create(f"{seq}/n-", sequence=True)
    b = zk.create(f"{seq}/n-", sequence=True, ephemeral=True)
    check_eq("sequential %010d naming", a, f"{seq}/n-0000000000")
    check_eq("ephemeral sequential next number", b, f"{seq}/n-0000000001")
    zk.create(f"{seq}/plain")
    zk.delete(a)
    zk.delete(f"{seq}/plain")
    c = zk.create(f"{seq}/n-", sequence=True)
    # Observed on ZooKeeper 3.8: the suffix counts child creations only, while stat.cversion
    # also counts deletions.
    check_eq("sequence suffix counts creations, not deletes", c, f"{seq}/n-0000000003")
    check_eq("cversion counts creations and deletions", zk.exists(seq).cversion, 6)
    d = zk.create(f"{seq}/", sequence=True)
    check_eq("sequential with trailing slash", d, f"{seq}/0000000004")

    other = new_client(hosts)
    try:
        op = other.create(f"{base}/other", ephemeral=True)
        owner = zk.exists(op).ephemeralOwner
        check_eq("other session's ephemeral owner", owner, other.client_id[0])
    finally:
        other.stop()
        other.close()
    check_eq("closeSession removes ephemerals at once", zk.exists(f"{base}/other"), None)


def section_container_ttl(zk, root):
    path, st = create_container(zk, f"{root}/container")
    check_eq("container create path", path, f"{root}/container")
    check_eq("container ephemeralOwner reported", st.ephemeralOwner, REPORTED_OWNER_OF_CONTAINER_AND_TTL)
    check_eq("container exists stat", zk.exists(f"{root}/container"), st)
    zk.create(f"{root}/container/child")
    check_eq("container holds children", zk.get_children(f"{root}/container"), ["child"])
    zk.create(f"{root}/ttls")
    path, st = create_ttl(zk, f"{root}/ttls/ttl", 60_000, data=b"t")
    check_eq("ttl create path", path, f"{root}/ttls/ttl")
    check_eq("ttl ephemeralOwner reported", st.ephemeralOwner, REPORTED_OWNER_OF_CONTAINER_AND_TTL)
    check_eq("ttl data", zk.get(path)[0], b"t")
    path, _ = create_ttl(zk, f"{root}/ttls/s-", 60_000, sequential=True)
    check_eq("ttl sequential naming", path, f"{root}/ttls/s-0000000001")
    check_raises("ttl 0 -> BadArguments", BadArgumentsError, create_ttl, zk, f"{root}/ttls/ttl0", 0)
    check_raises("ttl negative -> BadArguments", BadArgumentsError, create_ttl, zk, f"{root}/ttls/ttlneg", -5)


def section_multi(zk, root):
    base = f"{root}/multi"
    zk.create(base)
    zk.create(f"{base}/v", b"0")
    t = zk.transaction()
    t.create(f"{base}/a", b"A")
    t.set_data(f"{base}/v", b"1", version=0)
    t.check(f"{base}/v", 1)
    t.create(f"{base}/s-", sequence=True)
    t.delete(f"{base}/a")
    res = t.commit()
    check_eq("multi commit results", [type(r).__name__ if not isinstance(r, (str, bool)) else r for r in res],
             [f"{base}/a", "ZnodeStat", True, f"{base}/s-0000000002", True])
    check_eq("multi applied set", zk.get(f"{base}/v")[0], b"1")
    check_eq("multi applied create+delete", zk.exists(f"{base}/a"), None)
    zxids = {zk.exists(f"{base}/v").mzxid, zk.exists(f"{base}/s-0000000002").czxid}
    check_eq("multi ops share one zxid", len(zxids), 1)

    t = zk.transaction()
    t.create(f"{base}/b", b"B")
    t.check(f"{base}/v", 99)
    t.set_data(f"{base}/v", b"2")
    res = t.commit()
    # Ops before the failing one report code 0 (RolledBackError), ops after it -2.
    check_eq(
        "multi rollback error classes",
        [type(r).__name__ for r in res],
        ["RolledBackError", "BadVersionError", "RuntimeInconsistency"],
    )
    check_eq("multi rollback nothing created", zk.exists(f"{base}/b"), None)
    check_eq("multi rollback nothing set", zk.get(f"{base}/v")[0], b"1")

    t = zk.transaction()
    t.delete(f"{base}/v")
    t.create(f"{base}/nope/x")
    res = t.commit()
    check_eq("multi NoNode in 2nd op", [type(r).__name__ for r in res], ["RolledBackError", "NoNodeError"])
    check("multi rollback keeps deleted node", zk.exists(f"{base}/v") is not None)
    check("RolledBackError importable (sanity)", issubclass(RolledBackError, Exception))
    check("RuntimeInconsistency class (sanity)", issubclass(RuntimeInconsistency, Exception))


def section_acl_auth(zk, hosts, root):
    base = f"{root}/acl"
    zk.create(base)
    acls, st = zk.get_acls(base)
    check_eq("default ACL world:anyone all", [(a.perms, a.id.scheme, a.id.id) for a in acls], [(31, "world", "anyone")])
    check_eq("getACL stat aversion", st.aversion, 0)
    digest_acl = make_digest_acl("alice", "secret", all=True)
    read_acl = ACL(1, Id("world", "anyone"))  # READ only for everyone
    check_raises("setACL wrong version -> BadVersion", BadVersionError, zk.set_acls, base, OPEN_ACL_UNSAFE, version=3)
    st = zk.set_acls(base, [digest_acl, read_acl], version=0)
    check_eq("setACL bumps aversion", st.aversion, 1)
    # The ADMIN permission is checked before the version.
    check_raises("setACL without ADMIN -> NoAuth", NoAuthError, zk.set_acls, base, OPEN_ACL_UNSAFE, version=0)
    check_raises("write without auth -> NoAuth", NoAuthError, zk.set, base, b"x")
    check_raises("create child without auth -> NoAuth", NoAuthError, zk.create, f"{base}/c")
    check_eq("read allowed for world READ", zk.get(base)[0], b"")

    alice = new_client(hosts, auth_data=[("digest", "alice:secret")])
    try:
        check_eq("digest auth allows write", alice.set(base, b"ok").version, 1)
        who = raw_call(alice, OP_WHO_AM_I, b"", dec_whoami)
        check(
            "whoAmI lists digest identity",
            ("digest", "alice") in who and any(s == "ip" for s, _ in who),
            repr(who),
        )
        p = alice.create(f"{base}/auth-acl", acl=[ACL(31, Id("auth", ""))])
        acl_back = alice.get_acls(p)[0]
        check_eq(
            "auth scheme expands to digest identity",
            [(a.perms, a.id.scheme, a.id.id) for a in acl_back],
            [(31, "digest", make_digest_acl_credential("alice", "secret"))],
        )
    finally:
        alice.stop()
        alice.close()
    check_raises("other session denied read -> NoAuth", NoAuthError, zk.get, f"{base}/auth-acl")
    check_raises(
        "auth scheme without credentials -> InvalidACL",
        InvalidACLError, zk.create, f"{root}/noauth", acl=[ACL(31, Id("auth", ""))],
    )
    check_raises(
        "unknown scheme -> InvalidACL",
        InvalidACLError, zk.create, f"{root}/badscheme", acl=[ACL(31, Id("bogus", "x"))],
    )
    # kazoo turns acl=[] into the default ACL, so the empty list goes out raw.
    payload = write_string(f"{root}/emptyacl") + write_buffer(b"") + enc_acl([]) + int_struct.pack(0)
    check_raises("empty ACL -> InvalidACL", InvalidACLError, raw_call, zk, 1, payload)
    zk.add_auth("digest", "alice:secret")
    check_eq("add_auth at runtime grants access", zk.get(f"{base}/auth-acl")[0], b"")
    who = raw_call(zk, OP_WHO_AM_I, b"", dec_whoami)
    check("whoAmI after add_auth", ("digest", "alice") in who, repr(who))
    zk.create(f"{root}/ro", acl=[ACL(1, Id("world", "anyone"))])
    check_raises("delete under READ-only parent -> NoAuth", NoAuthError, zk.create, f"{root}/ro/x")
    check("sync returns", zk.sync(root) is not None)


def section_watches(zk, hosts, root):
    base = f"{root}/w"
    zk.create(base)
    writer = new_client(hosts)
    try:
        q, cb = watch_queue()
        check_eq("exists on missing node returns None", zk.exists(f"{base}/n", watch=cb), None)
        writer.create(f"{base}/n", b"1")
        check_eq("CREATED fires exists watch", wait_event(q), (EventType.CREATED, f"{base}/n"))

        zk.exists(f"{base}/n", watch=cb)
        writer.set(f"{base}/n", b"2")
        check_eq("CHANGED fires exists watch", wait_event(q), (EventType.CHANGED, f"{base}/n"))
        zk.get(f"{base}/n", watch=cb)
        writer.set(f"{base}/n", b"3")
        check_eq("CHANGED fires getData watch", wait_event(q), (EventType.CHANGED, f"{base}/n"))
        writer.set(f"{base}/n", b"4")
        check("getData watch is one-shot", no_more(q, zk, base), repr(list(q.queue)))

        zk.get_children(base, watch=cb)
        writer.create(f"{base}/n2")
        check_eq("CHILD fires getChildren watch", wait_event(q), (EventType.CHILD, base))
        writer.create(f"{base}/n3")
        check("getChildren watch is one-shot", no_more(q, zk, base), repr(list(q.queue)))
        zk.get_children(base, watch=cb)
        writer.set(f"{base}/n2", b"data")
        check("child data change does not fire child watch", no_more(q, zk, base), repr(list(q.queue)))
        writer.delete(f"{base}/n3")
        check_eq("child delete fires getChildren watch", wait_event(q), (EventType.CHILD, base))

        for kind in ("exists", "get", "children"):
            p = f"{base}/del-{kind}"
            writer.create(p)
            qk, cbk = watch_queue()
            {"exists": zk.exists, "get": zk.get, "children": zk.get_children}[kind](p, watch=cbk)
            writer.delete(p)
            check_eq(f"DELETED fires {kind} watch", wait_event(qk), (EventType.DELETED, p))
            check(f"DELETED {kind} watch fires once", no_more(qk, zk, base), repr(list(qk.queue)))

        # Parent and child watches on one delete: the node's own event comes first.
        writer.create(f"{base}/pc")
        tap = EventTap(zk)
        zk.get(f"{base}/pc", watch=lambda ev: None)
        zk.get_children(base, watch=lambda ev: None)
        writer.delete(f"{base}/pc")
        evs = [tap.next(), tap.next()]
        check_eq("delete event order: node then parent", evs, [("NodeDeleted", f"{base}/pc"), ("NodeChildrenChanged", base)])

        # Same watcher registered by exists and get on one node: the server sends one event.
        writer.create(f"{base}/dup")
        zk.exists(f"{base}/dup", watch=lambda ev: None)
        zk.get(f"{base}/dup", watch=lambda ev: None)
        writer.set(f"{base}/dup", b"z")
        first = tap.next()
        rest = tap.drain_after(zk, base)
        check_eq("exists+get watch on one node: one notification", [first] + rest, [("NodeDataChanged", f"{base}/dup")])

        # checkWatches / removeWatches (WatcherType: 1 children, 2 data, 3 any).
        zk.get(f"{base}/dup", watch=lambda ev: None)
        check("checkWatches data present", watches_request(zk, OP_CHECK_WATCHES, f"{base}/dup", 2) is None)
        watches_request(zk, OP_REMOVE_WATCHES, f"{base}/dup", 2)
        try:
            watches_request(zk, OP_CHECK_WATCHES, f"{base}/dup", 2)
            check("checkWatches after remove -> NoWatcher", False, "call succeeded")
        except Exception as e:
            check_eq("checkWatches after remove -> NoWatcher (-121)", getattr(e, "code", None), -121)
        writer.set(f"{base}/dup", b"after-remove")
        check_eq("removed watch does not fire", tap.drain_after(zk, base), [])
    finally:
        writer.stop()
        writer.close()


def section_persistent_watches(zk, hosts, root):
    base = f"{root}/pw"
    zk.create(base)
    writer = new_client(hosts)
    tap = EventTap(zk)
    try:
        add_watch(zk, base, recursive=False)
        writer.set(base, b"1")
        writer.set(base, b"2")
        writer.create(f"{base}/c")
        writer.create(f"{base}/c/deep")
        got = [tap.next() for _ in range(3)]
        got += tap.drain_after(zk, base)
        check_eq(
            "persistent watch: repeated events, children, no descendants",
            got,
            [("NodeDataChanged", base), ("NodeDataChanged", base), ("NodeChildrenChanged", base)],
        )
        watches_request(zk, OP_REMOVE_WATCHES, base, 3)
        writer.set(base, b"3")
        check_eq("removeWatches(any) removes persistent watch", tap.drain_after(zk, base), [])

        add_watch(zk, base, recursive=True)
        writer.set(f"{base}/c", b"x")
        writer.create(f"{base}/c/deep2")
        writer.delete(f"{base}/c/deep2")
        writer.set(base, b"4")
        got = [tap.next() for _ in range(4)]
        got += tap.drain_after(zk, base)
        check_eq(
            "persistent recursive watch: all descendants, no child events",
            got,
            [
                ("NodeDataChanged", f"{base}/c"),
                ("NodeCreated", f"{base}/c/deep2"),
                ("NodeDeleted", f"{base}/c/deep2"),
                ("NodeDataChanged", base),
            ],
        )
        add_watch(zk, f"{root}/pw-missing", recursive=False)
        writer.create(f"{root}/pw-missing")
        check_eq("persistent watch on missing node sees creation", tap.next(), ("NodeCreated", f"{root}/pw-missing"))
    finally:
        writer.stop()
        writer.close()


def section_session_expiry(zk, hosts, root):
    host, port = hosts.split(":")
    proxy = CuttableProxy(host, int(port))
    victim = new_client(proxy.address(), timeout=1.0)
    try:
        session_timeout_ms = victim._session_timeout
        p = victim.create(f"{root}/expiring", ephemeral=True)
        q, cb = watch_queue()
        zk.exists(p, watch=cb)
        proxy.cut(block=True)  # the victim vanishes without closeSession
        ev = wait_event(q)
        check_eq("expired session's ephemeral deleted (NodeDeleted seen)", ev, (EventType.DELETED, p))
        check_eq("ephemeral gone after expiry", zk.exists(p), None)
        check("negotiated timeout within [2,20]*tickTime bounds", 0 < session_timeout_ms <= 20_000, str(session_timeout_ms))
    finally:
        victim.stop()
        victim.close()
        proxy.close()


def section_reconnect_set_watches(zk, hosts, root):
    host, port = hosts.split(":")
    base = f"{root}/rw"
    zk.create(base)
    for n in ("data", "gone", "kids"):
        zk.create(f"{base}/{n}")
    proxy = CuttableProxy(host, int(port))
    watcher = new_client(proxy.address(), timeout=4.0)
    try:
        # kazoo fires and forgets its own watchers on connection loss and never sends
        # SetWatches, so the server's notifications are read raw from the connection.
        tap = EventTap(watcher)
        session_before = watcher.client_id[0]
        ignore = lambda ev: None  # noqa: E731
        watcher.get(f"{base}/data", watch=ignore)
        watcher.exists(f"{base}/gone", watch=ignore)
        watcher.exists(f"{base}/born", watch=ignore)
        watcher.get_children(f"{base}/kids", watch=ignore)
        watcher.exists(f"{base}/quiet", watch=ignore)
        last_zxid = watcher.last_zxid
        connected = threading.Event()
        watcher.add_listener(lambda state: connected.set() if state == "CONNECTED" else None)
        proxy.cut(block=True)
        zk.set(f"{base}/data", b"changed")
        zk.delete(f"{base}/gone")
        zk.create(f"{base}/born")
        zk.create(f"{base}/kids/k")
        proxy.unblock()
        check("watcher reconnected", connected.wait(WAIT_S))
        check_eq("same session after reconnect", watcher.client_id[0], session_before)
        check("no notifications before SetWatches", tap.events.empty(), repr(list(tap.events.queue)))
        set_watches(
            watcher, last_zxid,
            # An exists() on a present node is a data watch, as the Java client files it.
            data=[f"{base}/data", f"{base}/gone"],
            exist=[f"{base}/born", f"{base}/quiet"],
            child=[f"{base}/kids"],
        )
        got = tap.drain_after(watcher, base)
        check_eq(
            "setWatches delivers missed events",
            sorted(got),
            sorted([
                ("NodeDataChanged", f"{base}/data"),
                ("NodeDeleted", f"{base}/gone"),
                ("NodeCreated", f"{base}/born"),
                ("NodeChildrenChanged", f"{base}/kids"),
            ]),
        )
        zk.create(f"{base}/quiet")
        check_eq("unchanged watched node re-armed by setWatches", tap.next(), ("NodeCreated", f"{base}/quiet"))
    finally:
        watcher.stop()
        watcher.close()
        proxy.close()


def section_four_letter_words(host, port):
    check_eq("ruok -> imok", four_letter(host, port, "ruok"), "imok")
    srvr = four_letter(host, port, "srvr")
    check("srvr starts 'Zookeeper version:'", srvr.startswith("Zookeeper version:"), srvr[:80])
    for key in ("Latency min/avg/max:", "Received:", "Sent:", "Connections:", "Outstanding:", "Zxid: 0x", "Mode: standalone", "Node count:"):
        check(f"srvr has '{key}'", key in srvr, srvr)
    stat = four_letter(host, port, "stat")
    check("stat has Clients: section", "Clients:" in stat and "Mode: standalone" in stat, stat)
    mntr = four_letter(host, port, "mntr")
    rows = dict(line.split("\t", 1) for line in mntr.strip().splitlines() if "\t" in line)
    for key in ("zk_version", "zk_server_state", "zk_znode_count", "zk_watch_count", "zk_ephemerals_count", "zk_num_alive_connections", "zk_outstanding_requests", "zk_avg_latency"):
        check(f"mntr has {key}", key in rows, mntr[:300])
    check_eq("mntr zk_server_state", rows.get("zk_server_state"), "standalone")
    conf = four_letter(host, port, "conf")
    for key in ("clientPort=", "dataDir=", "tickTime=", "maxClientCnxns=", "minSessionTimeout=", "maxSessionTimeout="):
        check(f"conf has {key}", key in conf, conf)
    check("conf minSessionTimeout=2*tickTime", "minSessionTimeout=400" in conf and "tickTime=200" in conf, conf)
    cons = four_letter(host, port, "cons")
    check("cons lists connections", "queued=" in cons and "recved=" in cons, cons)
    wchs = four_letter(host, port, "wchs")
    check("wchs summary", "connections watching" in wchs and "Total watches:" in wchs, wchs)
    check("wchc answers", len(four_letter(host, port, "wchc")) >= 0)
    check("wchp answers", len(four_letter(host, port, "wchp")) >= 0)
    dump = four_letter(host, port, "dump")
    check("dump lists sessions with ephemerals", "Sessions with Ephemerals" in dump, dump)
    envi = four_letter(host, port, "envi")
    check("envi has Environment: and zookeeper.version=", envi.startswith("Environment:") and "zookeeper.version=" in envi, envi[:200])
    check_eq("isro -> rw", four_letter(host, port, "isro"), "rw")


def section_watch_4lw(zk, hosts, root):
    host, port = hosts.split(":")
    p = f"{root}/wl"
    zk.create(p)
    zk.get(p, watch=lambda ev: None)
    sid = f"0x{zk.client_id[0]:x}"
    wchc = four_letter(host, port, "wchc")
    check("wchc lists session then path", sid in wchc and f"\t{p}" in wchc, wchc)
    wchp = four_letter(host, port, "wchp")
    check("wchp lists path then session", p in wchp and sid in wchp, wchp)
    cons = four_letter(host, port, "cons")
    check("cons shows our session id", f"sid={sid}" in cons, cons)
    zk.create(f"{root}/wl-eph", ephemeral=True)
    dump = four_letter(host, port, "dump")
    check("dump lists our ephemeral under our session", sid in dump and f"{root}/wl-eph" in dump, dump)


def main():
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        print("usage: kazoo_suite.py HOST:PORT", file=sys.stderr)
        return 2
    hosts = sys.argv[1]
    # The cut connections make kazoo log every reconnect attempt; only real errors are kept.
    logging.basicConfig(level=logging.ERROR)
    host, port = hosts.split(":")
    import kazoo

    print(f"kazoo {getattr(kazoo, '__version__', '?')} against {hosts}", flush=True)
    zk = new_client(hosts)
    root = f"/kazoo_suite_{os.getpid()}_{int(time.time())}"
    zk.create(root)
    sections = [
        ("crud", lambda: section_crud(zk, root)),
        ("children", lambda: section_children_stat(zk, root)),
        ("ephemeral", lambda: section_ephemeral_sequential(zk, hosts, root)),
        ("container_ttl", lambda: section_container_ttl(zk, root)),
        ("multi", lambda: section_multi(zk, root)),
        ("watches", lambda: section_watches(zk, hosts, root)),
        ("persistent_watches", lambda: section_persistent_watches(zk, hosts, root)),
        ("session_expiry", lambda: section_session_expiry(zk, hosts, root)),
        ("reconnect", lambda: section_reconnect_set_watches(zk, hosts, root)),
        ("acl", lambda: section_acl_auth(zk, hosts, root)),
        ("4lw", lambda: section_four_letter_words(host, int(port))),
        ("watch_4lw", lambda: section_watch_4lw(zk, hosts, root)),
    ]
    for name, run in sections:
        try:
            run()
        except Exception as e:
            check(f"section {name} completed", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    zk.stop()
    zk.close()
    return finish()


if __name__ == "__main__":
    sys.exit(main())

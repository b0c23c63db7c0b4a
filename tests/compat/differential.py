#!/usr/bin/python3
"""Differential test: one scripted session run against two ZooKeeper-protocol servers.

usage: /usr/bin/python3 tests/compat/differential.py REFERENCE_HOST:PORT CANDIDATE_HOST:PORT

The scenario (plain ops, failures, multi, sequential names, watches and their order, ACL errors,
stat fields) is played against each server in turn with kazoo. Every step records a normalized
transcript: replies, error class names, Stat fields with zxids relative to the scenario's first
zxid and session ids replaced by role names (ctime/mtime left out), and the notifications each
client received, in order. A step passes when both servers produced the same lines; a unified diff
of the whole transcript is printed when they do not. Ends with "N passed, N failed".
"""

import difflib
import logging
import os
import sys
import traceback

# The sibling suite is imported for its helpers; keep the source tree free of __pycache__.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kazoo.security import ACL, Id, make_digest_acl  # noqa: E402

import kazoo_suite as ks  # noqa: E402  (raw requests, event tap, client factory)

# Unique per run so the script can be repeated against long-running servers.
ROOT = f"/differential_{os.getpid()}"


class Recorder:
    def __init__(self):
        self.steps = []  # (label, [lines])
        self.base_zxid = None
        self.sessions = {}

    def step(self, label):
        self.steps.append((label, []))

    def line(self, text):
        self.steps[-1][1].append(text)

    def zx(self, z):
        return f"z{z - self.base_zxid:+d}"

    def owner(self, owner):
        if owner == 0:
            return "0"
        return self.sessions.get(owner, "unknown-session")

    def stat(self, st):
        return (
            f"Stat(czxid={self.zx(st.czxid)} mzxid={self.zx(st.mzxid)} pzxid={self.zx(st.pzxid)} "
            f"version={st.version} cversion={st.cversion} aversion={st.aversion} "
            f"owner={self.owner(st.ephemeralOwner)} dataLength={st.dataLength} numChildren={st.numChildren})"
        )

    def value(self, v):
        if v is None:
            return "None"
        if isinstance(v, ks.ZnodeStat):
            return self.stat(v)
        if isinstance(v, bytes):
            return f"bytes{v!r}"
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], ks.ZnodeStat):
            # Children come in hash order and ZooKeeper does not keep the order of an ACL
            # list either: both are compared as sets.
            if isinstance(v[0], list):
                first = sorted(self.value(x) for x in v[0])
            else:
                first = self.value(v[0])
            return f"({first}, {self.stat(v[1])})"
        if isinstance(v, list):
            return "[" + ", ".join(self.value(x) for x in v) + "]"
        if isinstance(v, Exception):
            return f"error {type(v).__name__}"
        if isinstance(v, ACL):
            return f"ACL({v.perms},{v.id.scheme}:{v.id.id})"
        return repr(v)

    def op(self, label, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            self.line(f"{label} -> error {type(e).__name__}")
            return None
        self.line(f"{label} -> {self.value(result)}")
        return result


def drain(rec, name, tap, client, any_order=False):
    events = tap.drain_after(client, "/")
    if any_order:
        events.sort()
    for ev in events:
        rec.line(f"event[{name}] {ev[0]} {ev[1]}")


def scenario(hosts):
    """Plays the script against one server and returns its transcript."""
    rec = Recorder()
    main = ks.new_client(hosts)
    watcher = ks.new_client(hosts)
    other = ks.new_client(hosts)
    rec.sessions = {main.client_id[0]: "main", watcher.client_id[0]: "watcher", other.client_id[0]: "other"}
    wtap = ks.EventTap(watcher)
    mtap = ks.EventTap(main)

    def settle(any_order=False):
        drain(rec, "watcher", wtap, watcher, any_order)
        drain(rec, "main", mtap, main, any_order)

    def step(label):
        settle()
        rec.step(label)

    try:
        rec.step("root")
        path, st = main.create(ROOT, b"root", include_data=True)
        rec.base_zxid = st.czxid
        rec.line(f"create {path} -> {rec.stat(st)}")

        step("create and read")
        for name in ("a", "b", "c"):
            rec.op(f"create2 {name}", main.create, f"{ROOT}/{name}", name.encode() * 3, include_data=True)
        rec.op("get a", main.get, f"{ROOT}/a")
        rec.op("children root", main.get_children, ROOT, include_data=True)
        rec.op("exists missing", main.exists, f"{ROOT}/zz")
        rec.op("create existing", main.create, f"{ROOT}/a")
        rec.op("create no parent", main.create, f"{ROOT}/x/y")
        rec.op("get missing", main.get, f"{ROOT}/zz")

        step("set and versions")
        rec.op("set a v0", main.set, f"{ROOT}/a", b"A1", version=0)
        rec.op("set a stale v0", main.set, f"{ROOT}/a", b"A2", version=0)
        rec.op("set a any", main.set, f"{ROOT}/a", b"", version=-1)
        rec.op("get a", main.get, f"{ROOT}/a")
        rec.op("delete a wrong version", main.delete, f"{ROOT}/a", version=7)
        rec.op("delete root not empty", main.delete, ROOT)

        step("ephemeral and sequential")
        rec.op("ephemeral e", other.create, f"{ROOT}/e", b"eph", ephemeral=True)
        rec.op("stat e", main.exists, f"{ROOT}/e")
        rec.op("child of ephemeral", other.create, f"{ROOT}/e/x")
        main.create(f"{ROOT}/seq")
        for i in range(3):
            rec.op(f"seq {i}", main.create, f"{ROOT}/seq/job-", sequence=True)
        rec.op("delete seq 1", main.delete, f"{ROOT}/seq/job-0000000001")
        rec.op("eph seq", other.create, f"{ROOT}/seq/job-", ephemeral=True, sequence=True)
        rec.op("seq after delete", main.create, f"{ROOT}/seq/job-", sequence=True)
        rec.op("stat seq parent", main.exists, f"{ROOT}/seq")
        rec.op(
            "getEphemerals /differential",
            lambda: sorted(ks.raw_call(main, ks.OP_GET_EPHEMERALS, ks.write_string(ROOT), ks.dec_strings)),
        )
        rec.op(
            "getEphemerals as other",
            lambda: sorted(ks.raw_call(other, ks.OP_GET_EPHEMERALS, ks.write_string(ROOT), ks.dec_strings)),
        )
        rec.op(
            "getAllChildrenNumber root",
            ks.raw_call, main, ks.OP_GET_ALL_CHILDREN_NUMBER, ks.write_string(ROOT), ks.dec_int,
        )

        step("one-shot watches")
        rec.op("watch exists b", watcher.exists, f"{ROOT}/b", watch=lambda e: None)
        rec.op("watch get b", watcher.get, f"{ROOT}/b", watch=lambda e: None)
        rec.op("watch children root", lambda: sorted(watcher.get_children(ROOT, watch=lambda e: None)))
        rec.op("watch exists new", watcher.exists, f"{ROOT}/new", watch=lambda e: None)
        rec.op("watch get c", watcher.get, f"{ROOT}/c", watch=lambda e: None)
        rec.op("watch children c", watcher.get_children, f"{ROOT}/c", watch=lambda e: None)
        settle()
        rec.op("set b", main.set, f"{ROOT}/b", b"B1")
        settle()
        rec.op("set b again", main.set, f"{ROOT}/b", b"B2")
        settle()
        rec.op("create new", main.create, f"{ROOT}/new")
        settle()
        rec.op("delete c", main.delete, f"{ROOT}/c")
        settle()
        rec.op("create c again", main.create, f"{ROOT}/c")

        step("session close removes ephemerals")
        rec.op("watch exists e", watcher.exists, f"{ROOT}/e", watch=lambda e: None)
        rec.op("watch children seq", lambda: sorted(watcher.get_children(f"{ROOT}/seq", watch=lambda e: None)))
        other.stop()
        other.close()
        # A closing session's ephemerals are deleted in hash order on ZooKeeper.
        settle(any_order=True)
        rec.op("e after close", main.exists, f"{ROOT}/e")
        rec.op("children seq", lambda: sorted(main.get_children(f"{ROOT}/seq")))

        step("multi")
        t = main.transaction()
        t.create(f"{ROOT}/m1", b"1")
        t.set_data(f"{ROOT}/b", b"multi", version=2)
        t.check(f"{ROOT}/b", 3)
        t.create(f"{ROOT}/m-", sequence=True)
        t.delete(f"{ROOT}/m1")
        rec.op("multi commit", t.commit)
        t = main.transaction()
        t.create(f"{ROOT}/m2")
        t.delete(f"{ROOT}/b", version=99)
        t.create(f"{ROOT}/m3")
        rec.op("multi rollback", t.commit)
        rec.op("m2 absent", main.exists, f"{ROOT}/m2")
        t = main.transaction()
        t.check(f"{ROOT}/zz", 0)
        rec.op("multi check missing", t.commit)
        rec.op("stat b", main.exists, f"{ROOT}/b")

        step("acl")
        rec.op("getACL b", main.get_acls, f"{ROOT}/b")
        rec.op(
            "setACL b digest+read",
            main.set_acls, f"{ROOT}/b", [make_digest_acl("bob", "pw", all=True), ACL(1, Id("world", "anyone"))],
        )
        rec.op("getACL b after", main.get_acls, f"{ROOT}/b")
        rec.op("set b no auth", main.set, f"{ROOT}/b", b"x")
        rec.op("get b read allowed", main.get, f"{ROOT}/b")
        rec.op("create under b no auth", main.create, f"{ROOT}/b/k")
        rec.op("auth scheme no creds", main.create, f"{ROOT}/authacl", acl=[ACL(31, Id("auth", ""))])
        rec.op("bad scheme", main.create, f"{ROOT}/badacl", acl=[ACL(31, Id("nope", "x"))])
        rec.op("add_auth", main.add_auth, "digest", "bob:pw")
        rec.op("set b with auth", main.set, f"{ROOT}/b", b"authed")
        rec.op("auth scheme with creds", main.create, f"{ROOT}/authacl", acl=[ACL(31, Id("auth", ""))])
        rec.op("getACL authacl", main.get_acls, f"{ROOT}/authacl")
        rec.op("watcher reads authacl", watcher.get, f"{ROOT}/authacl")
        rec.op("whoAmI", lambda: sorted(ks.raw_call(main, ks.OP_WHO_AM_I, b"", ks.dec_whoami)))

        step("persistent watches")
        main.create(f"{ROOT}/p")
        rec.op("addWatch recursive", ks.add_watch, watcher, f"{ROOT}/p", True)
        # A persistent watch below the recursive one (not on the same path: ZooKeeper 3.8 lets a
        # second addWatch replace the first mode, 3.9 keeps both, and Corral follows 3.9).
        rec.op("addWatch persistent", ks.add_watch, watcher, f"{ROOT}/p/q", False)
        rec.op("create p/q", main.create, f"{ROOT}/p/q")
        rec.op("set p/q", main.set, f"{ROOT}/p/q", b"1")
        rec.op("create p/q/r", main.create, f"{ROOT}/p/q/r")
        rec.op("set p", main.set, f"{ROOT}/p", b"p")
        rec.op("delete p/q/r", main.delete, f"{ROOT}/p/q/r")
        settle()
        rec.op("removeWatches any", ks.watches_request, watcher, ks.OP_REMOVE_WATCHES, f"{ROOT}/p", 3)
        rec.op("checkWatches none", ks.watches_request, watcher, ks.OP_CHECK_WATCHES, f"{ROOT}/p", 3)
        rec.op("set p after remove", main.set, f"{ROOT}/p", b"quiet")

        step("containers, TTL nodes and odd paths")
        rec.op("container", ks.create_container, main, f"{ROOT}/box", b"c")
        rec.op("child of container", main.create, f"{ROOT}/box/item")
        rec.op("stat container", main.exists, f"{ROOT}/box")
        rec.op("ttl", ks.create_ttl, main, f"{ROOT}/ttl", 60000)
        rec.op("ttl sequential", ks.create_ttl, main, f"{ROOT}/ttl-", 60000, True)
        rec.op("ttl zero", ks.create_ttl, main, f"{ROOT}/ttl0", 0)
        rec.op("ttl negative", ks.create_ttl, main, f"{ROOT}/ttlneg", -5)
        rec.op("stat ttl", main.exists, f"{ROOT}/ttl")
        for label, bad in (
            ("trailing slash", f"{ROOT}/a/"),
            ("double slash", f"{ROOT}//x"),
            ("dot", f"{ROOT}/."),
            ("dotdot", f"{ROOT}/b/.."),
            ("relative", "rel"),
            ("root", "/"),
        ):
            # Raw requests: kazoo would normalise or refuse these paths before sending them.
            payload = (
                ks.write_string(bad) + ks.write_buffer(b"") + ks.enc_acl(ks.OPEN_ACL_UNSAFE)
                + ks.int_struct.pack(0)
            )
            rec.op(f"create {label}", ks.raw_call, main, 1, payload, ks.read_string)
        rec.op("delete /zookeeper", main.delete, "/zookeeper")
        rec.op("delete /", main.delete, "/")
        rec.op("empty multi", lambda: main.transaction().commit())
        rec.op("getAllChildrenNumber box", ks.raw_call, main, ks.OP_GET_ALL_CHILDREN_NUMBER, ks.write_string(f"{ROOT}/box"), ks.dec_int)

        step("delete order and final stats")
        rec.op("watch get p/q", watcher.get, f"{ROOT}/p/q", watch=lambda e: None)
        rec.op("watch children p", lambda: sorted(watcher.get_children(f"{ROOT}/p", watch=lambda e: None)))
        rec.op("watch children p/q", lambda: sorted(watcher.get_children(f"{ROOT}/p/q", watch=lambda e: None)))
        rec.op("delete p/q", main.delete, f"{ROOT}/p/q")
        settle()
        rec.op("sync", main.sync, ROOT)
        rec.op("stat root", main.exists, ROOT)
        rec.op("children root", main.get_children, ROOT, include_data=True)
        settle()
    finally:
        for c in (main, watcher, other):
            try:
                c.stop()
                c.close()
            except Exception:
                pass
    return rec.steps


def render(steps):
    out = []
    for label, lines in steps:
        out.append(f"== {label}")
        out.extend(f"   {line}" for line in lines)
    return out


def main():
    if len(sys.argv) != 3:
        print("usage: differential.py REFERENCE_HOST:PORT CANDIDATE_HOST:PORT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    reference, candidate = sys.argv[1], sys.argv[2]
    transcripts = []
    for hosts in (reference, candidate):
        try:
            transcripts.append(scenario(hosts))
        except Exception as e:
            print(f"FAIL scenario aborted against {hosts}: {type(e).__name__}: {e}")
            traceback.print_exc()
            print("0 passed, 1 failed")
            return 1
    ref, cand = transcripts
    passed = failed = 0
    ref_steps = dict(ref)
    for label, lines in cand:
        if ref_steps.get(label) == lines:
            passed += 1
            print(f"PASS {label} ({len(lines)} lines)")
        else:
            failed += 1
            print(f"FAIL {label}")
    if [label for label, _ in ref] != [label for label, _ in cand]:
        failed += 1
        print("FAIL the two runs did not reach the same steps")
    if failed:
        print(f"--- transcript diff ({reference} = reference, {candidate} = candidate)")
        for line in difflib.unified_diff(render(ref), render(cand), reference, candidate, lineterm="", n=2):
            print(line)
    elif os.environ.get("DIFFERENTIAL_SHOW"):
        print("\n".join(render(ref)))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Compatibility suite: the ZooKeeper C client's interactive shell `cli_mt` (Debian zookeeper-bin).

usage: /usr/bin/python3 tests/compat/cli_mt.py HOST:PORT

cli_mt reads commands on stdin and answers asynchronously, so each check sends one command and
waits (bounded) for the line that answers it. Changes that must fire cli_mt's watches are made by a
second client (kazoo). Prints one line per check, then "N passed, N failed".
"""

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

CLI_MT = os.environ.get("CLI_MT", "/usr/lib/zookeeper/bin/cli_mt")
WAIT_S = 10.0
# Establishing a session is a readiness wait, not a check: a loaded machine (or a JVM server
# that is still warming up) may take much longer than any single event should.
CONNECT_WAIT_S = 120.0

from checks import check, finish  # noqa: E402  (shared by every suite)


class CliMt:
    """One cli_mt process; its output lines are collected by a reader thread."""

    def __init__(self, hosts):
        # stdbuf makes the C stdio line-buffered although stdout is a pipe.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "-eL", CLI_MT, hosts],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of output
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.lines)

    def send(self, command):
        mark = self.mark()
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return mark

    def expect(self, pattern, since, wait_s=WAIT_S):
        """Waits for a line matching `pattern` at or after index `since`; returns the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + wait_s
        with self.cond:
            while True:
                for line in self.lines[since:]:
                    if line is None:
                        return None
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def output_since(self, since):
        with self.cond:
            return "\n".join(line for line in self.lines[since:] if line is not None)

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=WAIT_S)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def run_expect(cli, name, command, *patterns):
    """Sends `command` and checks that every pattern shows up in the answer."""
    mark = cli.send(command)
    for pattern in patterns:
        m = cli.expect(pattern, mark)
        if not m:
            check(name, False, f"no line matching {pattern!r} after {command!r}; output:\n{cli.output_since(mark)}")
            return None
    check(name, True)
    return m


def main():
    if len(sys.argv) != 2:
        print("usage: cli_mt.py HOST:PORT", file=sys.stderr)
        return 2
    hosts = sys.argv[1]
    if not os.access(CLI_MT, os.X_OK) or not shutil.which("stdbuf"):
        print(f"FAIL {CLI_MT} (Debian zookeeper-bin) or stdbuf missing; run scripts/test to install")
        print("0 passed, 1 failed")
        return 1
    logging.basicConfig(level=logging.ERROR)
    other = KazooClient(hosts=hosts)
    other.start(timeout=CONNECT_WAIT_S)
    root = f"/cli_mt_{os.getpid()}"
    cli = CliMt(hosts)
    try:
        m = cli.expect(r"Got a new session id: 0x([0-9a-f]+)", 0, CONNECT_WAIT_S)
        check("connects and reports session id", m is not None, cli.output_since(0))
        session_id = int(m.group(1), 16) if m else None
        check("SESSION_EVENT CONNECTED_STATE", cli.expect(r"Watcher SESSION_EVENT state = CONNECTED_STATE", 0) is not None)

        run_expect(cli, "create", f"create {root}", rf"^\[{root}\]: rc = 0$", rf"^\tname = {root}$")
        run_expect(cli, "create existing -> -110", f"create {root}", rf"^\[{root}\]: rc = -110$")
        run_expect(cli, "create no parent -> -101", f"create {root}/x/y", rf"^\[{root}/x/y\]: rc = -101$")
        run_expect(cli, "create ephemeral", f"create +e {root}/e", rf"^\tname = {root}/e$")
        st = other.exists(f"{root}/e")
        check("ephemeralOwner is cli_mt's session", st is not None and st.ephemeralOwner == session_id, repr(st))
        run_expect(cli, "create sequential", f"create +s {root}/s-", rf"^\tname = {root}/s-0000000001$")
        run_expect(
            cli, "create2 prints stat", f"create2 {root}/c2",
            rf"^\tname = {root}/c2$", r"^\tczxid=[0-9a-f]+$", r"^\tversion=0\taversion=0$", r"^\tephemeralOwner = 0$",
        )
        run_expect(cli, "create container", f"create +c {root}/cont", rf"^\tname = {root}/cont$")
        run_expect(cli, "create ttl", f"create +t=60000 {root}/ttl", rf"^\tname = {root}/ttl$")

        run_expect(cli, "ls lists children", f"ls {root}", rf"^{root}: rc = 0$", r"^\te$", r"^\ts-0000000001$", r"^\tc2$", r"^\tcont$", r"^\tttl$")
        run_expect(cli, "ls2 lists children", f"ls2 {root}", rf"^{root}: rc = 0$", r"^\tc2$")
        run_expect(cli, "ls missing -> -101", f"ls {root}/nope", rf"^{root}/nope: rc = -101$")

        run_expect(cli, "set", f"set {root}/c2 hello", rf"^{root}/c2: rc = 0 Stat:$", r"^\tversion=1\taversion=0$")
        run_expect(cli, "get returns data", f"get {root}/c2", rf"^{root}/c2: rc = 0$", r"^ value_len = 5$", r"^hello$")
        run_expect(cli, "get missing -> -101", f"get {root}/nope", rf"^{root}/nope: rc = -101$")
        run_expect(cli, "set missing -> -101", f"set {root}/nope x", rf"^{root}/nope: rc = -101")

        # get/ls/exists register watches with cli_mt's default watcher.
        mark = cli.mark()
        other.set(f"{root}/c2", b"changed")
        check("get watch fires CHANGED_EVENT", cli.expect(rf"^Watcher CHANGED_EVENT state = CONNECTED_STATE for path {root}/c2$", mark) is not None, cli.output_since(mark))
        mark = cli.mark()
        other.create(f"{root}/kid")
        check("ls watch fires CHILD_EVENT", cli.expect(rf"^Watcher CHILD_EVENT state = CONNECTED_STATE for path {root}$", mark) is not None, cli.output_since(mark))
        run_expect(cli, "wexists on missing node", f"wexists {root}/new", rf"Error -101 for {root}/new")
        mark = cli.mark()
        other.create(f"{root}/new")
        check("wexists watch fires CREATED_EVENT", cli.expect(rf"^Watcher CREATED_EVENT state = CONNECTED_STATE for path {root}/new$", mark) is not None, cli.output_since(mark))
        mark = cli.send(f"exists {root}/new")
        run_expect(cli, "sync", f"sync {root}", rf"^\[{root}\]: rc = 0$")
        check("exists on present node prints no error", "Error" not in cli.output_since(mark), cli.output_since(mark))
        mark = cli.mark()
        other.delete(f"{root}/new")
        check("exists watch fires DELETED_EVENT", cli.expect(rf"^Watcher DELETED_EVENT state = CONNECTED_STATE for path {root}/new$", mark) is not None, cli.output_since(mark))

        run_expect(cli, "delete non-empty -> -111", f"delete {root}", rf"^{root}: rc = -111$")
        run_expect(cli, "delete", f"delete {root}/kid", rf"^{root}/kid: rc = 0$")
        check("delete visible to other client", other.exists(f"{root}/kid") is None)
        run_expect(cli, "delete missing -> -101", f"delete {root}/kid", rf"^{root}/kid: rc = -101$")

        other.create(f"{root}/secret", b"s3", acl=[make_digest_acl("carol", "pw", all=True)])
        run_expect(cli, "get without auth -> -102 (NoAuth)", f"get {root}/secret", rf"^{root}/secret: rc = -102$")
        mark = cli.send("addauth digest carol:pw")
        run_expect(cli, "get after addauth", f"get {root}/secret", rf"^{root}/secret: rc = 0$", r"^s3$")
        run_expect(cli, "async get", f"aget {root}/c2", rf"^{root}/c2: rc = 0$", r"^changed$")
    finally:
        cli.close()
    check("quit closes the session: ephemeral gone", other.exists(f"{root}/e") is None)
    check("cli_mt exited cleanly", cli.proc.returncode == 0, f"exit code {cli.proc.returncode}")
    other.stop()
    other.close()
    return finish()


if __name__ == "__main__":
    sys.exit(main())

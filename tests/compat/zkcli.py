#!/usr/bin/python3
"""Compatibility suite: Apache ZooKeeper's Java shell zkCli (ZooKeeperMain, Debian `zookeeper`).

usage: /usr/bin/python3 tests/compat/zkcli.py HOST:PORT

JVM start-up is the slow part, so the commands are fed in a few batches on stdin (one JVM and one
session per batch) and the printed output is matched line by line afterwards. zkCli prints watch
notifications as "WATCHER::" followed by "WatchedEvent state:SyncConnected type:... path:...".
Prints one line per check, then "N passed, N failed".
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

ZK_JAR = "/usr/share/java/zookeeper.jar"
# zookeeper.jar's manifest names most dependencies; logging binding and netty extras are added.
EXTRA_JARS = [
    "zookeeper-jute", "slf4j-api", "slf4j-log4j12", "log4j-1.2", "netty-resolver", "netty-codec",
    "netty-transport-native-unix-common", "commons-cli",
]
TIMEOUT_S = 60

from checks import check, finish  # noqa: E402  (shared by every suite)


class Batch:
    def __init__(self, output, code):
        self.output = output
        self.code = code
        self.lines = output.splitlines()

    def has_line(self, name, line):
        check(name, line in self.lines, f"no line {line!r} in output:\n{self.output}")

    def has(self, name, pattern):
        check(name, re.search(pattern, self.output, re.M) is not None, f"no match for {pattern!r} in output:\n{self.output}")

    def lacks(self, name, pattern):
        check(name, re.search(pattern, self.output, re.M) is None, f"unexpected match for {pattern!r}:\n{self.output}")


def run_batch(hosts, commands, logdir):
    classpath = ":".join([logdir, ZK_JAR] + [f"/usr/share/java/{j}.jar" for j in EXTRA_JARS if os.path.exists(f"/usr/share/java/{j}.jar")])
    proc = subprocess.run(
        ["java", "-Xmx256m", f"-Dlog4j.configuration=file:{logdir}/log4j.properties", "-cp", classpath,
         "org.apache.zookeeper.ZooKeeperMain", "-server", hosts],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return Batch(proc.stdout + proc.stderr, proc.returncode)


def event(type_, path):
    return f"WatchedEvent state:SyncConnected type:{type_} path:{path}"


def main():
    if len(sys.argv) != 2:
        print("usage: zkcli.py HOST:PORT", file=sys.stderr)
        return 2
    hosts = sys.argv[1]
    if not os.path.exists(ZK_JAR) or not shutil.which("java"):
        print(f"FAIL java or {ZK_JAR} (Debian zookeeper package) missing; run scripts/test to install")
        print("0 passed, 1 failed")
        return 1
    r = f"/zkcli_{os.getpid()}"
    with tempfile.TemporaryDirectory() as logdir:
        with open(f"{logdir}/log4j.properties", "w") as f:
            f.write(
                "log4j.rootLogger=ERROR, STDERR\n"
                "log4j.appender.STDERR=org.apache.log4j.ConsoleAppender\n"
                "log4j.appender.STDERR.Target=System.err\n"
                "log4j.appender.STDERR.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.STDERR.layout.ConversionPattern=%p %c{1} %m%n\n"
            )
        a = run_batch(hosts, [
            f"create {r} hello",
            f"create -s {r}/s- x",
            f"create -e {r}/e",
            f"create -e {r}/e2 eph",
            f"create -c {r}/cont",
            f"create -t 60000 {r}/ttl",
            f"create {r}",
            f"create {r}/none/x",
            f"ls {r}",
            f"ls -s {r}",
            f"create {r}/cont/a",
            f"ls -R {r}",
            f"get -s {r}",
            f"stat {r}/s-0000000000",
            f"set -v 0 {r} world",
            f"set -v 0 {r} again",
            f"get {r}",
            f"delete -v 5 {r}/e",
            f"create {r}/tree",
            f"create {r}/tree/a",
            f"create {r}/tree/a/b",
            f"deleteall {r}/tree",
            f"ls {r}/tree",
            f"setquota -n 10 {r}",
            f"listquota {r}",
            f"delquota -n {r}",
            f"getAcl {r}",
            "addauth digest u:p",
            f"create {r}/sec secret",
            f"setAcl {r}/sec auth:u:p:cdrwa",
            f"getAcl {r}/sec",
            "whoami",
            f"getEphemerals {r}",
            f"getAllChildrenNumber {r}",
            f"get -w {r}/e",
            f"delete {r}/e",
            f"addWatch -m PERSISTENT_RECURSIVE {r}/pw",
            f"create {r}/pw",
            f"create {r}/pw/c",
            f"set {r}/pw/c data",
            f"ls -w {r}/cont",
            f"create {r}/cont/b",
            f"stat -w {r}/later",
            f"create {r}/later",
            f"get {r}/nope",
            "quit",
        ], logdir)
        a.has_line("connected event", "WatchedEvent state:SyncConnected type:None path:null")
        a.has_line("create persistent", f"Created {r}")
        a.has_line("create -s sequential name", f"Created {r}/s-0000000000")
        a.has_line("create -e", f"Created {r}/e")
        a.has_line("create -c", f"Created {r}/cont")
        a.has_line("create -t", f"Created {r}/ttl")
        a.has_line("create existing", f"Node already exists: {r}")
        a.has_line("create without parent", f"Node does not exist: {r}/none/x")
        a.has_line("ls sorted children", "[cont, e, e2, s-0000000000, ttl]")
        a.has("ls -s prints stat", r"^numChildren = 5$")
        a.has("ls -R lists subtree", rf"^{r}/cont/a$")
        a.has("get -s data", r"^hello$")
        a.has("get -s dataLength", r"^dataLength = 5$")
        a.has("stat cZxid hex", r"^cZxid = 0x[0-9a-f]+$")
        a.has("stat ephemeralOwner", r"^ephemeralOwner = 0x0$")
        a.has("stat dataVersion", r"^dataVersion = 0$")
        a.has_line("set -v stale version", f"version No is not valid : {r}")
        a.has_line("get after set -v", "world")
        a.has_line("delete -v stale version", f"version No is not valid : {r}/e")
        a.has_line("deleteall removed subtree", f"Node does not exist: {r}/tree")
        a.has("listquota limits", rf"^Output quota for {r} count=10,bytes=-1")
        a.has("listquota stat", rf"^Output stat for {r} count=\d+,bytes=\d+")
        a.has("getAcl world", r"^'world,'anyone$")
        a.has("getAcl perms", r"^: cdrwa$")
        a.has_line("setAcl auth: expands to digest", "'digest,'u:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ=")
        a.has_line("whoami scheme header", "Auth scheme: User")
        a.has_line("whoami ip", "ip: 127.0.0.1")
        a.has_line("whoami digest", "digest: u")
        a.has("getEphemerals", rf"^\[({r}/e, {r}/e2|{r}/e2, {r}/e)\]$")
        a.has_line("getAllChildrenNumber counts all descendants", "7")
        a.has_line("get -w fires NodeDeleted", event("NodeDeleted", f"{r}/e"))
        a.has_line("persistent recursive: created", event("NodeCreated", f"{r}/pw"))
        a.has_line("persistent recursive: child created", event("NodeCreated", f"{r}/pw/c"))
        a.has_line("persistent recursive: data changed", event("NodeDataChanged", f"{r}/pw/c"))
        a.lacks("persistent recursive: no child events", rf"type:NodeChildrenChanged path:{r}/pw$")
        a.has_line("ls -w fires NodeChildrenChanged", event("NodeChildrenChanged", f"{r}/cont"))
        a.has_line("stat -w on missing node fires NodeCreated", event("NodeCreated", f"{r}/later"))
        a.has_line("get missing", f"Node does not exist: {r}/nope")
        a.has("WATCHER:: header printed", r"^WATCHER::$")
        a.has_line("quit closes the session", "WatchedEvent state:Closed type:None path:null")

        b = run_batch(hosts, [
            f"ls {r}",
            f"get {r}/sec",
            f"getAcl {r}/sec",
            f"delete {r}",
            f"set {r}/sec x",
            f"get -s {r}/s-0000000000",
            f"delete {r}/cont/a",
            f"delete {r}/cont/b",
            f"ls {r}/cont",
            f"get {r}/ttl",
        ], logdir)
        b.lacks("ephemerals gone after quit", rf"\be2\b")
        b.has_line("ls after reconnect", "[cont, later, pw, s-0000000000, sec, ttl]")
        b.has_line("NoAuth message", f"Insufficient permission : {r}/sec")
        # get, getAcl and set are all refused: getAcl needs READ or ADMIN on ZooKeeper 3.8.
        denied = b.lines.count(f"Insufficient permission : {r}/sec")
        check("getAcl without permission is refused too", denied == 3, f"{denied} refusals:\n{b.output}")
        b.has_line("delete non-empty", f"Node not empty: {r}")
        b.has("get -s sequential node", r"^dataVersion = 0$")
        b.has_line("container children removed", "[]")
        b.has_line("TTL node data is null", "null")
    return finish()


if __name__ == "__main__":
    sys.exit(main())

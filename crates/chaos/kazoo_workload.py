#!/usr/bin/env python3
"""A corral-chaos client task on kazoo (Debian python3-kazoo), a third-party client.

Runs the kazoo-set workload: creates /chaos/kset/e<elem> for unique elements, one at a time,
until its stdin closes (the runner's stop signal). Every operation is written to stdout as one
JSON line in the harness's history format (crates/chaos/src/history.rs), with times in ns
since the run's start on the monotonic clock shared with the runner:

  {"process": 7, "invoke_ns": 1, "complete_ns": 2, "outcome": "ok",
   "f": "kazoo_set_add", "elem": 30064771073}

outcome: "ok" acknowledged; "fail" the server answered with an error code (it did not happen);
"info" unknown (connection loss, session expiry, timeout: it may or may not have happened).
"""

import argparse
import json
import logging
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    InvalidACLError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)

# Server answers that prove the operation did not take effect (the Rust tasks' `classify`).
DEFINITE_FAILURES = (
    NoNodeError,
    NodeExistsError,
    BadVersionError,
    NotEmptyError,
    NoAuthError,
    InvalidACLError,
    NoChildrenForEphemeralsError,
    BadArgumentsError,
)
# Pause between two operations, as the Rust tasks do.
THINK_S = 0.01


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", required=True, help="connect string host:port,...")
    p.add_argument("--process", type=int, required=True, help="process id in the history")
    p.add_argument(
        "--start-monotonic-ns",
        type=int,
        required=True,
        help="CLOCK_MONOTONIC of the run's start, in ns",
    )
    p.add_argument("--session-timeout-ms", type=int, default=3000)
    p.add_argument("--op-timeout-ms", type=int, default=5000)
    p.add_argument("--root", default="/chaos/kset")
    args = p.parse_args()

    # kazoo logs every lost connection, which the nemesis causes on purpose.
    logging.basicConfig(level=logging.CRITICAL)
    stop = threading.Event()

    def wait_for_eof():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()

    def now_ns():
        return time.monotonic_ns() - args.start_monotonic_ns

    def emit(invoke_ns, outcome, elem, error=None):
        op = {
            "process": args.process,
            "invoke_ns": invoke_ns,
            "complete_ns": now_ns(),
            "outcome": outcome,
            "f": "kazoo_set_add",
            "elem": elem,
        }
        if error is not None:
            op["error"] = error
        print(json.dumps(op), flush=True)

    zk = KazooClient(
        hosts=args.hosts,
        timeout=args.session_timeout_ms / 1000.0,
        # Reconnect forever (the nemesis takes members away); single operations are not
        # retried: their outcome is what the history records.
        connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
    )
    op_timeout_s = args.op_timeout_ms / 1000.0
    while not stop.is_set():
        try:
            zk.start(timeout=5)
            break
        except Exception:  # noqa: BLE001 - any start failure is retried until stopped
            time.sleep(0.2)

    n = 0
    while not stop.is_set():
        n += 1
        # Unique across the run: the process in the high bits, as in the Rust tasks.
        elem = (args.process << 32) | n
        t0 = now_ns()
        try:
            zk.create_async("%s/e%d" % (args.root, elem), b"").get(timeout=op_timeout_s)
            emit(t0, "ok", elem)
        except DEFINITE_FAILURES as e:
            emit(t0, "fail", elem, type(e).__name__)
        except Exception as e:  # noqa: BLE001 - anything else leaves the outcome unknown
            emit(t0, "info", elem, type(e).__name__ or "unknown")
        time.sleep(THINK_S)

    try:
        zk.stop()
        zk.close()
    except Exception:  # noqa: BLE001 - the history is already written
        pass


if __name__ == "__main__":
    main()

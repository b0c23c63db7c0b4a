"""The pass/fail bookkeeping every compatibility suite shares: one line per check, and the
closing `N passed, N failed` line test runners read."""

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}: {detail}", flush=True)


def finish():
    """Prints the summary line; returns the process exit status."""
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0

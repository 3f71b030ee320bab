"""Does a worker's memory stay flat? Drive 100,000 attempts through one worker process, sample its RSS.

The worker is ``bench/worker.py`` (``open_engine(...).run(stop)``, the ``provision worker`` loop)
against the shared fake API; this process starts attempts through ``Engine.start`` (quick flow:
NEW -> PROVISIONED with one POST /instances, or ``--flow oauth1`` for the full flow with callbacks),
keeping at most ``--backlog`` attempts unfinished, and prints the worker's RSS every ``--every``
finished attempts. Exit status 1 if the last sample exceeds ``--limit-mb``.

    python bench/memory.py [-n 100000] [--pg URL] [--flow quick|oauth1]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import children  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from engine_bench import BASE_PATH, START, fresh_db, make_engine, provider_redirect  # noqa: E402

from states.model import State  # noqa: E402

QUICK_TOKENS = {"oauth.user.token": "t", "oauth.user.token.secret": "ts"}
QUICK = dict(element="quickbooks", flow="quick", api_key="k", api_secret="s")


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--flow", choices=["quick", "oauth1"], default="quick")
    ap.add_argument("--api", help="base URL of a running fake_elements.py (default: spawn one)")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL database URL (dropped and recreated)")
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared" / "bench"))
    ap.add_argument("--backlog", type=int, default=1000, help="most attempts unfinished at a time")
    ap.add_argument("--every", type=int, default=5000, help="sample RSS every this many finished attempts")
    ap.add_argument("--limit-mb", type=float, default=100.0)
    a = ap.parse_args()
    os.environ.setdefault("PROVISION_SECRET_KEY", Fernet.generate_key().decode())
    sys.path.insert(0, a.shared)
    import common

    fake, api = (None, a.api) if a.api else common.spawn_fake_api()
    db_url = fresh_db(a.pg, "memory")
    driver = make_engine(db_url, api)  # migrates the schema
    env = {**os.environ, "PROVISION_POLL_SECONDS": "0.05"}
    worker = subprocess.Popen([sys.executable, str(HERE / "worker.py"), db_url, api + BASE_PATH], env=env)
    samples: list[tuple[int, float, float]] = []
    t0 = time.monotonic()
    started = done = 0
    try:
        time.sleep(1.0)
        print(f"worker pid {worker.pid}: RSS at start {rss_mb(worker.pid):.1f} MiB", flush=True)
        print("finished   seconds   worker RSS MiB", flush=True)
        next_sample = 0
        while done < a.n:
            while started < a.n and started - done < a.backlog:
                if a.flow == "quick":  # each its own company: a live attempt holds its realm
                    config = {**QUICK_TOKENS, "quickbooks.realm.id": str(4620816365 + started)}
                    driver.start(name=f"mem-{started}", config=config, **QUICK)
                else:
                    driver.start(name=f"mem-{started}", **START)
                started += 1
            if a.flow == "oauth1":
                for att in driver.list(State.REDIRECTED, limit=a.backlog):
                    driver.handle_callback(provider_redirect(driver.redirect_url(att) or ""))
            time.sleep(0.05)
            done = driver.counts().get("PROVISIONED", 0)
            if done >= next_sample or done >= a.n:  # the last reading, whatever -n is
                samples.append((done, time.monotonic() - t0, rss_mb(worker.pid)))
                print(f"{done:>8} {samples[-1][1]:>9.1f} {samples[-1][2]:>12.1f}", flush=True)
                next_sample = done - done % a.every + a.every
        counts = driver.counts()
        assert counts == {"PROVISIONED": a.n}, counts
    finally:
        children.stop([worker], what="worker")
        driver.close()
        if fake is not None:
            fake.terminate()
    first = next(s for s in samples if s[0] >= min(a.every, a.n))
    last = samples[-1]
    print(f"RSS after {first[0]} attempts {first[2]:.1f} MiB, after {last[0]}: {last[2]:.1f} MiB "
          f"({last[0] / last[1]:.0f} attempts/s); limit {a.limit_mb:g} MiB: "
          f"{'OK' if last[2] < a.limit_mb else 'EXCEEDED'}")
    sys.exit(0 if last[2] < a.limit_mb else 1)


if __name__ == "__main__":
    main()

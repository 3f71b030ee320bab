"""Does finding and claiming due renewals cost what the due work costs, not what the table holds?

Fills SQLite files with N PROVISIONED attempts (default 10,000 and 1,000,000) whose renewals are
spread over the coming year, 1,000 of them due now, then in a fresh process per size measures one
claim of the due batch (what ``Engine.tick`` does before running steps) and the process's memory.
Prints a table and the 1M/10k ratios measured in the same run.

    python bench/renewal_scale.py [--sizes 10000 1000000] [--due 1000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
KEY = "0" * 43 + "="  # fixed Fernet key: the blobs are empty anyway


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fill(path: str, size: int, due: int) -> None:
    """Create the schema through the real migration, then bulk-insert with sqlite3 for speed."""
    from engine.wiring import open_repository

    if os.path.exists(path):
        return
    repo = open_repository(f"sqlite:///{path}", environ={"PROVISION_SECRET_KEY": KEY})
    repo.engine.dispose()
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    year = 365 * 86400
    batch = []
    for i in range(size):
        # The first `due` attempts are due now; the rest spread over the next year.
        at = NOW - timedelta(seconds=1 + i) if i < due else NOW + timedelta(seconds=1 + (i * 7919) % year)
        batch.append((str(uuid.UUID(int=i)), "quickbooks", "oauth2", f"a{i}", "[]", "PROVISIONED", 3, 3, 0,
                      NOW.strftime(fmt), NOW.strftime(fmt), at.strftime(fmt), 0, 0))
        if len(batch) == 50_000:
            conn.executemany(
                "INSERT INTO attempts (id, element_key, flow, name, tags, state, version, history_seq,"
                " runs, created_at, updated_at, next_run_at, failures, renewals)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                batch,
            )
            batch.clear()
    if batch:
        conn.executemany(
            "INSERT INTO attempts (id, element_key, flow, name, tags, state, version, history_seq,"
            " runs, created_at, updated_at, next_run_at, failures, renewals)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            batch,
        )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def measure(path: str, due: int, repeat: int) -> dict[str, float]:
    """In this (fresh) process: claim the due batch `repeat` times (each on a fresh copy's state)."""
    from engine.wiring import open_repository

    repo = open_repository(f"sqlite:///{path}", environ={"PROVISION_SECRET_KEY": KEY})
    base_rss = rss_mb()
    times = []
    for r in range(repeat):
        with repo.engine.begin() as conn:  # release earlier claims so each repeat claims the same work
            conn.exec_driver_sql("UPDATE attempts SET lease_owner=NULL, lease_expires_at=NULL "
                                 "WHERE lease_owner IS NOT NULL")
        t0 = time.perf_counter()
        got = repo.claim_due(NOW, f"bench-{r}", NOW + timedelta(minutes=5), due)
        times.append(time.perf_counter() - t0)
        assert len(got) == due, len(got)
    return {
        "claim_ms": statistics.median(times) * 1000,
        "rss_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - base_rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--due", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/provision-bench")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.due, args.repeat)))
        return
    os.makedirs(args.dir, exist_ok=True)
    results = {}
    for size in args.sizes:
        path = os.path.join(args.dir, f"renewals-{size}-{args.due}.db")
        t0 = time.perf_counter()
        fill(path, size, args.due)
        print(f"filled {size:,} attempts in {time.perf_counter() - t0:.1f}s ({path})", file=sys.stderr)
    for size in args.sizes:  # measure after all fills, each in a fresh process
        path = os.path.join(args.dir, f"renewals-{size}-{args.due}.db")
        out = subprocess.run([sys.executable, __file__, "--due", str(args.due), "--repeat", str(args.repeat),
                              "--child", path, str(size)], capture_output=True, text=True, check=True)
        results[size] = json.loads(out.stdout.strip().splitlines()[-1])
    print("\n| attempts in table | due claimed | claim (median ms) | worker RSS (MB) "
          "| RSS growth in claim (MB) |")
    print("|---|---|---|---|---|")
    for size, r in results.items():
        print(f"| {size:,} | {args.due:,} | {r['claim_ms']:.1f} | {r['rss_mb']:.1f} "
              f"| {r['rss_growth_mb']:.1f} |")
    if len(results) >= 2:
        small, big = min(results), max(results)
        print(
            f"\nratio {big:,} / {small:,} rows: "
            f"claim time x{results[big]['claim_ms'] / results[small]['claim_ms']:.2f}, "
            f"RSS x{results[big]['rss_mb'] / results[small]['rss_mb']:.2f} (table is x{big / small:.0f})"
        )


if __name__ == "__main__":
    main()

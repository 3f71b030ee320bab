"""How long one console page takes on 100,000 attempts (SQLite file), per filter.

    python bench/console_query.py [--rows 100000]

Seeds a fresh SQLite file in bulk (one executemany), then times ``console_query.read_page`` (one
keyset query with a LIMIT plus one ``COUNT(*)``) for each filter, median of 5 runs. Prints figures
only; nothing here is asserted (tests/web/test_console_scale.py checks correctness).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.fernet import Fernet

from engine import Engine, FakeClock
from engine.clients.elements import ElementsClient
from engine.config import ClientSettings
from engine.web.console_query import AttemptQuery, read_page
from engine.wiring import open_repository
from persistence.schema import attempts

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
STATES = ("PROVISIONED", "PROVISIONED", "PROVISIONED", "FAILED", "NEW", "REDIRECTED")
QUERIES = {"no filter": {}, "state=FAILED": {"state": "FAILED"}, "customer (oldest rows)": {"customer": "c0"},
           "reason": {"reason": "user_denied"}, "view=attention": {"view": "attention"},
           "view=retrying": {"view": "retrying"}, "search (name)": {"search": "name 4242"},
           "age=gt7d": {"age": "gt7d"}}


def seed(engine: Engine, rows: int) -> None:
    """``rows`` attempts, one second apart; customer c0 owns only the 20 oldest."""
    batch = []
    for n in range(rows):
        state = STATES[n % len(STATES)]
        at = NOW - timedelta(days=30) + timedelta(seconds=n)
        batch.append({"id": str(uuid.uuid4()), "element_key": "quickbooks", "flow": "oauth2",
                      "name": f"name {n}", "tags": [], "state": state, "version": 1, "history_seq": 1,
                      "runs": 1, "created_at": at, "updated_at": at, "renewals": 0,
                      "failures": 2 if state == "NEW" and n % 4 == 0 else 0,
                      "failure_reason": "user_denied" if state == "FAILED" else None,
                      "customer": "c0" if n < 20 else f"c{1 + n % 500}"})
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.insert(), batch)


def main() -> None:
    """Seed, then print one line per filter: median milliseconds per page, rows shown, total."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    rows = parser.parse_args().rows
    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    repo = open_repository(f"sqlite:///{folder / 'p.db'}", migrate=True,
                           environ={"PROVISION_SECRET_KEY": Fernet.generate_key().decode()})
    client = ElementsClient(ClientSettings(base_url="http://127.0.0.1:9/elements/api-v2", user_secret="-",
                                           org_secret="-"))
    engine = Engine(repo, client, clock=FakeClock(NOW))
    started = time.perf_counter()
    seed(engine, rows)
    print(f"seeded {rows} attempts in {time.perf_counter() - started:.1f} s ({folder / 'p.db'})")
    for label, args in QUERIES.items():
        query = AttemptQuery.from_args(args)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            page = read_page(engine, query)
            times.append(time.perf_counter() - t0)
        print(f"{label:<24} {statistics.median(times) * 1000:8.1f} ms/page  {len(page.rows):>3} shown "
              f"of {page.total}")
    engine.close()


if __name__ == "__main__":
    main()

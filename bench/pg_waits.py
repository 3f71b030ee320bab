"""What PostgreSQL's busy backends wait for during a run: the bound of many workers on one database.

Samples ``pg_stat_activity`` of one database every ``--interval`` seconds (default 0.005) and counts,
over the backends running a statement (``state = 'active'``), what each was doing: on CPU (no wait
event), waiting for the WAL flush of a commit (``IO/WALSync``, ``IO/WALWrite``), for an advisory
lock (``Lock/advisory``: the events outbox's commit lock, migration 0004), for a row lock, or for
something else. A share is the fraction of those samples; "busy backends" is their mean number.

Why: until migration 0012 every transaction that wrote a transition took the events outbox's
lock in its COMMIT and held it through the WAL flush (so that the feed's order was the commit
order). Such commits flushed one after another instead of sharing a flush, and this script found
it: ``Lock/advisory`` with ``IO/WALSync`` dominating the samples said that lock, not the cores,
bounded the run. Since 0012 the same samples show ``WAL flush (shared)``, commits riding on one
flush. ``bench/scale.py`` samples every run with it.

    python bench/pg_waits.py postgresql+psycopg://postgres@127.0.0.1:5432/bench_engine --seconds 15
"""
from __future__ import annotations

import argparse
import collections
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa

#: (wait_event_type, wait_event) -> the class a sample counts under; anything else is "other".
CLASSES = {
    (None, None): "on CPU",
    ("IO", "WALSync"): "WAL flush",
    ("IO", "WALWrite"): "WAL flush",
    # Waiting for a flush another backend is doing, which will cover this commit too: group commit.
    ("LWLock", "WALWrite"): "WAL flush (shared)",
    ("Lock", "advisory"): "advisory lock (events outbox)",
    ("Lock", "transactionid"): "row lock",
    ("Lock", "tuple"): "row lock",
    ("Client", "ClientRead"): "client (between protocol messages)",
}
_QUERY = sa.text(
    "SELECT query, wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE datname = :db AND state = 'active' AND pid <> pg_backend_pid()")


def statement_kind(query: str) -> str:
    """A short, stable name of a statement: its first words, literals and parameters dropped."""
    text = re.sub(r"\s+", " ", query).strip()
    text = re.sub(r"\$\d+|'[^']*'|\b\d+\b", "?", text)
    return text[:60]


@dataclass
class Waits:
    """Counts of active-backend samples by wait class and by (statement, wait class)."""

    polls: int = 0
    by_class: collections.Counter[str] = field(default_factory=collections.Counter)
    by_statement: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def add(self, query: str, wait_type: str | None, wait_event: str | None) -> None:
        """Count one active backend seen in one poll."""
        kind = CLASSES.get((wait_type, wait_event), f"other ({wait_type}/{wait_event})")
        self.by_class[kind] += 1
        self.by_statement[(statement_kind(query), kind)] += 1

    @property
    def samples(self) -> int:
        """Active backends seen, summed over the polls."""
        return sum(self.by_class.values())

    def shares(self) -> dict[str, float]:
        """Each wait class's fraction of the active-backend samples."""
        total = self.samples or 1
        return {k: round(v / total, 3) for k, v in self.by_class.most_common()}

    def busy_backends(self) -> float:
        """How many backends were running a statement, on average over the polls."""
        return self.samples / self.polls if self.polls else 0.0

    def summary(self) -> dict[str, object]:
        """The figures a RESULT line carries: busy backends on average and the class shares."""
        return {"polls": self.polls, "busy_backends": round(self.busy_backends(), 2), "shares": self.shares()}

    def report(self, top: int = 12) -> str:
        """The shares, then the statements that were most often active, with what they waited for."""
        total = self.samples or 1
        lines = [f"{self.polls} polls, {self.busy_backends():.2f} busy backends on average"]
        lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in self.by_class.most_common()]
        lines.append("most often active:")
        lines += [f"  {100 * v / total:5.1f}%  {kind:32s} {stmt}" for (stmt, kind), v in
                  self.by_statement.most_common(top)]
        return "\n".join(lines)


@contextmanager
def sampling(url: str, interval: float = 0.005) -> Iterator[Waits]:
    """Sample the database of ``url`` from a thread while the block runs; the counts fill ``Waits``."""
    waits = Waits()
    stop = threading.Event()
    db = sa.make_url(url).database
    engine = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")

    def run() -> None:
        with engine.connect() as conn:
            while not stop.is_set():
                for query, wait_type, wait_event in conn.execute(_QUERY, {"db": db}):
                    waits.add(query or "", wait_type, wait_event)
                waits.polls += 1
                stop.wait(interval)

    thread = threading.Thread(target=run, name="pg-waits", daemon=True)
    thread.start()
    try:
        yield waits
    finally:
        stop.set()
        thread.join(10)
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("url", help="the database to watch, e.g. postgresql+psycopg://postgres@127.0.0.1/bench")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.005)
    args = ap.parse_args()
    with sampling(args.url, args.interval) as waits:
        time.sleep(args.seconds)
    print(waits.report())


if __name__ == "__main__":
    main()

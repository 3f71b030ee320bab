"""Test helper, not a test: ``provision worker`` whose local clock is off by ``argv[1]`` seconds.

``python skewed_worker.py 60 --concurrency 5`` runs the CLI's worker with ``engine.clock.utcnow``
shifted by 60 s, as on a host whose clock is wrong. The shift is applied before the engine is
imported, so every local reading is skewed; it exists only here (no product setting does this).
"""
from __future__ import annotations

import sys
from datetime import datetime, timedelta

import engine.clock


def main() -> int:
    offset = timedelta(seconds=float(sys.argv[1]))
    real = engine.clock.utcnow

    def skewed() -> datetime:
        return real() + offset

    engine.clock.utcnow = skewed
    from engine.cli.main import main as provision  # after the shift: it binds the skewed clock

    return provision(["worker", *sys.argv[2:]])


if __name__ == "__main__":
    sys.exit(main())

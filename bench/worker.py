"""A benchmark worker process: ``open_engine(DB_URL).run(stop)`` against BASE_URL until SIGTERM.

Same loop as ``provision worker``; PROVISION_* variables (poll interval, batch size) apply.

    python bench/worker.py DB_URL BASE_URL [--concurrency N]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.clients.elements import ElementsClient  # noqa: E402
from engine.config import client_settings_from_env, engine_settings_from_env  # noqa: E402
from engine.signals import stop_on_signals  # noqa: E402
from engine.wiring import open_engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db_url")
    ap.add_argument("base_url")
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    client = ElementsClient(client_settings_from_env({}, base_url=args.base_url))
    engine = open_engine(args.db_url, client=client, migrate=False,
                         settings=engine_settings_from_env(concurrency=args.concurrency))
    stop = threading.Event()

    def on_stop() -> None:
        stop.set()
        engine.wake()

    profile_to = os.environ.get("BENCH_WORKER_PROFILE")  # cProfile stats file, for bench/README.md
    try:
        with stop_on_signals(on_stop):  # as `provision worker` does (not a handler of its own)
            if profile_to:
                cProfile.runctx("engine.run(stop)", globals(), {"engine": engine, "stop": stop},
                                f"{profile_to}.{os.getpid()}")
            else:
                engine.run(stop)
    finally:
        engine.close()


if __name__ == "__main__":
    main()

"""CPU per platform call: the engine's client against a bare ``requests.Session.get``, same URL, same run.

    python bench/http_client_cost.py [-n 3000] [--reps 2]

Both call ``GET /elements/{key}/oauth/url`` of ``bench/fake_api.py`` (forked on a free port) with
the same query, one call after another on one keep-alive connection: ``ElementsClient.oauth_url``
(the engine's path: a prepared request, the deadline adapter, the capped body read, the JSON
decoding and the checks of the answer) and ``requests.Session.get(...).json()``. CPU is this
process's ``time.process_time()`` (the fake's is not included); wall time includes waiting for
the fake. The two alternate ``--reps`` times after a warm-up, and the table gives each run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import fake_api  # noqa: E402
import pg_local  # noqa: E402
import requests  # noqa: E402

from engine.clients.elements import ElementsClient  # noqa: E402
from engine.config import client_settings_from_env  # noqa: E402

QUERY = {"apiKey": "key", "apiSecret": "secret", "callbackUrl": "http://127.0.0.1/cb", "requestToken": "t"}


def timed(call: Callable[[], object], n: int) -> tuple[float, float]:
    """(ms of CPU, ms of wall time) per call over ``n`` calls."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    return 1000 * (time.process_time() - c0) / n, 1000 * (time.perf_counter() - w0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="calls per run")
    ap.add_argument("--reps", type=int, default=2, help="alternating runs of each")
    args = ap.parse_args()
    port = pg_local.free_port()
    pids = fake_api.serve(port, 1)
    try:
        fake_api.wait_ready(port)
        api = f"http://127.0.0.1:{port}{fake_api.BASE_PATH}"
        client = ElementsClient(client_settings_from_env({}, base_url=api))
        session = requests.Session()
        calls: dict[str, Callable[[], object]] = {
            "ElementsClient.oauth_url": lambda: client.oauth_url("quickbooks", QUERY),
            "requests.Session.get + .json()": lambda: session.get(
                api + "/elements/quickbooks/oauth/url", params=QUERY, timeout=10).json(),
        }
        for call in calls.values():
            timed(call, 200)  # warm-up: connections, imports, caches
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
        for _ in range(args.reps):
            for name, call in calls.items():
                runs[name].append(timed(call, args.n))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    print("| call | ms CPU per call (runs) | ms wall per call (runs) |\n|---|---|---|")
    for name, figures in runs.items():
        print(f"| {name} | {', '.join(f'{c:.3f}' for c, _ in figures)} | "
              f"{', '.join(f'{w:.3f}' for _, w in figures)} |")
    print("RESULT " + json.dumps({"bench": "http_client_cost", "n": args.n,
                                  "cpu_ms": {k: [round(c, 4) for c, _ in v] for k, v in runs.items()},
                                  "wall_ms": {k: [round(w, 4) for _, w in v] for k, v in runs.items()}}))


if __name__ == "__main__":
    main()

"""The HTTP server's own CPU per request, for a trivial WSGI app, against idle keep-alive connections.

What ``provision serve``'s server (waitress) costs without the engine, beside granian (an HTTP
server in Rust, evaluated for issue 19 and not adopted: ``bench/README.md``, "serve_idle.py").
Each server runs a WSGI app that answers every request with a 303, as the callback receiver does,
in a process of its own; the script holds M idle keep-alive connections open (each made one
request), sends N requests one after another on one kept-alive connection (or, for the cell
"fresh", each on a new connection that asks to be closed), and reads the server's CPU from
``/proc`` (the process and its children). Granian is measured only when it is installed
(``pip install granian``; it is not a dependency of the project).

With ``--timeout-check S`` (2 by default) it also starts each server with an idle timeout of S
seconds and reports which connections it closes: one idle after a request, one that sent half a
request line, and one that never sent a byte (a half-open client, issue 16).

    python bench/server_overhead.py [-n 3000] [--idle 0 1000] [--servers waitress granian]
                                    [--threads 8] [--in-flight 1] [--timeout-check 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import http_load
import pg_local
import procstat

APP = '''def app(environ, start_response):
    start_response("303 See Other", [("Location", "/callback/progress"), ("Content-Length", "0")])
    return [b""]
'''


def start(server: str, folder: Path, port: int, timeout_s: int = 120,
          threads: int = 8) -> subprocess.Popen[bytes] | None:
    """The server on ``port`` serving ``folder/app.py``, closing connections idle for ``timeout_s``
    (waitress's ``channel_timeout``, granian's HTTP/1 header read timeout, at most 60 s); None when
    not installed."""
    if server == "waitress":
        # Waitress's per-request queue warning is silenced: provision serve's stand-in holds it back.
        code = ("import logging, waitress, app; logging.getLogger('waitress.queue').setLevel(logging.ERROR); "
                f"waitress.serve(app.app, host='127.0.0.1', port={port}, threads={threads}, "
                f"connection_limit=5000, asyncore_use_poll=True, channel_timeout={timeout_s}, "
                "cleanup_interval=1, _quiet=True)")
        command = [sys.executable, "-c", code]
    else:
        exe = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
        if not os.path.exists(exe):
            return None
        command = [exe, "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1", "--blocking-threads", str(threads), "--log-level", "error",
                   "--http1-header-read-timeout", str(min(timeout_s, 60) * 1000), "app:app"]
    proc = subprocess.Popen(command, cwd=folder)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{server} did not start")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian serves from a worker process)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == pid:
                pids += tree(int(entry))
    return pids


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the server and its worker processes (granian's would outlive their parent)."""
    for pid in reversed(tree(proc.pid)):
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    proc.wait()


def cell(port: int, pids: list[int], idle: int, n: int, fresh: bool, in_flight: int = 1) -> float:
    """Microseconds of the server's CPU per request with ``idle`` connections held open, the ``n``
    requests sent by ``in_flight`` clients at once (``http_load``)."""
    held = http_load.hold_idle("127.0.0.1", port, idle, status=303)  # the app's answer to any path
    try:
        time.sleep(0.5)  # let the server settle after the connections it accepted
        before = procstat.total_cpu(pids)
        paths = ["/callback?state=s&code=c"] * n
        http_load.spread("127.0.0.1", port, paths, fresh=fresh, in_flight=in_flight)
        return float(procstat.total_cpu(pids) - before) * 1e6 / n
    finally:
        for sock in held:
            sock.close()


def closes_after(port: int, request: bytes, wait_s: float) -> float | None:
    """Seconds until the server closed a connection that sent ``request`` and then nothing (None:
    still open after ``wait_s``)."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.settimeout(wait_s)
        began = time.monotonic()
        sock.sendall(request)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
        return time.monotonic() - began
    finally:
        sock.close()


def timeouts(servers: list[str], folder: Path, timeout_s: int) -> dict[str, dict[str, float | None]]:
    """Whether each server closes a kept-alive idle connection, a partial request and a connection
    that never sends a byte, with its idle timeout set to ``timeout_s``: seconds until it did, by
    server and kind (None: never)."""
    kinds = {"idle after a request": b"GET /x HTTP/1.1\r\nHost: s\r\n\r\n",
             "half a request line": b"GET /x HT", "no byte at all": b""}
    wait_s = timeout_s * 4 + 2
    print(f"\nidle timeout {timeout_s} s; a connection still open after {wait_s} s is reported as "
          "never closed")
    print("| server | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    found: dict[str, dict[str, float | None]] = {}
    for server in servers:
        port = pg_local.free_port()
        proc = start(server, folder, port, timeout_s)
        if proc is None:
            continue
        try:
            closed = [closes_after(port, request, wait_s) for request in kinds.values()]
            found[server] = dict(zip(kinds, closed, strict=True))
            print(f"| {server} | " + " | ".join("never" if c is None else f"closed after {c:.1f} s"
                                                 for c in closed) + " |", flush=True)
        finally:
            stop(proc)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="requests per cell")
    ap.add_argument("--idle", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--servers", nargs="+", default=["waitress", "granian"], choices=("waitress", "granian"))
    ap.add_argument("--threads", type=int, default=8,
                    help="request threads: waitress's threads, granian's blocking threads")
    ap.add_argument("--in-flight", type=int, default=1, help="clients sending at once (1: one after another)")
    ap.add_argument("--timeout-check", type=int, default=2, metavar="S",
                    help="also check which connections each server closes with an idle timeout of S "
                         "seconds (0: skip)")
    args = ap.parse_args()
    print(f"n={args.n} per cell, {args.in_flight} in flight, {args.threads} request threads; "
          f"{procstat.machine_line()}")
    print("| server | " + " | ".join(f"{m:,} idle" for m in args.idle) + " | fresh connection each |")
    print("|---|" + "---|" * (len(args.idle) + 1))
    figures: dict[str, dict[str, float]] = {}
    closes: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "app.py").write_text(APP)
        for server in args.servers:
            port = pg_local.free_port()
            proc = start(server, folder, port, threads=args.threads)
            if proc is None:
                print(f"| {server} | not installed (pip install {server}) |")
                continue
            try:
                time.sleep(0.5)
                pids = tree(proc.pid)
                cell(port, pids, 0, 200, False)  # warm-up
                cells = {str(m): cell(port, pids, m, args.n, False, args.in_flight) for m in args.idle}
                cells["fresh"] = cell(port, pids, 0, args.n, True, args.in_flight)
                figures[server] = cells
                row = " | ".join(f"{us:.0f} us" for us in cells.values())
                print(f"| {server} | {row} |", flush=True)
            finally:
                stop(proc)
        if args.timeout_check:
            closes = timeouts(args.servers, folder, args.timeout_check)
    print("RESULT " + json.dumps({"bench": "server_overhead", "n": args.n, "in_flight": args.in_flight,
                                  "threads": args.threads, "us_per_request": figures,
                                  "closed_after_s": closes}))


if __name__ == "__main__":
    main()

"""Client side of the receiver benchmarks (``serve_idle.py``, ``server_overhead.py``): idle
keep-alive connections held open, and GETs sent by K clients at once, each answered with the
receiver's 303 to its progress page.
"""
from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

#: Where the receiver sends a browser after a callback (the trivial app of server_overhead.py too).
PROGRESS = "/callback/progress"


def hold_idle(host: str, port: int, m: int, status: int = 200) -> list[socket.socket]:
    """``m`` connections that each made one request (``/healthz``, answered ``status``) and now say
    nothing, kept alive as a browser keeps one after its last page."""
    held = []
    try:
        for _ in range(m):
            sock = socket.create_connection((host, port))
            held.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
            if not sock.recv(4096).startswith(f"HTTP/1.1 {status}".encode()):
                raise RuntimeError(f"/healthz did not answer {status} on an idle connection's first request")
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def send(host: str, port: int, paths: Sequence[str], fresh: bool) -> None:
    """GET each of ``paths`` one after another on one kept-alive connection (or, with ``fresh``,
    each on a new connection that asks to be closed); each must be a 303 to the progress page."""
    conn = http.client.HTTPConnection(host, port)
    try:
        for path in paths:
            if fresh:
                conn.close()
                conn = http.client.HTTPConnection(host, port)
            conn.request("GET", path, headers={"Connection": "close"} if fresh else {})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 303 or PROGRESS not in (resp.getheader("Location") or ""):
                where = resp.getheader("Location")
                raise RuntimeError(f"not a 303 to the progress page: {resp.status} {where}")
    finally:
        conn.close()


def spread(host: str, port: int, paths: Sequence[str], *, fresh: bool, in_flight: int) -> float:
    """Send ``paths`` from ``in_flight`` clients at once (threads, each its share with ``send``);
    the seconds it took."""
    began = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        for done in [pool.submit(send, host, port, paths[i::in_flight], fresh) for i in range(in_flight)]:
            done.result()
    return time.perf_counter() - began

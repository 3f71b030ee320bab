"""A fast fake of what a renewal talks to: the provider's token endpoint and the platform's instances.

Same contract as the sandbox (``sandbox/``), reduced to the calls of the PROVISIONED step
(``states/renewal.py``):

  POST /_provider/oauth2/tokens/bearer   refresh-token grant -> {"access_token", "refresh_token", ...}
  PATCH|PUT|GET /elements/api-v2/instances/{id}   push the rotated tokens / read the instance
  GET /health

It runs as ``processes`` forked processes on one port (``SO_REUSEPORT``, the pattern of
``../shared/bench/fake_elements_multi.py``) so that it is not the bottleneck of a many-worker run.

    python bench/fake_provider.py --port 8766 --processes 4
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BASE_PATH = "/elements/api-v2"
TOKEN_PATH = "/_provider/oauth2/tokens/bearer"
_INSTANCE = re.compile(rf"^{BASE_PATH}/instances/(\d+)$")


class Handler(BaseHTTPRequestHandler):
    """Answers the renewal step's calls; every request on keep-alive HTTP/1.1."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, *args: Any) -> None:  # silent
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        form = self._body().decode(errors="replace")
        if self.path != TOKEN_PATH:
            return self._send(404, {"message": f"no route POST {self.path}"})
        if "grant_type=refresh_token" not in form or not self.headers.get("Authorization"):
            return self._send(400, {"error": "invalid_request"})
        return self._send(200, {"access_token": "at-" + secrets.token_hex(16),
                                "refresh_token": "rt-" + secrets.token_hex(16),
                                "token_type": "bearer", "expires_in": 3600,
                                "x_refresh_token_expires_in": 8_640_000})

    def _instance(self) -> None:
        body = self._body()
        match = _INSTANCE.match(self.path.split("?", 1)[0])
        if not match:
            return self._send(404, {"message": f"no route {self.command} {self.path}"})
        config = json.loads(body).get("configuration", {}) if body else {}
        return self._send(200, {"id": int(match.group(1)), "valid": True, "disabled": False,
                                "configuration": {k: "<set>" for k in config}})

    do_PATCH = do_PUT = _instance  # noqa: N815

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            return self._send(200, {"ok": True})
        return self._instance()


class ReuseServer(ThreadingHTTPServer):
    """A threaded server that shares its port with its siblings (``SO_REUSEPORT``)."""

    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def serve(port: int, processes: int) -> list[int]:
    """Fork ``processes`` servers on ``port``; returns their pids (the caller stops them)."""
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            ReuseServer(("127.0.0.1", port), Handler).serve_forever()
            os._exit(0)
        pids.append(pid)
    return pids


def wait_ready(port: int, timeout_s: float = 10.0) -> None:
    """Block until the fake answers on ``port``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    pids = serve(args.port, args.processes)
    print(f"fake provider: {args.processes} processes on http://127.0.0.1:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    sys.exit(0)


if __name__ == "__main__":
    main()

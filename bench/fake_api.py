"""A fast fake of the platform and the provider for the benchmarks, several processes on one port.

Same contract as the sandbox (``sandbox/``), reduced to the calls the benchmarks make: the OAuth1
flow of ``bench/engine_bench.py`` (as ``../shared/bench/fake_elements.py`` answers it) and the
PROVISIONED step of ``bench/renewals.py`` (``states/renewal.py``). Paths under ``/elements/api-v2``:

  GET  /elements/{key}/oauth/token   -> {"token", "secret"}
  GET  /elements/{key}/oauth/url     -> {"element", "oauthUrl"} (the caller's state in oauth_callback)
  POST /instances                    -> the new instance
  PATCH|PUT|GET /instances/{id}      -> the instance (renewal: push the rotated tokens)
  POST /_provider/oauth2/tokens/bearer   refresh-token grant -> {"access_token", "refresh_token", ...}
  GET /health

It runs as ``processes`` forked processes on one port (``SO_REUSEPORT``, the pattern of
``../shared/bench/fake_elements_multi.py``) so that it is not the bottleneck of a many-worker run.

    python bench/fake_api.py --port 8766 --processes 4
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

BASE_PATH = "/elements/api-v2"
TOKEN_PATH = "/_provider/oauth2/tokens/bearer"
_INSTANCE = re.compile(rf"^{BASE_PATH}/instances/(\d+)$")
_TOKEN = re.compile(rf"^{BASE_PATH}/elements/([\w-]+)/oauth/token$")
_URL = re.compile(rf"^{BASE_PATH}/elements/([\w-]+)/oauth/url$")
_ids = itertools.count(1000)  # each forked process restarts it at its own offset (serve)


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
        body = self._body()
        if self.path.split("?", 1)[0] == f"{BASE_PATH}/instances":
            req = json.loads(body or b"{}")
            iid = next(_ids)
            return self._send(200, {"id": iid, "name": req.get("name", f"instance-{iid}"),
                                    "token": secrets.token_hex(16), "valid": True, "disabled": False,
                                    "element": {"key": (req.get("element") or {}).get("key", "quickbooks")},
                                    "configuration": req.get("configuration", {})})
        form = body.decode(errors="replace")
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
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if _TOKEN.match(url.path):
            return self._send(200, {"token": "rt-" + secrets.token_hex(8), "secret": secrets.token_hex(8)})
        if match := _URL.match(url.path):
            # Like the platform, carry the caller's state inside oauth_callback, so that a benchmark
            # can build the provider's redirect from the oauthUrl alone (bench/engine_bench.py).
            callback = query.get("callbackUrl", "") + "?" + urlencode({"state": query.get("state", "")})
            oauth_url = "https://appcenter.example/Connect/Begin?" + urlencode(
                {"oauth_token": query.get("requestToken", ""), "oauth_callback": callback})
            return self._send(200, {"element": match.group(1), "oauthUrl": oauth_url})
        if url.path == "/health":
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
    global _ids
    pids = []
    for i in range(processes):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            _ids = itertools.count(1000 + i * 10_000_000)  # distinct instance ids per process
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
    print(f"fake API: {args.processes} processes on http://127.0.0.1:{args.port}", flush=True)
    # No handler (one that sets an event can deadlock on the event's lock: engine/signals.py);
    # the main thread has nothing else to do than wait for the signal itself.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    signal.sigwait(stop_signals)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    sys.exit(0)


if __name__ == "__main__":
    main()

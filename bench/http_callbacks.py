"""Callbacks over real HTTP: K ``provision serve`` processes, as the browser redirects would reach them.

``bench/engine_bench.py --callbacks http --receivers K`` (and ``bench/scale.py --callbacks http``)
deliver each attempt's provider redirect as a GET to one of K receiver processes, round robin,
instead of calling ``Engine.handle_callback`` in the driver. Each receiver is the product path:
``provision serve`` (waitress, ``engine.web.wsgi_server``) on its own port; a receiver that
answers anything but the 303 to the progress page (an applied callback) fails the run. The
receivers' CPU per callback (parse, guard statement, encryption, inbox row, HTTP) is what issue 19
asks to measure.
"""
from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import procstat
import requests

ROOT = Path(__file__).resolve().parent.parent
_PROVISION = "import sys; from engine.main import main; sys.exit(main(sys.argv[1:]))"


class Receivers:
    """K running ``provision serve`` processes on ``db_url``; ``deliver`` is thread-safe."""

    def __init__(self, k: int, db_url: str, env: Mapping[str, str]) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.urls: list[str] = []
        for _ in range(k):
            command = [sys.executable, "-c", _PROVISION, "serve", "--db", db_url, "--port", "0"]
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(env), cwd=ROOT)
            self.processes.append(proc)
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("serving callbacks on "):
                self.stop()
                raise RuntimeError(f"provision serve did not start (said {line.strip()!r})")
            self.urls.append(line.split(" on ", 1)[1].strip())  # http://127.0.0.1:PORT/callback
        self._next = itertools.count()
        self._local = threading.local()

    def deliver(self, redirect_url: str) -> None:
        """GET the redirect's query at the next receiver; raises unless it was applied (303 to progress).

        The 303 is not followed: the progress page is the browser's next, separate request, and
        right after the callback it says "Connecting..." until a worker has finished the attempt.
        """
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # loopback: no proxies
        url = self.urls[next(self._next) % len(self.urls)]
        resp = session.get(f"{url}?{urlsplit(redirect_url).query}", timeout=30, allow_redirects=False)
        if resp.status_code != 303 or "/callback/progress?t=" not in resp.headers.get("Location", ""):
            raise RuntimeError(f"receiver {url} answered {resp.status_code}: {resp.text[:200]}")

    def cpu_seconds(self) -> float:
        """CPU the receivers used so far."""
        return float(procstat.total_cpu(p.pid for p in self.processes))

    def stop(self) -> None:
        """Terminate the receivers (``provision serve`` finishes the request in flight)."""
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

"""Callbacks over real HTTP: the users' browsers as P processes, K ``provision serve`` receivers.

``bench/engine_bench.py --callbacks http --receivers K --browsers P`` (and ``bench/scale.py
--callbacks http``) deliver each attempt's provider redirect as a GET to one of K receiver
processes instead of calling ``Engine.handle_callback`` in the driver:

* the driver learns each consent URL from the event feed (``attempt.redirected``), as an
  application would, and hands it to one of P browser processes (``Browsers``, this module run as a
  script), a line on its stdin, round robin;
* a browser process builds the redirect the provider would send back (``provider_redirect``) and
  GETs it, from ``--threads`` threads, at the next receiver; it exits 1, naming the answer, unless
  the callback was applied (a 303 to the progress page; the 303 is not followed: the progress page
  is the browser's next, separate request);
* each receiver is the product path: ``provision serve`` (waitress, ``engine.web.wsgi_server``) on
  its own port. The receivers' CPU per callback (parse, guard statement, encryption, inbox row,
  HTTP) is what issue 19 asks to measure.

The browsers are separate processes because a client's GET costs about as much CPU as the
receiver's answer: sent from the driver, they made the driver the limit of the whole run (1.2 ms
of its CPU per attempt, about 800 attempts/s on one core, before any receiver or worker was busy).

    python bench/http_callbacks.py [--threads T] RECEIVER_URL...   # a browser process (stdin: URLs)
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import os
import queue
import secrets
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import children
import procstat

ROOT = Path(__file__).resolve().parent.parent
_PROVISION = "import sys; from engine.main import main; sys.exit(main(sys.argv[1:]))"
#: Browser processes when not given (``--browsers``): a quarter of the cores, 1 to 4.
DEFAULT_BROWSERS = max(1, min(4, (os.cpu_count() or 1) // 4))
#: Threads per browser process when not given (``--browser-threads``). The callbacks in flight are
#: browsers x threads, a closed loop: a run can go no faster than that many divided by one
#: callback's latency. Real users' redirects arrive open-loop, so the benchmark keeps enough in
#: flight that their number cannot be the limit. (A 16-core run at 4 x 4 in flight stopped near
#: 1,200/s; on another 16-core machine 4 or 16 per browser gave the same 2,000/s: it was the
#: first machine's speed, not the loop. The README's "How far does it scale" has both.)
DEFAULT_BROWSER_THREADS = 16


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp, resp.read()


def provider_redirect(oauth_url: str) -> str:
    """The browser redirect the provider would send back: ``<callbackUrl>?state=..&oauth_token=..``."""
    q = parse_qs(urlsplit(oauth_url).query)
    callback = q["oauth_callback"][0]  # the fake carries <callbackUrl>?state=<state> here
    extra = {"oauth_token": q["oauth_token"][0], "oauth_verifier": secrets.token_hex(6),
             # Each its own company: the engine refuses a second live connection of one realm.
             "realmId": str(4620000000000 + secrets.randbelow(10**12)), "dataSource": "QBO"}
    return callback + "&" + urlencode(extra)


class Receivers:
    """K running ``provision serve`` processes on ``db_url``; ``urls`` are their callback URLs."""

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

    def cpu_seconds(self) -> float:
        """CPU the receivers used so far."""
        return float(procstat.total_cpu(p.pid for p in self.processes))

    def stop(self) -> None:
        """Terminate the receivers (``provision serve`` finishes the request in flight)."""
        children.stop(self.processes, what="receiver")


class Browsers:
    """P browser processes (this module's ``main``), each delivering the redirects it is sent."""

    def __init__(self, p: int, threads: int, receiver_urls: list[str]) -> None:
        command = [sys.executable, __file__, "--threads", str(threads), *receiver_urls]
        self.processes = [subprocess.Popen(command, stdin=subprocess.PIPE, text=True) for _ in range(p)]
        self._next = itertools.count()

    def send(self, consent_urls: list[str]) -> None:
        """Hand each consent URL to the next browser, round robin (one write per browser)."""
        lines: list[list[str]] = [[] for _ in self.processes]
        for url in consent_urls:
            lines[next(self._next) % len(lines)].append(url + "\n")
        for proc, batch in zip(self.processes, lines, strict=True):
            if batch and proc.stdin is not None:
                proc.stdin.write("".join(batch))
                proc.stdin.flush()

    def failed(self) -> list[int]:
        """Exit codes of the browsers that stopped with an error (they print why)."""
        return [code for code in (p.poll() for p in self.processes) if code not in (None, 0)]

    def cpu_seconds(self) -> float:
        """CPU the browsers used so far."""
        return float(procstat.total_cpu(p.pid for p in self.processes))

    def stop(self) -> None:
        """Close their input: each finishes the redirects it holds, then exits."""
        for proc in self.processes:
            if proc.stdin is not None:
                proc.stdin.close()
        children.stop(self.processes, what="browser", terminate=False)


class Browser:
    """One user's browser: a kept-alive ``http.client`` connection per receiver.

    Not ``requests``: these processes play the users, whose browsers do not run on the measured
    machine, yet here they share its cores with the product. With ``requests.Session.get`` they
    spent 1.07-1.42 ms of CPU per callback on the 2-core development machine, about as much as
    the receiver's whole answer (and 0.7-1.2 ms on the 16-core machines of 2026-11-30); with the
    standard library's client, which ``requests`` itself sits on, 0.31-0.36 ms (``engine_bench.py
    --workers 1 --callbacks http``, N=2,500, 3 interleaved runs of each).
    """

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        # receiver URL -> (its connection, its path): the URL is parsed once, not per GET.
        self.connections: dict[str, tuple[http.client.HTTPConnection, str]] = {}

    def deliver(self, receiver: str, redirect_url: str) -> None:
        """GET the redirect's query at ``receiver``; raises unless it was applied (303 to progress)."""
        known = self.connections.get(receiver)
        reused = known is not None
        if known is None:
            where = urlsplit(receiver)
            known = self.connections[receiver] = (http.client.HTTPConnection(
                where.hostname or "127.0.0.1", where.port, timeout=self.timeout_s), where.path)
        conn, base = known
        path = f"{base}?{urlsplit(redirect_url).query}"
        try:
            resp, body = _get(conn, path)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            # The server had closed the kept-alive connection before this request (its idle
            # timeout): it never saw it. The same request on a new connection, as urllib3 does.
            conn.close()
            resp, body = _get(conn, path)
        location = resp.getheader("Location") or ""
        if resp.status != 303 or "/callback/progress?t=" not in location:
            raise RuntimeError(f"receiver {receiver} answered {resp.status}: {body[:200]!r}")


def main() -> None:
    """A browser process: consent URLs on stdin, one per line, until it closes."""
    ap = argparse.ArgumentParser(description="a browser process of bench/http_callbacks.py")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("receivers", nargs="+", help="callback URLs of provision serve processes")
    args = ap.parse_args()
    work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    turn = itertools.count(os.getpid())  # browsers start at different receivers

    def browse() -> None:
        browser = Browser()
        while (consent_url := work.get()) is not None:
            try:
                receiver = args.receivers[next(turn) % len(args.receivers)]
                browser.deliver(receiver, provider_redirect(consent_url))
            except Exception as exc:  # noqa: BLE001 - any failure fails the run, and says why
                print(f"browser {os.getpid()}: {exc}", file=sys.stderr, flush=True)
                os._exit(1)

    threads = [threading.Thread(target=browse) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for line in sys.stdin:
        if line.strip():
            work.put(line.strip())
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()

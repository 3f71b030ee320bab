"""``provision worker --metrics-port``: a real worker process serves /metrics, /healthz and /readyz on
its own loopback listener (issue 18 must-have 6); its step counters move as it works; /readyz turns
503 when the database goes away. SQLite and PostgreSQL (reached through a TCP proxy the test cuts)."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from scrapekit import get, samples

QUICK = ("start", "--element", "quickbooks", "--flow", "quick", "--api-key", "k", "--api-secret", "s",
         "--config", "oauth.user.token=tok", "--config", "oauth.user.token.secret=toksecret", "--config",
         "quickbooks.realm.id=1", "--sandbox-company")


class Proxy:
    """A TCP relay on 127.0.0.1 to ``target``; ``cut()`` closes it and every relayed connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """The database becomes unreachable: refuse new connections, break the open ones."""
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _metrics_url(worker: subprocess.Popen[str]) -> str:
    """The base URL from the worker's ``metrics on URL/metrics ...`` line on stderr."""
    assert worker.stderr is not None
    for _ in range(20):
        line = worker.stderr.readline()
        if line.startswith("metrics on "):
            return line.split()[2].removesuffix("/metrics")
        assert line, "the worker exited before listening"
    raise AssertionError("no 'metrics on' line")


def _wait_for_samples(url: str, ready: Any, timeout: float = 30) -> dict[Any, float]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(f"{url}/metrics")
        got = samples(body) if status == 200 else {}
        if ready(got):
            return got
        assert time.monotonic() < deadline, f"metrics never got there: {body[-2000:]}"
        time.sleep(0.2)


def _total(got: dict[Any, float], name: str) -> float:
    return sum(v for (n, _), v in got.items() if n == name)


@pytest.mark.slow
def test_worker_serves_metrics_health_and_readiness(cli: Any, db_url: str) -> None:
    proxy = None
    url = db_url
    if db_url.startswith("postgresql"):
        parsed = sa.make_url(db_url)
        proxy = Proxy((parsed.host or "127.0.0.1", parsed.port or 5432))
        url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    runner = type(cli)(cli.exe, url, {**cli.env, "PROVISION_POLL_SECONDS": "0.2"})
    if proxy is not None:
        runner("db", "upgrade")
    worker = runner.popen("worker", "--metrics-port", "0")
    try:
        base = _metrics_url(worker)
        assert base.startswith("http://127.0.0.1:")
        assert get(f"{base}/healthz") == (200, '{"status": "ok"}\n')
        assert get(f"{base}/readyz") == (200, '{"status": "ready"}\n')
        assert get(f"{base}/elsewhere")[0] == 404
        first = samples(get(f"{base}/metrics")[1])
        assert _total(first, "provision_transitions_total") == 0

        attempt_id = runner(*QUICK, "--name", "Metered").stdout.strip()
        provisioned = ("provision_queue_depth", (("state", "PROVISIONED"),))
        live = ("provision_live_workers", (("role", "worker"),))
        got = _wait_for_samples(base, lambda s: s.get(provisioned) == 1 and s.get(live) == 1)
        advanced = (("outcome", "advanced"), ("trigger", "quick_provision"))
        assert got[("provision_transitions_total", advanced)] == 1
        assert got[("provision_step_duration_seconds_count", (("state", "NEW"),))] == 1
        assert got.get(("provision_due_backlog", (("state", "NEW"),)), 0) == 0
        assert attempt_id not in get(f"{base}/metrics")[1]

        if proxy is not None:
            proxy.cut()
            status, body = get(f"{base}/readyz")
            assert status == 503
            assert json.loads(body) == {"status": "not ready", "problem": "database unreachable"}
            assert get(f"{base}/healthz")[0] == 200  # the process is up all the same
            assert get(f"{base}/metrics")[0] == 200  # the counters; the gauges are left out
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        cli.outputs += [out, err]
    if proxy is None:
        assert worker.returncode == 0, err
        assert "Traceback" not in err


def test_metrics_listener_refuses_exposure_bad_ports_and_a_missing_extra(cli: Any) -> None:
    exposed = cli("worker", "--once", "--metrics-host", "0.0.0.0", "--metrics-port", "0", expect=2)
    assert "--metrics-host" in exposed.stderr and "not a loopback address" in exposed.stderr
    assert "--metrics-allow-remote" in exposed.stderr
    bad = cli("worker", "--once", "--metrics-port", "70000", expect=2)
    assert "--metrics-port" in bad.stderr
    env_bad = subprocess.run(cli.argv("worker", "--once"), capture_output=True, text=True, timeout=30,
                             env={**cli.env, "PROVISION_WORKER_METRICS_PORT": "0"})
    assert env_bad.returncode == 2 and "PROVISION_WORKER_METRICS_PORT" in env_bad.stderr
    # The same command in a Python where prometheus-client cannot be imported: exit 1, the extra named.
    code = ("import sys; sys.modules['prometheus_client'] = None; from engine.main import main; "
            f"sys.exit(main(['--db', {cli.db_url!r}, 'worker', '--once', '--metrics-port', '0']))")
    missing = subprocess.run([sys.executable, "-c", code], env=cli.env, capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 1, missing.stderr
    assert "metrics" in missing.stderr and "element-provisioner[metrics]" in missing.stderr

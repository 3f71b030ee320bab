"""The foreground CLI: option parsing, bad values, the banner line and clean exit on signals."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from sandbox import Sandbox, cli
from sandbox.server import serve_forever, start

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = parse()
    assert (args.host, args.port, args.delay, args.fail, args.seed) == ("127.0.0.1", 8040, [], [], None)
    assert args.user_secret == "sandbox-user-secret" and args.org_secret == "sandbox-org-secret"
    args = parse("--delay", "consent=1", "--delay", "oauth_url=2", "--fail", "consent=0.5:429")
    assert args.delay == ["consent=1", "oauth_url=2"] and args.fail == ["consent=0.5:429"]


@pytest.mark.parametrize("argv, flag", [
    (["--delay", "nope=1"], "--delay"),
    (["--fail", "create_instance=7"], "--fail"),
    (["--fail", "create_instance=0.5:abc"], "--fail"),
])
def test_bad_fault_values_exit_2_with_a_fix(capsys: pytest.CaptureFixture[str], argv: list[str],
                                            flag: str) -> None:
    assert cli.run(parse("--port", "0", *argv)) == 2
    err = capsys.readouterr().err
    assert flag in err and argv[1] in err and "ENDPOINT" in err and "e.g." in err


def test_serve_forever_until_stop_event() -> None:
    stop = threading.Event()
    seen: list[int] = []

    def ready(sandbox: Sandbox) -> None:
        seen.append(requests.get(sandbox.root_url + "/health", timeout=5).status_code)
        stop.set()

    thread = threading.Thread(target=serve_forever, kwargs={"port": 0, "ready": ready, "stop_event": stop})
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and seen == [200]


def test_page_size_and_auto_refresh_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--page-size", "2", "--auto-refresh")
    assert (args.page_size, args.auto_refresh) == (2, True)
    assert (parse().page_size, parse().auto_refresh) == (200, False)
    assert cli.run(parse("--port", "0", "--page-size", "0")) == 2
    assert "--page-size must be at least 1" in capsys.readouterr().err
    stop = threading.Event()
    totals: list[str] = []

    def ready(sandbox: Sandbox) -> None:
        answer = requests.get(sandbox.base_url + "/instances", timeout=5, headers={
            "Authorization": "User sandbox-user-secret, Organization sandbox-org-secret"})
        totals.append(answer.headers["Elements-Returned-Count"])
        assert sandbox.app.ctx.page_size == 3 and sandbox.app.ctx.auto_refresh
        stop.set()

    thread = threading.Thread(target=serve_forever, kwargs={
        "port": 0, "ready": ready, "stop_event": stop, "page_size": 3, "auto_refresh": True})
    thread.start()
    thread.join(timeout=5)
    assert totals == ["0"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_python_m_sandbox_prints_banner_and_exits_0(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--user-secret", "u"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        base_url = line.removeprefix("sandbox listening on ")
        assert base_url.endswith("/elements/api-v2")
        answer = requests.get(base_url + "/instances", timeout=5,
                              headers={"Authorization": "User u, Organization sandbox-org-secret"})
        assert answer.status_code == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def test_taken_port_is_an_error_not_an_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with start(port=0) as running:
        with pytest.raises(OSError):
            start(port=running.port)
        assert cli.run(parse("--port", str(running.port))) == 1
        assert "Pick another --port" in capsys.readouterr().err

"""The benchmark commands the README quotes still run (issue 19, "Done means": the commands reproduce
the tables).

A benchmark is run by hand, rarely, and a change elsewhere can break it unseen: a new column once
made ``bench/renewal_load.py`` crash on its first row. Each test here runs one command of the
README's Performance section at a tiny size, in a subprocess, on a real SQLite file or PostgreSQL,
against the real fake API, and checks that it completes and that its ``RESULT`` line carries the
figures the README's tables are made of, with counts that follow from the size asked for. No
timing is asserted: the figures vary with the machine, and only their presence is checked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import pg_binaries_or_skip, pg_url_or_skip

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import children  # noqa: E402 - a benchmark module, not a package
import compare  # noqa: E402
import fake_api as fake  # noqa: E402
import pg_local  # noqa: E402
import procstat  # noqa: E402

pytestmark = pytest.mark.slow


def run(args: list[str], timeout: float = 240) -> str:
    """``python args...`` from the repository root; its stdout (the test fails with both streams)."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, (f"{args[0]} exited {done.returncode}\n{done.stdout[-3000:]}\n"
                                  f"{done.stderr[-3000:]}")
    return done.stdout


def result(stdout: str) -> dict[str, Any]:
    """The last ``RESULT {json}`` line."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line in:\n{stdout[-3000:]}"
    return dict(json.loads(lines[-1][len("RESULT "):]))


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL of a database name of this test's own: the benchmark drops and recreates it."""
    base = pg_url_or_skip()
    name = f"bench_smoke_{uuid.uuid4().hex[:10]}"
    yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    admin = sa.create_engine(sa.make_url(base), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture
def fake_api() -> Iterator[str]:
    """``bench/fake_api.py`` (one server process) on a free port, as the benchmarks run it; its base URL."""
    port = pg_local.free_port()
    command = [sys.executable, str(BENCH / "fake_api.py"), "--port", str(port), "--processes", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        fake.wait_ready(port, timeout_s=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.postgres
def test_compare_runs_every_variant_and_prints_the_ratios(tmp_path: Path, pg_database: str) -> None:
    server = pg_database.rsplit("/", 1)[0]  # compare.py names its databases bench_* itself
    out, log = tmp_path / "results.md", tmp_path / "runs.jsonl"
    stdout = run([str(BENCH / "compare.py"), "-n", "20", "--reps", "1", "--concurrency", "1",
                  "--workers", "1", "--no-each-starts", "--latency-ms", "0",
                  "--peer-python", str(tmp_path / "no-peer"),
                  "--pg", server, "--out", str(out), "--log", str(log)])
    assert "peer skipped" in stdout  # no peer environment here: the other rows still run
    table = out.read_text()
    for row in ("| HTTP alone, no database (ceiling) |", "| floor (SQLAlchemy Core) | sqlite |",
                "| engine, 1 process, concurrency 1 | sqlite |",
                "| engine, driver + 1 worker process | postgres |"):
        assert row in table
    assert "Share of HTTP alone" in table and "1 process, concurrency 1" in table
    row = table.rstrip().splitlines()[-1]  # the README's line for this run; no peer ran: n/a
    assert row.startswith("| ") and ", N=20 | " in row and row.endswith(" | n/a | n/a | n/a | n/a |")
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 7 and all(r["n"] == 20 and r["attempts_per_s"] > 0 for r in runs)


def test_engine_bench_single_process_on_sqlite(fake_api: str) -> None:
    res = result(run([str(BENCH / "engine_bench.py"), "-n", "30", "--chunk", "10", "--api", fake_api]))
    assert res["bench"] == "engine" and res["db"] == "sqlite" and res["n"] == 30 and res["attempts_per_s"] > 0


@pytest.mark.postgres
def test_engine_bench_with_callbacks_over_http_through_provision_serve(fake_api: str,
                                                                       pg_database: str) -> None:
    res = result(run([str(BENCH / "engine_bench.py"), "-n", "30", "--api", fake_api, "--pg", pg_database,
                      "--workers", "1", "--callbacks", "http", "--receivers", "2", "--browsers", "2"]))
    assert res["db"] == "postgres" and res["workers"] == 1 and res["n"] == 30 and res["attempts_per_s"] > 0
    # the GETs come from the browser processes, so each side's CPU is its own
    assert res["receivers"] == res["browsers"] == 2
    assert res["receiver_cpu_ms_per_callback"] > 0
    # /proc counts CPU in 10 ms ticks: 30 GETs of about 0.3 ms each, split over two processes, can
    # all fall within one tick (a CI run read 0.0), so only its presence and sign are checked here.
    assert isinstance(res["browser_cpu_ms_per_attempt"], float) and res["browser_cpu_ms_per_attempt"] >= 0


@pytest.mark.postgres
def test_callback_cost_measures_both_databases_part_by_part(pg_database: str) -> None:
    res = result(run([str(BENCH / "callback_cost.py"), "-n", "20", "--pg", pg_database]))
    for db in ("sqlite", "postgresql"):
        parts = res[db]
        for key in ("start", "callback", "wsgi", "cb_parse", "cb_hash", "cb_seal"):
            assert parts[key] > 0, (db, key)


def test_renewals_on_the_embedded_default() -> None:
    res = result(run([str(BENCH / "renewals.py"), "--sqlite", "-n", "40", "--workers", "1", "--spread-s", "2",
                      "--start-delay-s", "3", "--grace-s", "60", "--poll-s", "0.5",
                      "--sample-attempts", "10"]))
    assert res["n"] == 40 and res["renewals"] >= 40 and res["missed"] == 0
    assert set(res["lateness_s"]) == {"p50", "p99", "max"}
    assert res["worker_rss_mib"]["end"] > 0 and res["cpu_ms_per_renewal"]["workers"] > 0
    # The retention probe: 10 connections x 2 days of hourly rows, folded to one summary a day each.
    assert res["sample_rows"] == 10 * 2 * 24 and res["sample_summaries"] == 10 * 2
    assert 0 < res["pruned_bytes_per_connection_day"] < res["kept_bytes_per_connection_day"]


@pytest.mark.postgres
def test_renewals_on_postgresql(pg_database: str) -> None:
    res = result(run([str(BENCH / "renewals.py"), "--pg", pg_database, "-n", "60", "--workers", "2",
                      "--spread-s", "2", "--start-delay-s", "3", "--grace-s", "60", "--poll-s", "0.5",
                      "--sample-attempts", "10", "--fake-processes", "1", "--load-processes", "2"]))
    assert res["n"] == 60 and res["renewals"] >= 60 and res["missed"] == 0
    assert res["db"].startswith("PostgreSQL")


def test_scale_brings_its_own_postgresql() -> None:
    pg_binaries_or_skip(pg_local.find_bin_dir, pg_local.PostgresBinariesMissingError)
    stdout = run([str(BENCH / "scale.py"), "-n", "30", "--workers", "1", "--reps", "1",
                  "--callbacks", "engine", "http", "--receivers", "1", "--browsers", "1",
                  "--browser-threads", "2", "--fake-processes", "1"], timeout=300)
    res = result(stdout)
    assert res["bench"] == "scale" and res["n"] == 30 and "PostgreSQL" in res["machine"]
    assert set(res["rates"]) == {"engine/1", "http/1"} and all(r[0] > 0 for r in res["rates"].values())
    assert "| 1 |" in stdout  # the table's row for one worker
    assert all(r["driver_cpu_ms_per_attempt"] > 0 for r in res["runs"])
    # The workers' CPU and how busy the whole machine was: whether its cores were the limit.
    assert all(r["worker_cpu_ms_per_attempt"] > 0 and 0 < r["machine_busy"] <= 1 for r in res["runs"])
    assert "% busy" in stdout
    # The callbacks in flight (browsers x threads) bound an HTTP run: the table says how many.
    assert [r.get("browser_threads") for r in res["runs"]] == [None, 2]
    assert "1 browser processes x 2 threads" in res["machine"]
    assert "1 receivers (" in res["machine"]  # with their request threads (PROVISION_SERVE_THREADS)
    # What the database's backends waited for, sampled during every run (bench/pg_waits.py).
    for run_result in res["runs"]:
        waits = run_result["pg_waits"]
        assert waits["polls"] > 0 and waits["busy_backends"] > 0, waits
        assert abs(sum(waits["shares"].values()) - 1) < 0.02 and "on CPU" in waits["shares"], waits
    assert "busy backends" in stdout


def test_outbox_lock_measures_every_variant_on_its_own_postgresql() -> None:
    pg_binaries_or_skip(pg_local.find_bin_dir, pg_local.PostgresBinariesMissingError)
    stdout = run([str(BENCH / "outbox_lock.py"), "--processes", "1", "2", "--seconds", "0.3", "--reps", "1"],
                 timeout=300)
    res = result(stdout)
    assert res["bench"] == "outbox_lock" and "synchronous_commit=on" in res["machine"]
    variants = ("as shipped", "commit lock (0004)", "no events")
    assert set(res["rates"]) == {f"{v}/{p}" for v in variants for p in (1, 2)}
    assert all(r[0] > 0 for r in res["rates"].values())
    assert "| 2 |" in stdout and "commit lock / as shipped" in stdout


def test_http_client_cost_times_both_clients() -> None:
    res = result(run([str(BENCH / "http_client_cost.py"), "-n", "20", "--reps", "2"]))
    assert set(res["cpu_ms"]) == {"ElementsClient.oauth_url", "requests.Session.get + .json()"}
    assert all(len(runs) == 2 and min(runs) > 0 for runs in res["wall_ms"].values())


def test_serve_idle_measures_a_real_receiver_with_idle_connections_held() -> None:
    stdout = run([str(BENCH / "serve_idle.py"), "-n", "15", "--idle", "0", "5", "--reps", "2", "--fresh",
                  "--in-flight", "3", "--threads", "2"])
    res = result(stdout)
    assert res["bench"] == "serve_idle" and res["db"] == "sqlite" and res["n"] == 15
    assert res["in_flight"] == 3 and res["threads"] == 2
    assert set(res["runs"]) == {"0", "5", "fresh"} and all(len(v) == 2 for v in res["runs"].values())
    assert all(ms >= 0 for v in res["runs"].values() for ms in v)  # /proc counts CPU in ticks
    assert all(rate > 0 for v in res["callbacks_per_s"].values() for rate in v)
    assert "| 5 |" in stdout and "a new connection per callback" in stdout


def test_server_overhead_measures_waitress_and_its_idle_timeout() -> None:
    stdout = run([str(BENCH / "server_overhead.py"), "-n", "30", "--idle", "0", "5", "--servers", "waitress",
                  "--timeout-check", "1", "--in-flight", "2", "--threads", "2"])
    res = result(stdout)
    assert res["in_flight"] == 2 and res["threads"] == 2
    assert set(res["us_per_request"]["waitress"]) == {"0", "5", "fresh"}
    # The receiver's server closes every kind of silent connection at its idle timeout (issue 16).
    closed = res["closed_after_s"]["waitress"]
    assert set(closed) == {"idle after a request", "half a request line", "no byte at all"}
    assert all(seconds is not None and seconds < 6 for seconds in closed.values()), closed


SLEEPS = "import signal, time; print('ready', flush=True); time.sleep(60)"
IGNORES_SIGTERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPS


def test_a_child_that_ignores_sigterm_is_killed_and_named(capsys: pytest.CaptureFixture[str]) -> None:
    # A worker that ignored SIGTERM (engine/signals.py) once hung compare.py's whole table: its
    # driver gave up waiting and exited, and the worker kept the run's output pipe open.
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    polite = subprocess.Popen([sys.executable, "-c", SLEEPS], stdout=subprocess.PIPE, text=True)
    for proc in (stubborn, polite):
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert children.stop([stubborn, polite], 1.0, what="worker") == [stubborn.pid]
    assert stubborn.returncode == -9 and polite.returncode == -15
    warning = f"BUG: worker [{stubborn.pid}] did not stop within 1 s of SIGTERM; killed"
    assert warning in capsys.readouterr().err


#: A row that never ends, and leaves a child of its own holding the output pipe (as a stuck worker did).
#: Longer than the suite's per-test timeout (120 s), so that a row timeout that misses the child fails.
HANGS_WITH_A_CHILD = ("import subprocess, sys, time; "
                      "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                      "print(child.pid, flush=True); time.sleep(600)")


def test_a_row_that_hangs_fails_the_table_and_leaves_no_process(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(compare, "row_timeout_s", lambda n: 2.0)  # the real one is minutes
    with pytest.raises(SystemExit) as failed:
        compare.run_once([sys.executable, "-c", HANGS_WITH_A_CHILD], 10, "http://127.0.0.1:9")
    message = str(failed.value)
    assert message.startswith("FAILED: ") and "took more than 2 s (killed)" in message
    grandchild = int(message.split("(killed)\n", 1)[1].split()[0])  # the pid it printed
    # SIGKILLed with its group; until init reaps it, /proc shows it as a zombie (state Z).
    for _ in range(100):
        if procstat.state(grandchild) in (None, "Z"):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the row's child process {grandchild} is still running")


def test_the_readme_row_of_a_run_bolds_each_target_met() -> None:
    med = {(compare.HTTP_ALONE, "-"): 148.4}
    for db, peer, floor, single, worker in (("sqlite", 27.7, 98.7, 130.8, 185.8),
                                            ("postgres", 27.8, 60.6, 131.2, 131.6)):
        med |= {("peer (DBOS)", db): peer, ("floor (SQLAlchemy Core)", db): floor,
                (compare.SINGLE, db): single, (compare.ONE_WORKER, db): worker}
    assert compare.readme_row(med, "2026-12-01 05:49:57", 500, "AMD EPYC") == (
        "| 12-01 05:49, N=500 | AMD EPYC | 148.4 | 4.72x / 1.33x | 4.72x / **2.17x** "
        "| **6.71x / 1.88x** | 4.73x / **2.17x** |")
    del med[("floor (SQLAlchemy Core)", "sqlite")]  # a side that did not run
    assert compare.ratio_cell(med, compare.SINGLE, "sqlite") == "n/a"
    med |= {("peer (DBOS)", "postgres"): 20.0, ("floor (SQLAlchemy Core)", "postgres"): 100.0}
    assert compare.ratio_cell(med, compare.SINGLE, "postgres") == "**6.56x** / 1.31x"  # the peer half only

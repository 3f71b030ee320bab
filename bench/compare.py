"""Benchmark element-provisioner against the peer (DBOS) and the floor (SQLAlchemy Core), same run.

One fake Cloud Elements API (``../shared/bench/fake_elements.py``) is spawned once and every
variant talks to it. Variants run REPS times, interleaved (rep 1 of every variant, then rep 2...),
each in a fresh process on a fresh database; the table shows medians and the ratios of our
medians to the peer's and the floor's medians *from this run* (the machine is shared and noisy).

One more row, "HTTP alone", is the floor's three API calls per attempt with no database at all
(``baseline_sqla.py --mode http``): the ceiling of any engine that makes those calls one after
another in one process. The lines under the table say what share of it each single-process row
reached, and what share 5x the peer would need: the peer's ratio is bounded by how close to that
ceiling an engine can get, not only by its own overheads.

    python bench/compare.py -n 500 --reps 3 [--peer-python /tmp/peer/bin/python] [--no-pg]

In the worker-process rows the driver plays a back-office job: it starts the attempts in lists of
50 with ``Engine.start_many`` (one transaction each) and delivers every callback through
``Engine.handle_callback`` while the worker processes drive the steps. The rows ending "one start
per attempt" call ``Engine.start`` for each attempt instead; the driver shares the 2 cores with
the workers, so its CPU weighs on the worker-scaling ratio. The worker-process rows are also run
against a second fake API that answers ``--latency-ms`` (default 5) later, as a remote platform
does: there the API, not this machine's cores, bounds one worker, which shows how worker
processes scale.

Writes ``bench/results.md`` (the table, ``--out``) and appends raw RESULT lines to
``bench/results/runs.jsonl`` (``--log``).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


HTTP_ALONE = "HTTP alone, no database (ceiling)"
SLOW = "API +{} ms"  # label suffix of the rows run against the fake API with added latency
EACH = ", one start per attempt"  # label suffix: the driver calls Engine.start per attempt
PEER = "peer (DBOS)"
FLOOR = "floor (SQLAlchemy Core)"


def single(concurrency: int) -> str:
    """The label of a single-process row."""
    return f"engine, 1 process, concurrency {concurrency}"


def with_workers(workers: int, suffix: str = "") -> str:
    """The label of a row whose steps run in ``workers`` worker processes beside the driver."""
    return f"engine, driver + {workers} worker process{'es' if workers > 1 else ''}{suffix}"


def variants(a: argparse.Namespace, peer: str | None, floor_py: str) -> list[tuple[str, str, list[str]]]:
    """(label, db, command) of every run; the label is the table row."""
    shared = Path(a.shared)
    ours = [sys.executable, str(HERE / "engine_bench.py")]
    out: list[tuple[str, str, list[str]]] = []
    dbs: list[tuple[str, list[str], list[str], list[str]]] = [("sqlite", [], [], [])]
    if a.pg:
        dbs.append(("postgres", ["--pg", f"{a.pg}/bench_peer"], ["--pg", f"{a.pg}/bench_baseline"],
                    ["--pg", f"{a.pg}/bench_engine"]))
    out.append((HTTP_ALONE, "-", [floor_py, str(shared / "baseline_sqla.py"), "--mode", "http"]))
    for db, peer_db, floor_db, our_db in dbs:
        if peer:
            out.append((PEER, db, [peer, str(shared / "peer_dbos.py"), *peer_db]))
        wal = ["--sqlite-wal"] if db == "sqlite" else []
        floor = [floor_py, str(shared / "baseline_sqla.py"), *wal, *floor_db]
        out.append((FLOOR, db, floor))
        for c in a.concurrency:
            out.append((single(c), db, [*ours, "--concurrency", str(c), *our_db]))
        suffixes = [("", "many"), (EACH, "each")] if a.each_starts else [("", "many")]
        if a.latency_ms and (db == "postgres" or not a.pg):
            # worker scaling when the API, not the 2 cores, is the bottleneck
            suffixes.append((", " + SLOW.format(f"{a.latency_ms:g}"), "many"))
        for suffix, starts in suffixes:
            for w in a.workers:
                out.append((with_workers(w, suffix), db,
                            [*ours, "--workers", str(w), "--concurrency", str(a.worker_concurrency),
                             "--starts", starts, *our_db]))
    return out


def spawn_slow_api(shared: Path, latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """A second fake API that waits ``latency_ms`` before every answer, like a remote platform."""
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(shared / "fake_elements.py"), "--port", str(port),
                             "--latency-ms", str(latency_ms)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/health", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("slow fake API did not start")


def row_timeout_s(n: int) -> float:
    """How long one row may take: the slowest row (the peer, about 20 attempts/s on a slow machine)
    takes N/20 s, so this is generous; it exists so that a hung row fails the table instead of
    holding it for ever (a worker that ignored SIGTERM once did, engine/signals.py)."""
    return 300 + 0.2 * n


def run_once(cmd: list[str], n: int, api: str) -> dict[str, Any]:
    full = [*cmd, "-n", str(n), "--api", api]
    # A session of its own, so that a timeout kills the row's worker processes too: they inherit
    # its output pipe, and reading to its end would otherwise wait for them.
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=row_timeout_s(n))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # every member ended meanwhile
            pass
        stdout, stderr = proc.communicate()
        sys.exit(f"FAILED: {' '.join(full)} took more than {row_timeout_s(n):g} s (killed)\n"
                 f"{stdout[-3000:]}\n{stderr[-3000:]}")
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or not line:
        sys.exit(f"FAILED: {' '.join(full)}\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return dict(json.loads(line[7:]))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``)."""
    return next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")), platform.processor())


def machine(peer: str | None = None) -> list[str]:
    """nproc, memory, CPU model, Python and PostgreSQL versions, and the peer's (for the README)."""
    cpu = cpu_model()
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), "?")
    pg = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "show server_version"],
                        capture_output=True, text=True).stdout.strip() or "?"
    lines = [f"nproc {os.cpu_count()}, {int(mem) // 1024 // 1024 + 1} GiB RAM, CPU {cpu}",
             f"Python {platform.python_version()}, PostgreSQL {pg}; engine: SQLAlchemy "
             f"{importlib.metadata.version('sqlalchemy')}, requests {importlib.metadata.version('requests')}"]
    if peer:  # a newer peer release changes its figures, and so every ratio to it
        probe = "import importlib.metadata as m; print(m.version('dbos'), m.version('sqlalchemy'))"
        found = subprocess.run([peer, "-c", probe], capture_output=True, text=True).stdout.split()
        if len(found) == 2:
            lines.append(f"peer: dbos {found[0]} (SQLAlchemy {found[1]} in its environment)")
    return lines


def medians(by: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[tuple[str, str], float]:
    """Each row's median attempts/s."""
    return {k: statistics.median(r["attempts_per_s"] for r in rs) for k, rs in by.items()}


def table(by: dict[tuple[str, str], list[dict[str, Any]]], med: dict[tuple[str, str], float],
          n: int) -> list[str]:
    lines = ["| variant | DB | N | median attempts/s | runs (attempts/s) | vs peer | vs floor |",
             "|---|---|---|---|---|---|---|"]
    for (label, db), rs in by.items():
        peer, floor = med.get((PEER, db)), med.get((FLOOR, db))
        ratio = ["", ""]
        if label.startswith("engine") and not label.endswith(" ms"):  # the peer ran on the plain API
            ratio = [f"{med[(label, db)] / peer:.2f}x" if peer else "n/a",
                     f"{med[(label, db)] / floor:.2f}x" if floor else "n/a"]
        runs = ", ".join(f"{r['attempts_per_s']:.1f}" for r in rs)
        lines.append(f"| {label} | {db} | {n} | {med[(label, db)]:.1f} | {runs} | {ratio[0]} | {ratio[1]} |")
    slow = sorted({label.split(", ")[-1] for label, _ in by if label.endswith(" ms")})
    for suffix in ["", EACH, *(", " + s for s in slow)]:
        for db in ("sqlite", "postgres"):
            one = med.get((with_workers(1, suffix), db))
            two = med.get((with_workers(2, suffix), db))
            if one and two:
                lines.append(f"\n2 worker processes / 1 on {db}{suffix}: {two / one:.2f}x")
    lines += ceiling_lines(med)
    return lines


def ceiling_lines(med: dict[tuple[str, str], float]) -> list[str]:
    """Each single-process row, and 5x the peer, as a share of the HTTP-alone ceiling of this run."""
    ceiling = med.get((HTTP_ALONE, "-"))
    if not ceiling:
        return []
    lines = []
    for db in ("sqlite", "postgres"):
        peer = med.get((PEER, db))
        ours = [(label, v) for (label, d), v in med.items()
                if d == db and label.startswith("engine, 1 process")]
        parts = [f"{label.removeprefix('engine, ')} {v / ceiling:.0%}" for label, v in ours]
        if peer:
            parts.append(f"5x the peer would be {5 * peer / ceiling:.0%}")
        if parts:
            lines.append(f"\nShare of HTTP alone ({ceiling:.1f}/s) on {db}: " + "; ".join(parts))
    return lines


#: Issue 19's target for one process: at least 5x the peer and 1.5x the floor.
TARGET = {PEER: 5.0, FLOOR: 1.5}
SINGLE = single(1)
ONE_WORKER = with_workers(1)


def ratio_cell(med: dict[tuple[str, str], float], label: str, db: str) -> str:
    """``a / b`` (x the peer / x the floor) for the README's table of runs, each part that meets the
    target in bold, or ``n/a`` when a side did not run."""
    ours = med.get((label, db))
    peer, floor = (med.get((other, db)) for other in TARGET)
    if not (ours and peer and floor):
        return "n/a"
    ratios = [ours / peer, ours / floor]
    text = [f"{r:.2f}x" for r in ratios]
    met = [r >= target for r, target in zip(ratios, TARGET.values(), strict=True)]
    if all(met):
        return f"**{text[0]} / {text[1]}**"
    return " / ".join(f"**{t}**" if m else t for t, m in zip(text, met, strict=True))


def readme_row(med: dict[tuple[str, str], float], started: str, n: int, cpu: str) -> str:
    """This run as one line of the README's "Every recorded run" table."""
    ceiling = med.get((HTTP_ALONE, "-"))
    cells = [f"{started[5:16]}, N={n:,}", cpu, f"{ceiling:.1f}" if ceiling else "",
             *(ratio_cell(med, label, db) for label in (SINGLE, ONE_WORKER) for db in ("sqlite", "postgres"))]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="attempts per run (default 500)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repeats; the table shows medians")
    ap.add_argument("--peer-python", default="/tmp/peer/bin/python", help="python of the venv with dbos")
    ap.add_argument("--floor-python", help="python for baseline_sqla.py (default: --peer-python, else ours)")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                    help="PostgreSQL server URL without database name (databases bench_* are recreated)")
    ap.add_argument("--no-pg", dest="pg", action="store_const", const=None, help="SQLite rows only")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"),
                    help="the shared bench scripts")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="single-process rows to run")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker-process rows to run")
    ap.add_argument("--worker-concurrency", type=int, default=1, help="EngineSettings.concurrency of workers")
    ap.add_argument("--no-each-starts", dest="each_starts", action="store_false",
                    help="skip the worker rows whose driver calls Engine.start per attempt (the "
                         "plain worker rows start each chunk of 50 with Engine.start_many)")
    ap.add_argument("--latency-ms", type=float, default=5.0,
                    help="also run the worker rows against a fake API answering this much later "
                         "(PostgreSQL only, unless --no-pg; 0 = skip)")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--log", default=str(HERE / "results" / "runs.jsonl"),
                    help="file the raw RESULT lines are appended to")
    a = ap.parse_args()

    sys.path.insert(0, a.shared)
    import common  # the shared helpers: spawn the fake API exactly as run_all.py does

    peer = a.peer_python if os.path.exists(a.peer_python) else None
    if peer is None:
        print(f"peer skipped: {a.peer_python} not found (python -m venv /tmp/peer && "
              "/tmp/peer/bin/pip install dbos sqlalchemy requests 'psycopg[binary]')", flush=True)
    floor_py = a.floor_python or peer or sys.executable
    Path(a.log).parent.mkdir(parents=True, exist_ok=True)
    log = open(a.log, "a")
    proc, api = common.spawn_fake_api()
    slow_proc, slow_api = spawn_slow_api(Path(a.shared), a.latency_ms) if a.latency_ms else (None, api)
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    started = time.strftime("%F %T", time.gmtime())
    try:
        for rep in range(a.reps):
            for label, db, cmd in variants(a, peer, floor_py):
                target = slow_api if label.endswith(" ms") else api
                r = run_once(cmd, a.n, target) | {"rep": rep, "variant": label, "at": time.strftime("%FT%T")}
                log.write(json.dumps(r) + "\n")
                log.flush()
                by.setdefault((label, db), []).append(r)
                print(f"rep {rep}: {label:<45} {db:<8} {r['attempts_per_s']:>7} /s", flush=True)
    finally:
        proc.terminate()
        if slow_proc is not None:
            slow_proc.terminate()
    med = medians(by)
    lines = [f"Run {started} UTC, N={a.n}, {a.reps} interleaved repeats, medians; ratios are ours / theirs "
             "from this same run.", "", *(f"- {m}" for m in machine(peer)), "", *table(by, med, a.n), "",
             "The README's table of runs (run, CPU, HTTP alone, x peer / x floor in one process on SQLite "
             "and PostgreSQL, then with one worker process; bold: the target met):", "",
             readme_row(med, started, a.n, cpu_model())]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

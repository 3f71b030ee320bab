"""A throwaway PostgreSQL server for the benchmarks and the restart tests, on any machine with Python.

``bench/scale.py`` measures on it; ``tests/integration/test_db_restarts.py`` restarts it under
running workers (``LocalPostgres.restart``), which the machine's shared server must never be.
The server binaries come from the ``pgserver`` wheel (``pip install -e '.[bench]'`` or
``'.[test]'``), or from ``--pg-bin DIR`` (e.g. ``/usr/lib/postgresql/16/bin``). ``initdb`` and
``postgres`` refuse to run as root, so when this process is root they run as an unprivileged user
(``BENCH_PG_USER``, default ``nobody``) via setuid in the child, in a temporary folder owned by
that user. The server listens on 127.0.0.1 on a free port with trust authentication and is stopped
and deleted on exit.

    with local_postgres() as pg:
        print(pg.url("bench"), pg.version())
        pg.restart("immediate")  # as after a crash: the same port and data, recovery from the WAL
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

EXTRA = "bench"  # a setup.cfg extra that brings the pgserver wheel (so does "test")


class PostgresBinariesMissingError(RuntimeError):
    """No PostgreSQL server binaries: install the ``bench`` extra or pass ``--pg-bin``."""


def find_bin_dir(explicit: str | None = None) -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``explicit``, else the pgserver wheel's."""
    if explicit:
        path = Path(explicit)
    else:
        # Located, not imported: importing pgserver pulls in its own server manager, unused here.
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresBinariesMissingError(
                f"no PostgreSQL server binaries: install them with `pip install -e '.[{EXTRA}]'` (the "
                "pgserver wheel), or pass --pg-bin DIR (a folder with initdb and postgres), or --pg URL")
        path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (path / "initdb").exists() or not (path / "postgres").exists():
        raise PostgresBinariesMissingError(f"--pg-bin {path}: no initdb and postgres there")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_owner(user: str | None = None) -> tuple[int, int] | None:
    """The uid and gid the server runs as when this process is root (files it writes must be
    theirs, e.g. a separate WAL disk); None when it runs as this process's own user."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user or os.environ.get("BENCH_PG_USER") or "nobody")
    return entry.pw_uid, entry.pw_gid


def _demote(user: str | None) -> tuple[Callable[[], None] | None, int | None, int | None]:
    """A ``preexec_fn`` that becomes ``user`` (only when we are root), with its uid and gid."""
    owner = server_owner(user)
    if owner is None:
        return None, None, None
    uid, gid = owner

    def become() -> None:
        os.setgid(gid)
        os.setuid(uid)

    return become, uid, gid


#: How ``LocalPostgres.restart`` stops the server, as ``pg_ctl -m``: SIGINT (fast: sessions are
#: ended, a checkpoint is written) or SIGQUIT (immediate: no checkpoint, crash recovery at start).
STOP_SIGNALS = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class LocalPostgres:
    """One running server: ``url(db)``, ``version()``, ``pids()`` (for CPU accounting), ``restart()``,
    ``stop()``."""

    def __init__(self, bin_dir: Path, root: Path, port: int,
                 launch: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self._launch = launch
        self.process = launch()
        self.restarts = 0

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Return once the server answers (``pg_isready``); RuntimeError with its log if it does not."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready = subprocess.run([str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1",
                                    "-p", str(self.port)], capture_output=True)
            if ready.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres did not start: {text}")
            time.sleep(0.05)

    def restart(self, mode: str = "fast", *, down_s: float = 0.0) -> None:
        """Stop the server as ``pg_ctl restart -m MODE`` would, stay down ``down_s``, start it again
        on the same port and data, and wait until it answers. Every session is ended meanwhile.
        Also starts a server that stopped by itself (e.g. after a PANIC on a full WAL disk)."""
        self.process.send_signal(STOP_SIGNALS[mode])
        self.process.wait(60)
        if down_s > 0:
            time.sleep(down_s)
        self.process = self._launch()
        self.restarts += 1
        self.wait_ready()

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for ``database`` as the superuser ``postgres``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def version(self) -> str:
        """``postgres --version``, e.g. ``postgres (PostgreSQL) 16.2``."""
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer...), read from /proc."""
        found = [self.process.pid]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.process.pid:
                found.append(int(entry))
        return found

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then delete the data folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(bin_dir: Path, *, user: str | None = None, max_connections: int = 300,
                   timeout_s: float = 60.0, settings: Mapping[str, str] | None = None,
                   initdb_args: Sequence[str] = ()) -> LocalPostgres:
    """initdb in a temporary folder and start ``postgres`` on a free port; waits until it answers.

    ``settings``: more server settings (``-c name=value``), e.g. ``{"fsync": "off"}`` for a test
    server whose restarts need not survive a power cut. ``initdb_args``: more ``initdb`` options,
    e.g. ``["--waldir", DIR, "--wal-segsize", "1"]`` for a WAL on a disk of its own.
    """
    become, uid, gid = _demote(user)
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data = root / "data"
    if uid is not None and gid is not None:
        os.chown(root, uid, gid)
    log = root / "initdb.log"
    with open(log, "wb") as out:
        done = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-sync", *initdb_args], stdout=out, stderr=subprocess.STDOUT,
                              preexec_fn=become, cwd=root)
    if done.returncode != 0:
        text = log.read_text(errors="replace")[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({done.returncode}): {text}")
    port = free_port()

    def launch() -> subprocess.Popen[bytes]:
        with open(root / "server.log", "ab") as log_file:  # appended: a restart keeps the earlier lines
            return subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={max_connections}",
                 *(arg for name, value in (settings or {}).items() for arg in ("-c", f"{name}={value}"))],
                stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=become, cwd=root)

    server = LocalPostgres(bin_dir, root, port, launch)
    try:
        server.wait_ready(timeout_s)
    except RuntimeError:
        server.stop()
        raise
    return server


@contextmanager
def local_postgres(bin_dir: str | None = None, **kw: object) -> Iterator[LocalPostgres]:
    """``start_postgres`` for the length of a ``with`` block."""
    server = start_postgres(find_bin_dir(bin_dir), **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()

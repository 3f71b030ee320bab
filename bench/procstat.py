"""CPU time and resident memory of processes, read from /proc (Linux), for the benchmarks' reports."""
from __future__ import annotations

import os
import platform
from collections.abc import Iterable

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (None once the process has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None once it has gone)."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / TICKS


def state(pid: int) -> str | None:
    """``pid``'s state letter (``R``, ``S``, ``Z`` for a zombie...; None once it has gone)."""
    fields = _stat(pid)
    return None if fields is None else fields[0]


def total_cpu(pids: Iterable[int]) -> float:
    """The CPU seconds of every readable process in ``pids``."""
    return sum(c for c in map(cpu_seconds, pids) if c is not None)


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, every core (``/proc/stat``): busy is all
    but idle and I/O wait. Two readings give how busy the cores were in between, whoever used them."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is already counted in user and nice: the first 8 fields are the whole
    total = sum(ticks[:8])
    return (total - idle) / TICKS, total / TICKS


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's CPU time that was busy between two ``machine_cpu`` readings."""
    spent = after[1] - before[1]
    return (after[0] - before[0]) / spent if spent > 0 else 0.0


def pids_named(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (e.g. every ``postgres`` on the machine)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def machine_line() -> str:
    """``N cores, <CPU model>, <RAM> GiB RAM, Python x.y.z`` for the result tables."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram = 0.0
    return f"{os.cpu_count()} cores, {model}, {ram:.0f} GiB RAM, Python {platform.python_version()}"

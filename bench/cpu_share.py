"""Run a benchmark command and print the CPU seconds each kind of process used meanwhile.

Answers "what is the machine busy with": on a 2-core machine the driver, the worker processes, the
fake API and PostgreSQL share two cores, so when their sum nears 2 x wall time another worker
process cannot add throughput. Reads /proc (Linux) every 0.1 s; CPU = user + system time.

    python bench/cpu_share.py python bench/engine_bench.py -n 1500 --workers 2 --api URL --pg URL

With ``ATTEMPTS=N`` in the environment it also prints each kind's CPU per attempt (start-up
included, so use a large N): the CPU budget of one attempt, part by part, which bounds what a
machine with more cores can do.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")
KINDS = (("bench/worker.py", "worker processes"), ("engine_bench.py", "driver"),
         ("http_callbacks.py", "browsers"), (" serve --db ", "receivers (serve)"),
         ("fake_elements", "fake API"), ("postgres", "PostgreSQL"))


def snapshot(known: dict[str, tuple[str, float]]) -> dict[str, tuple[str, float]]:
    """pid -> (kind, CPU seconds so far) for every process we can read."""
    seen = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                cmdline = f.read().replace("\0", " ")
        except OSError:
            continue  # exited meanwhile
        if not cmdline and pid in known:  # a zombie has no command line left: keep its kind
            kind = known[pid][0]
        else:
            kind = next((k for marker, k in KINDS if marker in cmdline), "other")
        seen[pid] = (kind, (int(fields[11]) + int(fields[12])) / TICKS)
    return seen


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    before = snapshot({})
    last = dict(before)
    started = time.monotonic()
    proc = subprocess.Popen(sys.argv[1:])
    while proc.poll() is None:
        last.update(snapshot(last))  # a process's last reading before it exits is kept
        time.sleep(0.1)
    wall = time.monotonic() - started
    used: dict[str, float] = collections.defaultdict(float)
    for pid, (kind, cpu) in last.items():
        used[kind] += cpu - (before[pid][1] if pid in before else 0.0)
    print(f"wall {wall:.1f} s (whole command, start-up included), {os.cpu_count()} cores")
    attempts = int(os.environ.get("ATTEMPTS", "0"))

    def per(cpu: float) -> str:
        return f"  {cpu * 1000 / attempts:6.3f} ms per attempt" if attempts > 0 else ""

    for kind, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        if cpu >= 0.05:
            print(f"{kind:18s} {cpu:6.1f} s CPU  ({cpu / wall:4.2f} cores){per(cpu)}")
    total = sum(used.values())
    print(f"{'all':18s} {total:6.1f} s CPU  ({total / wall:4.2f} cores){per(total)}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()

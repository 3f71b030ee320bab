#!/usr/bin/env bash
# Issue 19's scaling table on a bare many-core machine, in one call of the `device` tool.
#
# Run bench/device_wheels.sh here first (nothing can be fetched there), then:
#   run(command="bash bench/device_scale.sh", carry=[".device"], timeout_s=590)
#
# It makes a virtualenv from the carried wheels, writes the machine's facts, and runs
# bench/scale.py (its own PostgreSQL from the pgserver wheel, run as an unprivileged user; the fake
# API as several processes) under a time budget, streaming every run's line to the log so that a
# run cut short still returns what it measured. Then bench/outbox_lock.py: event-writing commits
# per second with the events outbox's commit lock and without it, on the same machine (whether that
# lock, not the cores, bounds the product path). Results under $OUT: machine.txt, scale.log,
# outbox_lock.log and, when each finished, scale.json and outbox_lock.json (their RESULT lines).
# Settings (environment): N (4000), WORKERS ("1 2 4 8 12"), REPS (2), CALLBACKS ("engine free
# http"), RECEIVERS (4), BROWSERS (4), BROWSER_THREADS (16: callbacks in flight per browser),
# BUDGET_S (430: the whole table), LOCK_BUDGET_S (90; 0 skips outbox_lock.py) and LOCK_PROCESSES
# ("1 4 8 16 32"), which leave the 10-minute command its install and its margin; PYTHON (python3);
# REUSE_VENV (set: a second table in the same call keeps the virtualenv the first one installed).
# PROVISION_SERVE_THREADS, when set, reaches every receiver (bench/README.md, "serve_idle.py":
# at saturation the receivers' thread count cut both ways on 2 cores; this measures it on many).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/device-scale-out}"
mkdir -p "$out"
py="${PYTHON:-python3}"
venv="${VENV:-/tmp/provision-bench-venv}"
if [ ! -d .device/wheels ]; then
  echo "no .device/wheels: run bench/device_wheels.sh here and carry .device" | tee "$out/scale.log" >&2
  exit 2
fi
if [ -n "${REUSE_VENV:-}" ] && [ -x "$venv/bin/python" ]; then
  echo "reusing $venv"  # a second table in the same call: the wheels are installed already
else
  rm -rf "$venv"
  if "$py" -m venv "$venv" 2>/dev/null; then
    pip=("$venv/bin/python" -m pip)
  else  # a Python without ensurepip: its own pip installs into the new environment
    "$py" -m venv --without-pip "$venv"
    pip=("$py" -m pip --python "$venv/bin/python")
  fi
  "${pip[@]}" install -q --no-index --find-links .device/wheels -r bench/device_requirements.txt
fi
# PostgreSQL refuses to run as root: bench/pg_local.py runs it as BENCH_PG_USER (default nobody).
if [ "$(id -u)" = 0 ] && ! id -u "${BENCH_PG_USER:-nobody}" >/dev/null 2>&1; then
  useradd --no-create-home --shell /usr/sbin/nologin benchpg && export BENCH_PG_USER=benchpg
fi
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  grep -m1 'model name' /proc/cpuinfo || true
  grep MemTotal /proc/meminfo || true
  "$venv/bin/python" --version
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "settings: N=${N:-4000} WORKERS=${WORKERS:-1 2 4 8 12} REPS=${REPS:-2} CALLBACKS=${CALLBACKS:-engine free http}" \
       "RECEIVERS=${RECEIVERS:-4} BROWSERS=${BROWSERS:-4} BROWSER_THREADS=${BROWSER_THREADS:-16} BUDGET_S=${BUDGET_S:-430}" \
       "LOCK_BUDGET_S=${LOCK_BUDGET_S:-90} LOCK_PROCESSES=${LOCK_PROCESSES:-1 4 8 16 32}" \
       "PROVISION_SERVE_THREADS=${PROVISION_SERVE_THREADS:-unset (the default)}"
} > "$out/machine.txt"
cat "$out/machine.txt"
# shellcheck disable=SC2086  # WORKERS and CALLBACKS are lists
PYTHONUNBUFFERED=1 timeout --kill-after=20 "${BUDGET_S:-430}" "$venv/bin/python" bench/scale.py \
  -n "${N:-4000}" --workers ${WORKERS:-1 2 4 8 12} --reps "${REPS:-2}" --callbacks ${CALLBACKS:-engine free http} \
  --receivers "${RECEIVERS:-4}" --browsers "${BROWSERS:-4}" --browser-threads "${BROWSER_THREADS:-16}" 2>&1 | tee "$out/scale.log"
status=${PIPESTATUS[0]}
grep '^RESULT ' "$out/scale.log" | tail -1 | cut -c8- > "$out/scale.json" || true
[ -s "$out/scale.json" ] || rm -f "$out/scale.json"
if [ "${LOCK_BUDGET_S:-90}" = 0 ]; then exit "$status"; fi  # the scaling table alone
# shellcheck disable=SC2086  # LOCK_PROCESSES is a list
PYTHONUNBUFFERED=1 timeout --kill-after=10 "${LOCK_BUDGET_S:-90}" "$venv/bin/python" bench/outbox_lock.py \
  --processes ${LOCK_PROCESSES:-1 4 8 16 32} --seconds 2 --reps 1 2>&1 | tee "$out/outbox_lock.log" || true
grep '^RESULT ' "$out/outbox_lock.log" | tail -1 | cut -c8- > "$out/outbox_lock.json" || true
[ -s "$out/outbox_lock.json" ] || rm -f "$out/outbox_lock.json"
exit "$status"

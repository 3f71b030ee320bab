"""The CLI refuses out-of-range numbers with exit 2 and a message, and creates nothing (issue 16).

Before: ``--older-than 99999999999d`` and ``--limit 10**30`` escaped as ``OverflowError`` (exit 1),
``serve --port 70000`` listened on 4464 (70000 mod 65536), and ``PROVISION_LEASE_SECONDS=nan``
was accepted, after which every tick failed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

LEASE_RULE = "must be a finite number of seconds from 1 to 86400 (1 day)"
OPTIONS = [
    (("list", "--older-than", "99999999999d"),
     "--older-than: expected a duration like 30m, 2h or 7d of at most 36500d (100 years), "
     "got '99999999999d'"),
    (("list", "--newer-than", "36501d"), "--newer-than: expected a duration"),
    (("list", "--limit", str(10**30)), f"--limit: must be a whole number from 1 to 100000, got '{10**30}'"),
    (("serve", "--port", "70000"),
     "--port: must be a whole number from 0 to 65535 (0 = any free port), got '70000'"),
    (("serve", "--port", "-1"), "--port: must be a whole number from 0 to 65535"),
    (("serve", "--host", "bad host\u202e"), "--host: must be an IP address or a host name"),
    (("sandbox", "--port", "65536"), "--port: must be a whole number from 0 to 65535"),
    (("worker", "--concurrency", "100000"), "--concurrency: must be a whole number from 1 to 256"),
    (("keys", "rotate", "--batch-size", "0"), "--batch-size: must be a whole number from 1 to 10000"),
]
ENVIRONMENTS = [("PROVISION_LEASE_SECONDS", value, LEASE_RULE) for value in ("nan", "inf", "1e300")] + [
    ("PROVISION_BATCH_SIZE", "1e3", "must be a whole number from 1 to 10000"),
    ("PROVISION_READ_TIMEOUT_SECONDS", "-5", "must be a finite number of seconds from 0.1 to 3600 (1 hour)"),
]


def test_bad_numbers_exit_2_with_the_rule_and_create_nothing(cli: Any) -> None:
    procs = []
    for var, value, rule in ENVIRONMENTS:  # one process per environment, all running at once
        cli.env = {**cli.env, var: value}
        procs.append((cli.popen("list"), f"{var}: {rule}, got '{value}'"))
        del cli.env[var]
    for proc, message in procs:
        out, err = proc.communicate(timeout=60)
        cli.outputs += [out, err]
        assert (proc.returncode, err.splitlines()[0]) == (2, f"provision: error: {message}"), err
    results = cli.many(*(args for args, _ in OPTIONS))
    for (args, message), proc in zip(OPTIONS, results, strict=True):
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"provision: error: {message}"), (args, proc.stderr)
    db = Path(cli.db_url.removeprefix("sqlite:///"))
    assert not db.exists() and not db.with_name(db.name + ".key").exists()  # refused before opening it

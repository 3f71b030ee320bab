"""What ``provision worker`` says: one line per transition, and a summary at the end of ``--once``.

Lines are built from the ``StepResult``s the engine already returns (``TickReport``), never from a
second query. Human lines by default, JSON lines with ``--log-format json``, nothing with
``--quiet``; the summary is printed either way. Every text goes through the secret mask: names and
reasons are not secret, but an attempt's name is operator input and an error kind is provider text.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

from engine.core.facade import TickReport
from engine.core.runner import StepResult
from engine.security.redaction import redact_text as mask_text

LOG_FORMATS = ("text", "json")
# Results that are not a step the worker did: nothing to report on their own line.
_SILENT = ("released",)


def iso_utc(when: datetime) -> str:
    """``2026-11-30T01:58:27Z``: the one timestamp format of the CLI's output."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_id(attempt_id: str) -> str:
    """The first 8 characters of an id (``provision show`` takes any unique prefix of 4 or more)."""
    return attempt_id[:8]


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms}ms" if ms < 10_000 else f"{ms / 1000:.1f}s"


def result_record(result: StepResult, at: datetime) -> dict[str, Any]:
    """The JSON line of one step result (``--log-format json``)."""
    return {"time": iso_utc(at), "attempt": result.attempt_id, "name": mask_text(result.name),
            "customer": result.customer, "from": result.source.value,
            "to": result.dest.value if result.dest else None, "trigger": result.trigger,
            "duration_ms": result.duration_ms, "outcome": result.outcome,
            "reason": mask_text(result.reason) if result.reason else None}


def result_line(result: StepResult, at: datetime) -> str:
    """``2026-11-30T01:58:27Z 1f0c2a9b acme-books (cust-7) NEW -> TOKEN_ISSUED 41ms advanced``."""
    who = mask_text(result.name) + (f" ({result.customer})" if result.customer else "")
    source = result.source.value
    move = f"{source} -> {result.dest.value}" if result.dest else f"{source} (stays)"
    outcome = result.outcome + (f" ({mask_text(result.reason)})" if result.reason else "")
    took = _duration(result.duration_ms)
    return f"{iso_utc(at)} {short_id(result.attempt_id)} {who} {move} {took} {outcome}"


@dataclass
class WorkerReporter:
    """Prints a line per step result and counts them for the summary.

    ``claimed`` counts claims, ``advanced`` committed transitions (a failure is not one), ``retrying``
    steps rescheduled after an error and ``failed`` attempts that failed, by reason.
    """

    out: TextIO
    log_format: str = "text"
    quiet: bool = False
    claimed: int = 0
    steps: int = 0
    advanced: int = 0
    retrying: int = 0
    waiting: int = 0
    lost: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    def __call__(self, report: TickReport) -> None:
        """Account for (and print) one tick's results."""
        self.claimed += report.claimed
        self.steps += report.steps
        for result in report.results:
            self._count(result)
            if self.quiet or result.outcome in _SILENT:
                continue
            line = (json.dumps(result_record(result, report.at)) if self.log_format == "json"
                    else result_line(result, report.at))
            print(line, file=self.out, flush=True)

    def _count(self, result: StepResult) -> None:
        if result.outcome == "advanced":
            self.advanced += result.steps
        elif result.outcome == "failed":
            self.advanced += result.steps - 1  # a chained step before the failure did advance
            self.failed[result.reason or "unknown"] += 1
        elif result.outcome == "retry":
            self.retrying += 1
        elif result.outcome == "waiting":
            self.waiting += 1
        elif result.outcome == "lost":
            self.lost += 1

    def summary(self) -> dict[str, Any]:
        """The counts, for ``--json`` and the summary line."""
        return {"steps": self.steps, "claimed": self.claimed, "advanced": self.advanced,
                "retrying": self.retrying,
                "waiting": self.waiting, "lost": self.lost,
                "failed": sum(self.failed.values()), "failed_by_reason": dict(sorted(self.failed.items()))}

    def summary_line(self) -> str:
        """``worker: claimed 3, advanced 5, retrying 1, failed 1 (invalid_database: 1)``."""
        data = self.summary()
        reasons = ", ".join(f"{k}: {v}" for k, v in data["failed_by_reason"].items())
        failed = f"failed {data['failed']}" + (f" ({reasons})" if reasons else "")
        extra = "".join(f", {k} {data[k]}" for k in ("waiting", "lost") if data[k])
        return (f"worker: claimed {data['claimed']}, advanced {data['advanced']}, "
                f"retrying {data['retrying']}, {failed}{extra}")


ReportHook = Callable[[TickReport], None]

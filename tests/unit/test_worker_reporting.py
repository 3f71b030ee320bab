"""The worker's report lines and summary (engine.cli.reporting), from hand-made step results."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

from engine.cli.reporting import WorkerReporter, iso_utc, result_line
from engine.core.facade import TickReport
from engine.core.runner import StepResult
from states.model import State

AT = datetime(2026, 11, 30, 1, 58, 27, 512000, tzinfo=timezone.utc)
ID = "1f0c2a9b-0000-4000-8000-000000000001"


def _report() -> TickReport:
    return TickReport(AT, results=[
        StepResult(ID, "advanced", State.NEW, State.REDIRECTED, steps=2, name="acme", trigger="redirect",
                   duration_ms=41),
        StepResult("2" * 36, "failed", State.CALLBACK_RECEIVED, State.FAILED, name="beta",
                   customer="cust-7", trigger="fail", duration_ms=12_500, reason="invalid_database"),
        StepResult("3" * 36, "retry", State.NEW, None, name="gamma", duration_ms=3, reason="timeout"),
        StepResult("4" * 36, "released", State.NEW, None, steps=0),
    ])


def test_one_line_per_transition_with_time_id_name_move_duration_outcome() -> None:
    out = io.StringIO()
    reporter = WorkerReporter(out)
    reporter(_report())
    lines = out.getvalue().splitlines()
    assert lines == [
        "2026-11-30T01:58:27Z 1f0c2a9b acme NEW -> REDIRECTED 41ms advanced",
        "2026-11-30T01:58:27Z 22222222 beta (cust-7) CALLBACK_RECEIVED -> FAILED 12.5s failed "
        "(invalid_database)",
        "2026-11-30T01:58:27Z 33333333 gamma NEW (stays) 3ms retry (timeout)",
    ]  # the released claim ran nothing: no line


def test_summary_counts_claims_transitions_retries_and_failures_by_reason() -> None:
    reporter = WorkerReporter(io.StringIO(), quiet=True)
    reporter(_report())
    reporter(_report())
    assert reporter.summary() == {"steps": 8, "claimed": 8, "advanced": 4, "retrying": 2, "waiting": 0,
                                  "lost": 0, "failed": 2, "failed_by_reason": {"invalid_database": 2}}
    assert reporter.summary_line() == ("worker: claimed 8, advanced 4, retrying 2, "
                                       "failed 2 (invalid_database: 2)")


def test_quiet_prints_nothing_and_json_lines_parse() -> None:
    quiet = io.StringIO()
    WorkerReporter(quiet, quiet=True)(_report())
    assert quiet.getvalue() == ""
    out = io.StringIO()
    WorkerReporter(out, log_format="json")(_report())
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["outcome"] for r in records] == ["advanced", "failed", "retry"]
    assert records[1] == {"time": "2026-11-30T01:58:27Z", "attempt": "2" * 36, "name": "beta",
                          "customer": "cust-7", "from": "CALLBACK_RECEIVED", "to": "FAILED",
                          "trigger": "fail", "duration_ms": 12500, "outcome": "failed",
                          "reason": "invalid_database"}


def test_reason_text_goes_through_the_redaction() -> None:
    result = StepResult(ID, "retry", State.NEW, None, name="n", reason="bad ?apiSecret=hunter2 x")
    assert "hunter2" not in result_line(result, AT)


def test_iso_utc_is_the_one_cli_timestamp_format() -> None:
    assert iso_utc(AT) == "2026-11-30T01:58:27Z"

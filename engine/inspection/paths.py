"""What one attempt's diagram must show, computed from its history (pure: no I/O, no graph library).

``engine.inspection.render`` turns a ``PathView`` into DOT or Mermaid; keeping the bookkeeping here means the
numbering, times, retry counts, renewal counts and failure reasons are tested without any renderer.
Only these fields are read (DESIGN §8, no secrets): the attempt's id, element, flow, state and
failure_reason, and each history row's seq, trigger, source, dest, at, tries, outcome, note and error kind.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from persistence.retention import renewals_in
from states.attempt import Attempt, HistoryEntry
from states.model import FailureReason, State, Trigger

# More traversals of one edge than this (a restart loop) are elided in the middle of its label.
MAX_LINES_PER_EDGE = 6

_REASONS = frozenset(r.value for r in FailureReason)
# Characters that would end or break a Mermaid label (``#`` starts entity codes, ``;`` ends a
# statement), open a Graphviz HTML label, or start an escape in a DOT string.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f#;\\\"<>{}|`]+")
_NODE_ID = re.compile(r"[^A-Za-z0-9_]")


def clean(text: object, limit: int = 60) -> str:
    """Text from the database made safe for DOT and Mermaid labels (and short enough to lay out)."""
    out = " ".join(_UNSAFE.sub(" ", str(text)).split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def node_id(state: object) -> str:
    """A state name usable as a DOT/Mermaid identifier (history rows are strings from the database)."""
    return _NODE_ID.sub("_", str(state)) or "_"


@dataclass
class EdgeMark:
    """A transition the attempt took, with one label line per traversal (renewals summarised)."""

    source: str
    dest: str
    lines: list[str] = field(default_factory=list)
    failed: bool = False


@dataclass(frozen=True)
class PathView:
    """Everything an attempt diagram highlights, in renderer-neutral form."""

    title: str
    current: str
    visited: frozenset[str]
    edges: dict[tuple[str, str], EdgeMark]

    def label(self, source: str, dest: str, sep: str) -> str | None:
        """The edge's numbered label joined with ``sep``, or None when the attempt never took it."""
        mark = self.edges.get((source, dest))
        return sep.join(mark.lines) if mark else None


def _utc(at: datetime) -> datetime:
    return at.astimezone(timezone.utc) if at.tzinfo is not None else at  # naive values are already UTC


def _clock(at: datetime, with_date: bool) -> str:
    return _utc(at).strftime("%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _tries(n: int | None) -> str:
    return f" ({n} tries)" if n is not None and n > 1 else ""


def fail_reason(row: HistoryEntry, attempt: Attempt | None = None, *, last: bool = False) -> str:
    """Why a ``fail`` row failed: its note or error kind when that is a known reason, else the attempt's."""
    kind = (row.error or {}).get("kind") if isinstance(row.error, dict) else None
    for candidate in (row.note, kind):
        if candidate in _REASONS:
            return str(candidate)
    # Older or operator rows may carry only a free-text note; the attempt's own reason names the
    # latest failure, so it is trusted only for the last row.
    if last and attempt is not None and attempt.failure_reason:
        return str(attempt.failure_reason)
    return str(kind or row.note or "failed")


def _ranges(marked: Sequence[tuple[int, int]]) -> str:
    """``(position, seq)`` pairs -> ``4-6, 9``: one range per run of adjacent timeline rows.

    Runs follow positions in the timeline, not seq numbers: history retention leaves gaps in the
    seqs of renewals it folded into daily summaries, and those must not split a run.
    """
    runs: list[list[tuple[int, int]]] = [[marked[0]]]
    for item in marked[1:]:
        if item[0] == runs[-1][-1][0] + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return ", ".join(str(run[0][1]) if len(run) == 1 else f"{run[0][1]}-{run[-1][1]}" for run in runs)


def _elide(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES_PER_EDGE:
        return lines
    hidden = len(lines) - 5
    return [*lines[:2], f"… {hidden} more", *lines[-3:]]


def trace_path(attempt: Attempt, history: Sequence[HistoryEntry]) -> PathView:
    """Number the attempt's transitions in order and collect the labels for each edge it took."""
    rows = sorted(history, key=lambda r: r.seq)
    with_date = len({_utc(r.at).date() for r in rows}) > 1  # a path spanning days needs the date too
    edges: dict[tuple[str, str], EdgeMark] = {}
    visited = {State.NEW.value}
    renew_rows: dict[tuple[str, str], list[tuple[int, HistoryEntry]]] = {}
    for i, row in enumerate(rows):
        src, dst = node_id(row.source), node_id(row.dest)
        visited.update((src, dst))
        mark = edges.setdefault((src, dst), EdgeMark(src, dst))
        if row.trigger == Trigger.RENEW.value:
            renew_rows.setdefault((src, dst), []).append((i, row))
            continue
        text = f"{row.seq}. {clean(row.trigger, 24)} {_clock(row.at, with_date)}{_tries(row.tries)}"
        if row.trigger == Trigger.FAIL.value or row.dest == State.FAILED.value:
            mark.failed = True
            text += f": {clean(fail_reason(row, attempt, last=i == len(rows) - 1))}"
        mark.lines.append(text)
    # Renewals repeat for the life of an instance: one summary line per self-loop, not one per renewal.
    for key, marked in renew_rows.items():
        renewals = [r for _, r in marked]
        tries = sum(r.tries or 1 for r in renewals)
        # A daily summary row left by history retention stands for the renewals of its day.
        done = sum(renewals_in(r.trigger, r.outcome, r.note) for r in renewals)
        # Two short lines: one long label beside the self-loop collides with the PROVISIONED->FAILED label.
        numbers = _ranges([(i, r.seq) for i, r in marked])
        count = f"{numbers}. renew ×{done}" + (_tries(tries) if tries > done else "")
        edges[key].lines += [count, f"last {_clock(renewals[-1].at, with_date)}"]
    for mark in edges.values():
        mark.lines = _elide(mark.lines)
    title = (f"element-provisioner - attempt {clean(attempt.id, 40)}"
             f" ({clean(attempt.element_key, 30)}/{clean(attempt.flow, 10)}), times UTC")
    return PathView(title, node_id(attempt.state), frozenset(visited), edges)

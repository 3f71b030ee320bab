"""Attempt diagrams: the whole path re-applied from history, in DOT and in Mermaid (unit level)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import InvalidInputError
from engine.inspection.paths import MAX_LINES_PER_EDGE, clean, trace_path
from engine.inspection.render import render_attempt
from states.attempt import Attempt, HistoryEntry
from states.model import Flow, State

# The same text parsers as test_machine_diagram.py (repeated: test modules are not importable packages).
MERMAID_EDGE = re.compile(r"^\s*(?P<src>\w+)\s*-->\s*(?P<dst>\w+)\s*:\s*(?P<label>.*)$", re.M)
DOT_EDGE = re.compile(r"^\s*(?P<src>\w+)\s*->\s*(?P<dst>\w+)\s*\[(?P<attr>.*)\]\s*$", re.M)
DOT_NODE = re.compile(r"^\s*(?P<name>\w+)\s*\[(?P<attr>label=.*)\]\s*$", re.M)
DOT_LABEL = re.compile(r'label=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s\]]+))')

MakeAttempt = Callable[..., Attempt]
MakeHistory = Callable[..., list[HistoryEntry]]
SECRET = "s3cr3t-never-in-a-diagram"  # what conftest's make_attempt hides in ``secrets`` and ``last_error``
BLUE, RED, GREY = "#1d4ed8", "#b91c1c", "#9ca3af"


DotEdges = dict[tuple[str, str], tuple[str, str]]


def dot(attempt: Attempt, history: list[HistoryEntry]) -> tuple[DotEdges, dict[str, str]]:
    """``({(src, dst): (label, attrs)}, {node: attrs})`` of the attempt's DOT source."""
    source = str(render_attempt(attempt, history, "dot"))
    assert SECRET not in source
    edges = {}
    for m in DOT_EDGE.finditer(source):
        label = DOT_LABEL.search(m["attr"])
        assert label
        edges[(m["src"], m["dst"])] = (label["quoted"] or label["bare"], m["attr"])
    return edges, {m["name"]: m["attr"] for m in DOT_NODE.finditer(source)}


def mermaid(attempt: Attempt, history: list[HistoryEntry]) -> tuple[dict[tuple[str, str], str], str]:
    """``({(src, dst): label}, text)`` of the attempt's Mermaid source."""
    text = str(render_attempt(attempt, history, "mermaid"))
    assert SECRET not in text
    return {(m["src"], m["dst"]): m["label"] for m in MERMAID_EDGE.finditer(text)}, text


def lines(label: str) -> list[str]:
    """DOT labels of taken edges are left-justified lines (``\\l`` after each)."""
    return [part for part in label.split("\\l") if part]


def assert_current(nodes: dict[str, str], text: str, state: str, css: str) -> None:
    assert "(current)" in nodes[state] and "penwidth=3.5" in nodes[state]
    assert sum("(current)" in attrs for attrs in nodes.values()) == 1
    assert re.search(rf'^\s*state "{state} \(current\)" as {state}$', text, re.M)
    assert re.search(rf"^\s*Class {state} s_{css}_current$", text, re.M)
    assert len(re.findall(r"_current$", text, re.M)) == 1


def test_provisioned_oauth1_path(make_attempt: MakeAttempt, make_history: MakeHistory) -> None:
    attempt = make_attempt(State.PROVISIONED)
    history = make_history(
        ("issue_token", "NEW", "TOKEN_ISSUED", 1), ("redirect", "TOKEN_ISSUED", "REDIRECTED", 2),
        ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED", 40),
        ("provision", "CALLBACK_RECEIVED", "PROVISIONED", 42),
    )
    edges, nodes = dot(attempt, history)
    taken = {
        ("NEW", "TOKEN_ISSUED"): "1. issue_token 12:00:01",
        ("TOKEN_ISSUED", "REDIRECTED"): "2. redirect 12:00:02",
        ("REDIRECTED", "CALLBACK_RECEIVED"): "3. receive_callback 12:00:40",
        ("CALLBACK_RECEIVED", "PROVISIONED"): "4. provision 12:00:42",
    }
    for key, label in taken.items():
        assert lines(edges[key][0]) == [label]
        assert f'color="{BLUE}"' in edges[key][1] and "style=solid" in edges[key][1]
    # untaken edges keep the trigger name and the (grey, dashed) graph default
    assert edges[("NEW", "REDIRECTED")] == ("redirect", "label=redirect")
    assert lines(edges[("NEW", "PROVISIONED")][0]) == ["quick_provision"]
    for state in ("NEW", "TOKEN_ISSUED", "REDIRECTED", "CALLBACK_RECEIVED"):
        assert 'fillcolor="#dbeafe"' in nodes[state]
    m_edges, text = mermaid(attempt, history)
    assert {k: m_edges[k] for k in taken} == taken
    assert m_edges[("NEW", "REDIRECTED")] == "redirect"
    assert_current(nodes, text, "PROVISIONED", "provisioned")
    assert re.search(r"^\s*Class TOKEN_ISSUED s_visited$", text, re.M)
    assert "[*] --> NEW" in text  # the start marker stays on NEW whatever the current state


def test_denied_attempt_has_a_red_fail_edge_with_its_reason(make_attempt: MakeAttempt,
                                                            make_history: MakeHistory) -> None:
    attempt = make_attempt(State.FAILED, failure_reason="user_denied")
    error = {"kind": "user_denied", "message": "provider redirected with error=access_denied", "hint": "h"}
    history = make_history(
        ("issue_token", "NEW", "TOKEN_ISSUED", 1), ("redirect", "TOKEN_ISSUED", "REDIRECTED", 2),
        ("fail", "REDIRECTED", "FAILED", 30, {"note": "callback", "error": error}),
    )
    edges, nodes = dot(attempt, history)
    label, attrs = edges[("REDIRECTED", "FAILED")]
    assert lines(label) == ["3. fail 12:00:30: user_denied"]
    assert f'color="{RED}"' in attrs and "penwidth=2.2" in attrs
    assert edges[("NEW", "FAILED")] == ("fail", "label=fail")
    m_edges, text = mermaid(attempt, history)
    assert m_edges[("REDIRECTED", "FAILED")] == "3. fail 12:00:30: user_denied"
    assert_current(nodes, text, "FAILED", "failed")
    assert "CALLBACK_RECEIVED" in nodes and 'fillcolor="#dbeafe"' not in nodes["CALLBACK_RECEIVED"]


def test_reason_falls_back_to_the_attempt_for_the_last_row(make_attempt: MakeAttempt,
                                                          make_history: MakeHistory) -> None:
    attempt = make_attempt(State.FAILED, failure_reason="callback_timeout")
    history = make_history(("redirect", "NEW", "REDIRECTED", 1), ("fail", "REDIRECTED", "FAILED", 1801))
    m_edges, _ = mermaid(attempt, history)
    assert m_edges[("REDIRECTED", "FAILED")] == "2. fail 12:30:01: callback_timeout"


def test_renewals_are_counted_on_the_self_loop(make_attempt: MakeAttempt, make_history: MakeHistory) -> None:
    attempt = make_attempt(State.PROVISIONED, Flow.QUICK, renewals=3)
    history = make_history(
        ("quick_provision", "NEW", "PROVISIONED", 1),
        *[("renew", "PROVISIONED", "PROVISIONED", 3600 * i) for i in (1, 2, 3)],
    )
    edges, nodes = dot(attempt, history)
    label, attrs = edges[("PROVISIONED", "PROVISIONED")]
    assert lines(label) == ["2-4. renew ×3", "last 15:00:00"]
    assert f'color="{BLUE}"' in attrs
    assert lines(edges[("NEW", "PROVISIONED")][0]) == ["1. quick_provision 12:00:01"]
    m_edges, text = mermaid(attempt, history)
    assert m_edges[("PROVISIONED", "PROVISIONED")] == "2-4. renew ×3 | last 15:00:00"
    assert_current(nodes, text, "PROVISIONED", "provisioned")


def test_retried_steps_show_their_tries(make_attempt: MakeAttempt, make_history: MakeHistory) -> None:
    attempt = make_attempt(State.PROVISIONED, Flow.OAUTH2)
    history = make_history(
        ("redirect", "NEW", "REDIRECTED", 1, {"tries": 3}),
        ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED", 50),
        ("provision", "CALLBACK_RECEIVED", "PROVISIONED", 55, {"tries": 2}),
        ("renew", "PROVISIONED", "PROVISIONED", 3600, {"tries": 4}),
    )
    edges, _ = dot(attempt, history)
    assert lines(edges[("NEW", "REDIRECTED")][0]) == ["1. redirect 12:00:01 (3 tries)"]
    assert lines(edges[("REDIRECTED", "CALLBACK_RECEIVED")][0]) == ["2. receive_callback 12:00:50"]
    assert lines(edges[("PROVISIONED", "PROVISIONED")][0]) == ["4. renew ×1 (4 tries)", "last 13:00:00"]
    m_edges, _ = mermaid(attempt, history)
    assert m_edges[("CALLBACK_RECEIVED", "PROVISIONED")] == "3. provision 12:00:55 (2 tries)"
    assert edges[("TOKEN_ISSUED", "REDIRECTED")] == ("redirect", "label=redirect")  # oauth2 skipped it


def test_restart_numbers_every_traversal_of_an_edge(make_attempt: MakeAttempt,
                                                    make_history: MakeHistory) -> None:
    attempt = make_attempt(State.REDIRECTED)
    history = make_history(
        ("issue_token", "NEW", "TOKEN_ISSUED", 1),
        ("fail", "TOKEN_ISSUED", "FAILED", 9, {"tries": 5, "note": "retries_exhausted"}),
        ("restart", "FAILED", "NEW", 100, {"note": "operator"}),
        ("issue_token", "NEW", "TOKEN_ISSUED", 101), ("redirect", "TOKEN_ISSUED", "REDIRECTED", 102),
    )
    edges, nodes = dot(attempt, history)
    assert lines(edges[("NEW", "TOKEN_ISSUED")][0]) == ["1. issue_token 12:00:01", "4. issue_token 12:01:41"]
    assert lines(edges[("TOKEN_ISSUED", "FAILED")][0]) == ["2. fail 12:00:09 (5 tries): retries_exhausted"]
    assert lines(edges[("FAILED", "NEW")][0]) == ["3. restart 12:01:40"]
    m_edges, text = mermaid(attempt, history)
    assert m_edges[("NEW", "TOKEN_ISSUED")] == "1. issue_token 12:00:01 | 4. issue_token 12:01:41"
    assert_current(nodes, text, "REDIRECTED", "visited")


def test_new_attempt_without_history(make_attempt: MakeAttempt) -> None:
    edges, nodes = dot(make_attempt(State.NEW), [])
    assert all(f'color="{BLUE}"' not in attrs for _, attrs in edges.values())
    _, text = mermaid(make_attempt(State.NEW), [])
    assert_current(nodes, text, "NEW", "visited")


def test_hostile_text_from_the_database_cannot_break_the_diagram(make_attempt: MakeAttempt,
                                                                 make_history: MakeHistory) -> None:
    evil = 'x"]; A -> B [label="<b>";\n#35; {z} \\l'
    attempt = make_attempt(State.FAILED, id='id"];evil', element_key="<qb>", failure_reason=None)
    history = make_history(("fail", "NEW", "FAILED", 1, {"note": evil, "error": {"kind": evil}}))
    edges, nodes = dot(attempt, history)
    assert len(edges) == 18 and ("A", "B") not in edges  # exactly the machine's edges: nothing injected
    assert set(nodes) == {s.value for s in State}
    label = lines(edges[("NEW", "FAILED")][0])
    assert len(label) == 1 and label[0].startswith("1. fail 12:00:01: x ]")
    m_edges, text = mermaid(attempt, history)
    assert not any(c in m_edges[("NEW", "FAILED")] for c in '#;"<>{}\\')
    assert len(MERMAID_EDGE.findall(text)) == 18


def test_rows_the_machine_does_not_allow_are_still_drawn(make_attempt: MakeAttempt,
                                                         make_history: MakeHistory) -> None:
    """A corrupt history (an edge or state the machine lacks) must show up, not vanish from the picture."""
    history = make_history(("provision", "NEW", "CALLBACK_RECEIVED", 1),
                           ("zap", "CALLBACK_RECEIVED", "LIMBO", 2))
    edges, nodes = dot(make_attempt(State.CALLBACK_RECEIVED), history)
    assert lines(edges[("NEW", "CALLBACK_RECEIVED")][0]) == ["1. provision 12:00:01"]
    assert lines(edges[("CALLBACK_RECEIVED", "LIMBO")][0]) == ["2. zap 12:00:02"]
    assert "LIMBO" in nodes and len(edges) == 20
    m_edges, _ = mermaid(make_attempt(State.CALLBACK_RECEIVED), history)
    assert m_edges[("CALLBACK_RECEIVED", "LIMBO")] == "2. zap 12:00:02"


def test_long_restart_loops_are_elided(make_attempt: MakeAttempt, make_history: MakeHistory) -> None:
    steps: list[tuple[Any, ...]] = []
    for i in range(10):
        steps += [("fail", "NEW", "FAILED", 10 * i + 1, {"note": "permanent_error"}),
                  ("restart", "FAILED", "NEW", 10 * i + 2)]
    path = trace_path(make_attempt(State.NEW), make_history(*steps))
    fail_lines = path.edges[("NEW", "FAILED")].lines
    assert len(fail_lines) == MAX_LINES_PER_EDGE
    assert fail_lines[0].startswith("1. fail") and fail_lines[2] == "… 5 more"
    assert fail_lines[-1].startswith("19. fail")


def test_a_path_over_several_days_shows_dates(make_attempt: MakeAttempt, make_history: MakeHistory) -> None:
    history = make_history(("quick_provision", "NEW", "PROVISIONED", 1),
                           ("renew", "PROVISIONED", "PROVISIONED", 86400 * 2))
    path = trace_path(make_attempt(State.PROVISIONED, Flow.QUICK), history)
    assert path.edges[("NEW", "PROVISIONED")].lines == ["1. quick_provision 03-01 12:00:01"]
    assert path.edges[("PROVISIONED", "PROVISIONED")].lines == ["2. renew ×1", "last 03-03 12:00:00"]


def test_renewal_numbers_are_compressed_into_ranges(make_attempt: MakeAttempt,
                                                    make_history: MakeHistory) -> None:
    history = make_history(
        ("quick_provision", "NEW", "PROVISIONED", 1), ("renew", "PROVISIONED", "PROVISIONED", 2),
        ("renew", "PROVISIONED", "PROVISIONED", 3),
        ("fail", "PROVISIONED", "FAILED", 4, {"note": "renewal_rejected"}),
        ("restart", "FAILED", "NEW", 5), ("quick_provision", "NEW", "PROVISIONED", 6),
        ("renew", "PROVISIONED", "PROVISIONED", 7),
    )
    path = trace_path(make_attempt(State.PROVISIONED, Flow.QUICK), history)
    assert path.edges[("PROVISIONED", "PROVISIONED")].lines[0] == "2-3, 7. renew ×3"
    assert path.edges[("PROVISIONED", "FAILED")].lines == ["4. fail 12:00:04: renewal_rejected"]


def test_unknown_format(make_attempt: MakeAttempt) -> None:
    with pytest.raises(InvalidInputError, match="must be one of svg, png, mermaid, dot"):
        render_attempt(make_attempt(), [], "gif")


def test_attempt_svg(need_dot: str, make_attempt: MakeAttempt, make_history: MakeHistory) -> None:
    history = make_history(("quick_provision", "NEW", "PROVISIONED", 1))
    svg = render_attempt(make_attempt(State.PROVISIONED, Flow.QUICK), history, "svg")
    assert isinstance(svg, str) and "<svg" in svg and "<!--" not in svg
    assert "1. quick_provision 12:00:01" in svg and "(current)" in svg and SECRET not in svg


def test_clean() -> None:
    assert clean('a"b;c#d<e>f\\g\nh') == "a b c d e f g h"
    assert clean("x" * 100, 10) == "x" * 9 + "…"

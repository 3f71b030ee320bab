"""Diagrams of the provisioning machine and of one attempt's path (DESIGN §8).

Both come from the machine data in ``states/`` through transitions' diagram extension: a
``GraphMachine`` built by ``states.machine.build_machine`` with the graphviz engine (DOT, SVG, PNG)
or the mermaid engine (Mermaid text). transitions only highlights the *last* transition, so for an
attempt we re-apply its whole history: every edge taken is styled and labelled with its step
numbers and times (see ``engine.inspection.paths``), and the current state is marked.

DOT and Mermaid text need no executable; SVG and PNG need Graphviz's ``dot`` on PATH.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transitions.extensions import GraphMachine

from engine.errors import InvalidInputError, ProvisionError
from engine.inspection.paths import PathView, trace_path
from states.attempt import Attempt, HistoryEntry
from states.machine import build_machine
from states.model import State

TITLE = "element-provisioner"
FORMATS: tuple[str, ...] = ("svg", "png", "mermaid", "dot")
MACHINE_SVG = "provisioning.svg"
MACHINE_MERMAID = "provisioning.mmd"

_OK, _FAIL = State.PROVISIONED.value, State.FAILED.value
_BLUE, _GREEN, _RED, _GREY = "#1d4ed8", "#15803d", "#b91c1c", "#9ca3af"

# Node looks: base look per kind of state, plus an outline for the current state. Graphviz and
# Mermaid spell attributes differently, so each engine gets its own table (transitions turns the
# Mermaid one into ``classDef s_<name> ...`` lines and drops graphviz-only keys like ``shape``).
_DOT_NODE: dict[str, dict[str, str]] = {
    "default": {"shape": "box", "style": "rounded,filled", "fillcolor": "white", "color": "black",
                "fontname": "Helvetica", "fontsize": "12", "peripheries": "1", "penwidth": "1"},
    "visited": {"fillcolor": "#dbeafe", "color": _BLUE},
    "provisioned": {"fillcolor": "#bbf7d0", "color": _GREEN, "peripheries": "2", "penwidth": "1.5"},
    "failed": {"fillcolor": "#fecaca", "color": _RED, "peripheries": "2", "penwidth": "1.5"},
    "disconnected": {"fillcolor": "#e5e7eb", "color": "#4b5563", "peripheries": "2", "penwidth": "1.5"},
}
_MERMAID_NODE: dict[str, dict[str, str]] = {
    "default": {"fill": "white", "stroke": "black"},
    "visited": {"fill": "#dbeafe", "stroke": _BLUE},
    "provisioned": {"fill": "#bbf7d0", "stroke": _GREEN, "stroke-width": "3px"},
    "failed": {"fill": "#fecaca", "stroke": _RED, "stroke-width": "3px"},
    "disconnected": {"fill": "#e5e7eb", "stroke": "#4b5563", "stroke-width": "3px"},
}
_CURRENT_DOT = {"penwidth": "3.5", "fontname": "Helvetica-Bold"}
_CURRENT_MERMAID = {"stroke-width": "5px", "font-weight": "bold"}
_DOT_EDGE: dict[str, dict[str, str]] = {
    "default": {"color": "black", "fontname": "Helvetica", "fontsize": "10"},
    "untaken": {"color": _GREY, "fontcolor": _GREY, "style": "dashed"},
    "taken": {"color": _BLUE, "fontcolor": _BLUE, "penwidth": "2.2", "style": "solid"},
    "failed": {"color": _RED, "fontcolor": _RED, "penwidth": "2.2", "style": "solid"},
}
# Graph attributes for graphviz; Mermaid understands only the direction (transitions emits every
# machine attribute as a line, so anything else would break the Mermaid text).
_DOT_GRAPH = {"directed": "true", "strict": "false", "rankdir": "LR", "nodesep": "0.45", "ranksep": "0.8",
              "fontname": "Helvetica", "fontsize": "15", "labelloc": "t", "pad": "0.25"}
_MERMAID_GRAPH = {"rankdir": "LR"}
_COMMENT = re.compile(rb"<!--.*?-->\s*", re.S)


class GraphvizMissingError(ProvisionError):
    """SVG or PNG was asked for but Graphviz (the ``dot`` executable) is not installed."""

    kind = "graphviz_missing"

    def __init__(self, fmt: str, detail: str = "the Graphviz `dot` executable is not on PATH",
                 *, package: bool = False) -> None:
        # The Python package comes with the [diagrams] extra; the `dot` program from the system.
        fix = ("Install the [diagrams] extra (pip install 'element-provisioner[diagrams]', or "
               "pip install '.[diagrams]' from a checkout)" if package else
               "Install Graphviz (apt-get install graphviz, or brew install graphviz on macOS)")
        super().__init__(f"cannot render {fmt}: {detail}",
                         hint=f"{fix}, or use --format mermaid, which works without it.")
        self.format = fmt


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        allowed = ", ".join(FORMATS)
        raise InvalidInputError("format", f"{str(fmt)[:20]!r} is not supported; must be one of {allowed}")
    return fmt


def _node_styles(mermaid: bool, current: str | None) -> dict[str, dict[str, str]]:
    """The node style table, with a ``<kind>_current`` variant of each kind for the current state."""
    base = _MERMAID_NODE if mermaid else _DOT_NODE
    extra = _CURRENT_MERMAID if mermaid else _CURRENT_DOT
    table = {name: dict(attrs) for name, attrs in base.items()}
    if current is not None:
        table.update({f"{name}_current": {**attrs, **extra} for name, attrs in base.items()})
    return table


def _kind(state: str, visited: frozenset[str] | None) -> str:
    if state == _OK:
        return "provisioned"
    if state == _FAIL:
        return "failed"
    if state == State.DISCONNECTED.value:  # terminal, not a failure: its own look
        return "disconnected"
    return "visited" if visited is not None and state in visited else "default"


def _graph(fmt: str, title: str, path: PathView | None) -> Any:
    """Build the machine with transitions' diagram extension and style it (for ``path``, if given)."""
    mermaid = fmt == "mermaid"
    if not mermaid:
        try:
            import graphviz  # noqa: F401 - transitions silently falls back to Mermaid without it
        except ImportError:
            raise GraphvizMissingError(fmt, "the graphviz Python package is not installed",
                                      package=True) from None
    # Mermaid front matter is YAML: a bare title line is not a mapping, so give transitions the key too.
    machine_title = f"title: {json.dumps(title, ensure_ascii=False)}" if mermaid else title
    # Typed as Any: build_machine is annotated with the base Machine, which lacks the graph attributes.
    machine: Any = build_machine(
        model=GraphMachine.self_literal,
        initial=State.NEW,  # where every attempt starts (Mermaid's [*]); the current state is styled below
        machine_cls=GraphMachine,
        graph_engine="mermaid" if mermaid else "graphviz",
        title=machine_title,
    )
    # Instance attributes shadow GraphMachine's class-level defaults for this machine only.
    machine.machine_attributes = dict(_MERMAID_GRAPH if mermaid else _DOT_GRAPH)
    machine.style_attributes = {
        "node": _node_styles(mermaid, path.current if path else None),
        "edge": {**_DOT_EDGE, "default": {**_DOT_EDGE["default"], **(_DOT_EDGE["untaken"] if path else {})}},
        "graph": {"default": {}},
    }
    graph = machine.model_graphs[id(machine)]
    graph.reset_styling()  # drop transitions' own "active"/"previous" marks; we set every style below
    # The markup dict is the machine-as-data that transitions' graph classes read on every get_graph();
    # editing labels in it (on this throwaway machine) needs no GraphMachine or Graph subclass.
    markup = machine.get_markup_config()
    for state in markup["states"]:
        name = state["name"]
        current = path is not None and name == path.current
        kind = _kind(name, path.visited if path else None)
        # "" keeps the graph-wide default look without repeating every attribute on the node
        graph.set_node_style(name, f"{kind}_current" if current else "" if kind == "default" else kind)
        if current:
            state["label"] = f"{name} (current)" if mermaid else f"{name}\\l(current)"
    if path is not None:
        _apply_path(markup, graph, path, mermaid)
    return machine.get_graph(title=machine_title)


def _apply_path(markup: dict[str, Any], graph: Any, path: PathView, mermaid: bool) -> None:
    """Label and style every edge the attempt took, adding edges the machine lacks (corrupt rows)."""
    known = {(t["source"], t["dest"]) for t in markup["transitions"]}
    for src, dst in path.edges:
        if (src, dst) not in known:
            markup["transitions"].append({"trigger": "unexpected", "source": src, "dest": dst})
            known.add((src, dst))
    labelled: set[tuple[str, str]] = set()
    for transition in list(markup["transitions"]):
        key = (transition["source"], transition["dest"])
        if key in labelled:
            # Two triggers on one edge (renew, remove_duplicate): the path's label already lists
            # every row taken over it, so the edge is drawn once.
            markup["transitions"].remove(transition)
            continue
        if key in path.edges:
            labelled.add(key)
            # Mermaid labels are one line; " | " is what transitions itself uses to join labels.
            label = path.label(*key, sep=" | " if mermaid else "\\l")
            transition["label"] = label if mermaid else f"{label}\\l"
            graph.custom_styles["edge"][key[0]][key[1]] = "failed" if path.edges[key].failed else "taken"
    # A state the machine does not know (corrupt rows); sorted so the same input gives the same output.
    for state in sorted(path.visited - {s["name"] for s in markup["states"]}):
        markup["states"].append({"name": state})
        graph.set_node_style(state, "visited")


def _output(graph: Any, fmt: str) -> str | bytes:
    """DOT or Mermaid source as text; SVG (text, comments stripped) or PNG (bytes) through ``dot``."""
    if fmt in ("dot", "mermaid"):
        return str(graph.source).rstrip("\n") + "\n"  # one final newline, as the committed file has
    import graphviz

    if shutil.which("dot") is None:
        raise GraphvizMissingError(fmt)
    try:
        data: bytes = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphvizMissingError(fmt) from None
    return normalise_svg(data).decode("utf-8") if fmt == "svg" else data


def normalise_svg(svg: bytes | str) -> bytes:
    """SVG without comments: Graphviz writes its version and per-node comments, which would make the
    committed ``diagrams/provisioning.svg`` drift with every Graphviz upgrade for no visible change."""
    data = svg.encode("utf-8") if isinstance(svg, str) else svg
    return _COMMENT.sub(b"", data)


def render_machine(fmt: str) -> str | bytes:
    """The whole provisioning machine as ``svg`` (str), ``png`` (bytes), ``mermaid`` or ``dot`` (str).

    Raises ``InvalidInputError`` for another format and ``GraphvizMissingError`` for svg/png
    without ``dot``.
    """
    fmt = _check_format(fmt)
    return _output(_graph(fmt, TITLE, None), fmt)


def render_attempt(attempt: Attempt, history: Sequence[HistoryEntry], fmt: str) -> str | bytes:
    """One attempt's actual path over the machine: each transition taken numbered in order with its
    time (and tries), the failing edge with its reason, renewals counted, the current state marked.

    Reads no secrets: only the fields named in ``engine.inspection.paths``.
    """
    fmt = _check_format(fmt)
    path = trace_path(attempt, history)
    return _output(_graph(fmt, path.title, path), fmt)


def write_machine_diagrams(directory: str | Path) -> list[Path]:
    """Regenerate ``provisioning.svg`` and ``provisioning.mmd`` in ``directory``; returns the paths.

    The SVG is normalised (``normalise_svg``) so the same machine always gives the same bytes.
    Raises ``GraphvizMissingError`` (writing nothing) when ``dot`` is missing.
    """
    out = Path(directory)
    svg = render_machine("svg")  # first: fail before touching either file
    mermaid = render_machine("mermaid")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / MACHINE_SVG, out / MACHINE_MERMAID]
    paths[0].write_bytes(normalise_svg(svg))
    paths[1].write_text(str(mermaid), encoding="utf-8")
    return paths

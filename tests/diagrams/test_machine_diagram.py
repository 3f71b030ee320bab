"""The machine diagram: rendered from ``states.model.TRANSITIONS``, checked as text (no ``dot`` needed),
plus the committed ``diagrams/`` files checked for drift and the missing-Graphviz error."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from engine.errors import InvalidInputError, ProvisionError
from engine.inspection import render as diagrams
from engine.inspection.render import (
    GraphvizMissingError,
    normalise_svg,
    render_machine,
    write_machine_diagrams,
)
from states.model import TERMINAL, TRANSITIONS, State

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "diagrams"
REGENERATE = ("regenerate: python -c 'import engine.inspection.render as d; "
              "d.write_machine_diagrams(\"diagrams\")'")

# Same idea as transitions' tests/test_mermaid.py: parse the rendered text, not the picture.
MERMAID_EDGE = re.compile(r"^\s*(?P<src>\w+)\s*-->\s*(?P<dst>\w+)\s*:\s*(?P<label>.*)$", re.M)
DOT_EDGE = re.compile(r"^\s*(?P<src>\w+)\s*->\s*(?P<dst>\w+)\s*\[(?P<attr>.*)\]\s*$", re.M)
DOT_NODE = re.compile(r"^\s*(?P<name>\w+)\s*\[(?P<attr>label=.*)\]\s*$", re.M)
DOT_LABEL = re.compile(r'label=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s\]]+))')


def dot_edges(source: str) -> dict[tuple[str, str], str]:
    """``{(src, dst): label}`` from DOT source."""
    out = {}
    for m in DOT_EDGE.finditer(source):
        label = DOT_LABEL.search(m["attr"])
        assert label, m.group(0)
        out[(m["src"], m["dst"])] = label["quoted"] if label["quoted"] is not None else label["bare"]
    return out


def expected_edges() -> dict[tuple[str, str], set[str]]:
    want: dict[tuple[str, str], set[str]] = {}
    for t in TRANSITIONS:
        want.setdefault((t.source.value, t.dest.value), set()).add(t.trigger.value)
    return want


def test_mermaid_has_every_transition_and_nothing_else() -> None:
    text = str(render_machine("mermaid"))
    got = {(m["src"], m["dst"]): set(m["label"].split(" | ")) for m in MERMAID_EDGE.finditer(text)}
    assert got == expected_edges()
    assert "stateDiagram-v2" in text and "direction LR" in text
    assert 'title: "element-provisioner"' in text.split("stateDiagram-v2")[0]  # YAML front matter
    assert "[*] --> NEW" in text


def test_dot_has_every_transition_and_nothing_else() -> None:
    got = {key: set(label.split(" | ")) for key, label in dot_edges(str(render_machine("dot"))).items()}
    assert got == expected_edges()


def test_dot_layout_title_and_terminal_states_stand_out() -> None:
    source = str(render_machine("dot"))
    assert "rankdir=LR" in source
    assert 'label="element-provisioner"' in source
    nodes = {m["name"]: m["attr"] for m in DOT_NODE.finditer(source)}
    assert set(nodes) == {s.value for s in State}
    for state in TERMINAL:
        assert "peripheries=2" in nodes[state.value]  # drawn with a double border
    assert "#15803d" in nodes["PROVISIONED"] and "#b91c1c" in nodes["FAILED"]  # green / red
    for state in set(State) - TERMINAL:
        assert "peripheries" not in nodes[state.value] and "color" not in nodes[state.value]


def test_mermaid_terminal_states_have_their_own_classes() -> None:
    text = str(render_machine("mermaid"))
    assert re.search(r"^\s*Class PROVISIONED s_provisioned$", text, re.M)
    assert re.search(r"^\s*Class FAILED s_failed$", text, re.M)
    assert re.search(r"^\s*classDef s_provisioned fill:#bbf7d0,stroke:#15803d", text, re.M)
    assert re.search(r"^\s*Class NEW s_default$", text, re.M)


def test_machine_text_is_deterministic() -> None:
    assert render_machine("mermaid") == render_machine("mermaid")
    assert render_machine("dot") == render_machine("dot")


@pytest.mark.parametrize("fmt", ["jpeg", "SVG", "", "../svg"])
def test_unknown_format_is_invalid_input(fmt: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        render_machine(fmt)
    assert info.value.field == "format"
    assert "must be one of svg, png, mermaid, dot" in str(info.value)


# --- drift of the committed files ---------------------------------------------------------------


def test_committed_mermaid_matches_the_machine() -> None:
    committed = (COMMITTED / diagrams.MACHINE_MERMAID).read_text(encoding="utf-8")
    assert committed == render_machine("mermaid"), f"diagrams/provisioning.mmd is stale; {REGENERATE}"


def test_committed_svg_matches_the_machine(need_dot: str) -> None:
    committed = normalise_svg((COMMITTED / diagrams.MACHINE_SVG).read_bytes())
    rendered = normalise_svg(render_machine("svg"))
    # Layout can differ between Graphviz releases as well as when the machine changes.
    assert committed == rendered, f"diagrams/provisioning.svg is stale (or Graphviz changed); {REGENERATE}"


def test_svg_is_normalised_and_deterministic(need_dot: str) -> None:
    first, second = render_machine("svg"), render_machine("svg")
    assert isinstance(first, str) and first == second
    assert "<!--" not in first and "<svg" in first
    assert normalise_svg(b"<a><!-- Generated by graphviz version 9 -->\n<b/></a>") == b"<a><b/></a>"


def test_png_is_a_png(need_dot: str) -> None:
    png = render_machine("png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")


def test_write_machine_diagrams_writes_what_the_drift_test_compares(need_dot: str, tmp_path: Path) -> None:
    svg, mmd = write_machine_diagrams(tmp_path / "out")
    assert mmd.read_text(encoding="utf-8") == render_machine("mermaid")
    assert svg.read_bytes() == normalise_svg(render_machine("svg"))


# --- Graphviz missing ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_missing_dot_says_how_to_install_and_offers_mermaid(fmt: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None)
    with pytest.raises(GraphvizMissingError) as info:
        render_machine(fmt)
    err = info.value
    assert isinstance(err, ProvisionError) and err.kind == "graphviz_missing"
    text = str(err)
    assert "apt-get install graphviz" in text and "brew install graphviz" in text
    assert "--format mermaid" in text and fmt in text


def test_missing_dot_detected_by_graphviz_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """``which`` may find a ``dot`` that cannot run; graphviz's ExecutableNotFound maps to the same error."""
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: "/usr/bin/dot")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GraphvizMissingError):
        render_machine("svg")


def test_text_formats_and_writer_without_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "NEW -> TOKEN_ISSUED" in str(render_machine("dot"))
    assert "NEW --> TOKEN_ISSUED" in str(render_machine("mermaid"))
    with pytest.raises(GraphvizMissingError):
        write_machine_diagrams(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


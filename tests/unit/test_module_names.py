"""No module or package of ours shadows a standard-library or dependency module (issue 14 item 7).

A module called ``types`` or ``requests`` inside a package works until someone runs a file of that
package as a script, or a tool puts the package directory on ``sys.path``; then ``import types``
finds ours. Names that only the project's own distribution provides (``engine``, ``states``...)
are allowed.
"""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("states", "persistence", "engine", "sandbox")
PROJECT_DISTRIBUTION = "element-provisioner"


def our_names() -> dict[str, list[str]]:
    """Basename -> the paths of our modules and packages that carry it (``__init__``/``__main__`` aside)."""
    names: dict[str, list[str]] = {}
    for top in TOP_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "__pycache__" in relative.parts:
                continue
            parts = [*relative.parts[:-1], path.stem]
            for depth, name in enumerate(parts):
                if not (name.startswith("__") and name.endswith("__")):
                    names.setdefault(name, []).append("/".join(parts[: depth + 1]))
    return {name: sorted(set(paths)) for name, paths in names.items()}


def test_the_walk_sees_our_modules() -> None:
    names = our_names()
    assert {"engine", "config", "columns", "machine", "redaction"} <= set(names)
    assert importlib.metadata.distribution(PROJECT_DISTRIBUTION).metadata["Name"] == PROJECT_DISTRIBUTION


def test_no_name_shadows_the_stdlib_or_a_dependency() -> None:
    installed = importlib.metadata.packages_distributions()
    clashes = {}
    for name, paths in our_names().items():
        owners = set(installed.get(name, ())) - {PROJECT_DISTRIBUTION}
        if name in sys.stdlib_module_names:
            owners.add("the standard library")
        if owners:
            clashes[name] = (sorted(owners), paths)
    assert clashes == {}

"""A plain, non-editable ``pip install .`` ships every package and the migration files."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/integration/ -> the repository


def test_wheel_contains_every_package_and_the_migrations(tmp_path: Path) -> None:
    # Build exactly as `pip install .` does: isolated build with the declared build system.
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = tmp_path.glob("element_provisioner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("engine", "states", "persistence", "sandbox"):
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")
                   if "__pycache__" not in p.parts}
        assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert "persistence/migrations/script.py.mako" in names
    assert "persistence/migrations/versions/0001_initial.py" in names
    assert "persistence/migrations/versions/0002_attempts_fillfactor.py" in names
    assert not any(n.startswith(("tests/", "bench/", "diagrams/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "provision = engine.main:main" in zipfile.ZipFile(wheel).read(entry).decode()

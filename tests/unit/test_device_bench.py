"""bench/device_scale.sh installs bench/device_requirements.txt from wheels on a machine that can
fetch nothing: a dependency added to setup.cfg but not there would fail that one call."""
from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirements(text: str) -> set[str]:
    """The requirement lines of ``text`` (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {line for line in lines if line}


def test_the_device_requirements_are_setup_cfgs_runtime_and_bench_dependencies() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    expected = requirements(cfg["options"]["install_requires"])
    for extra in ("postgres", "serve", "bench"):
        expected |= requirements(extras[extra])
    expected = {r for r in expected if not r.startswith("pyinstrument")}  # --profile only
    assert requirements((ROOT / "bench" / "device_requirements.txt").read_text()) == expected

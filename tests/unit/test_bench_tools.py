"""Pure helpers of the scale and renewal benchmarks (no server, no timing)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pg_local  # noqa: E402
import renewals  # noqa: E402
import scale  # noqa: E402


def test_the_missing_server_binaries_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pg_local.PostgresBinariesMissingError) as caught:
        pg_local.find_bin_dir()
    assert "pip install -e '.[bench]'" in str(caught.value) and "--pg-bin" in str(caught.value)


def test_a_folder_without_the_binaries_is_refused(tmp_path: Path) -> None:
    with pytest.raises(pg_local.PostgresBinariesMissingError, match="no initdb and postgres"):
        pg_local.find_bin_dir(str(tmp_path))


def test_the_caveat_appears_only_when_cores_are_short() -> None:
    text = scale.caveat(2, 12)
    assert text is not None and "2 cores" in text and "at least 16 cores" in text
    assert scale.caveat(16, 12) is None


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (renewals.percentile(values, 0.5), renewals.percentile(values, 0.99)) == (50.0, 99.0)
    assert renewals.percentile([3.0], 0.99) == 3.0

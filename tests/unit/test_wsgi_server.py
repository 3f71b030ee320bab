"""``engine.web.wsgi_server``: without waitress, ``provision serve`` stops naming the extra."""
from __future__ import annotations

import sys
import threading

import pytest

from engine.config import ServeSettings, serve_settings_from_env
from engine.errors import InvalidInputError, ProvisionError
from engine.web.wsgi_server import run_server


def test_missing_waitress_names_the_serve_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "waitress", None)  # import waitress -> ImportError
    with pytest.raises(ProvisionError) as err:
        run_server(lambda env, start: [], "127.0.0.1", 0, settings=ServeSettings(),
                   ready=lambda port: None, stop=threading.Event())
    assert "waitress" in str(err.value) and "[serve]" in (err.value.hint or "")


def test_reuse_port_setting() -> None:
    assert serve_settings_from_env({}).reuse_port is False
    assert serve_settings_from_env({"PROVISION_SERVE_REUSEPORT": "true"}).reuse_port is True
    with pytest.raises(InvalidInputError, match="PROVISION_SERVE_REUSEPORT: must be true or false"):
        serve_settings_from_env({"PROVISION_SERVE_REUSEPORT": "yes please"})

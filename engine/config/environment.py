"""The process environment: the ONLY module of the project that reads ``os.environ``.

Every other settings module takes an ``environ`` mapping (``None``: the process environment) and
asks this one for it, so a test can enforce the rule by scanning for ``os.environ``
(``tests/unit/test_isolation.py``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import requests


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``environ``, or the process environment when it is None."""
    return os.environ if environ is None else environ


def environ_copy(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: the process environment) to adjust and pass on."""
    return dict(environment(environ))


def proxies_for(url: str) -> tuple[tuple[str, str], ...]:
    """The proxies the process environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...),
    read once here: requests would re-read them on every call (bench/README.md)."""
    return tuple(sorted(requests.utils.get_environ_proxies(url).items()))

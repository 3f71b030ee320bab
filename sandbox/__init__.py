"""Local simulator of the Cloud Elements ``elements/api-v2`` platform and of Intuit's OAuth.

Start one in-process with :func:`start` (``port=0`` picks a free port) or in the foreground with
``python -m sandbox`` / ``provision sandbox``.  See DESIGN.md §9 and elements-api.md for the behaviour.
"""

from sandbox.defaults import (
    BASE_PATH,
    DEFAULT_HOST,
    DEFAULT_ORG_SECRET,
    DEFAULT_PORT,
    DEFAULT_USER_SECRET,
    ENDPOINTS,
)
from sandbox.faults import FailRule, Faults, parse_delay, parse_fail
from sandbox.server import Sandbox, serve_forever, start

__all__ = [
    "BASE_PATH",
    "DEFAULT_HOST",
    "DEFAULT_ORG_SECRET",
    "DEFAULT_PORT",
    "DEFAULT_USER_SECRET",
    "ENDPOINTS",
    "FailRule",
    "Faults",
    "Sandbox",
    "parse_delay",
    "parse_fail",
    "serve_forever",
    "start",
]

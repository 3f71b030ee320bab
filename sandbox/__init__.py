"""Local simulator of the Cloud Elements ``elements/api-v2`` platform and of Intuit's OAuth.

Start one in-process with :func:`start` (``port=0`` picks a free port) or in the foreground with
``python -m sandbox`` / ``provision sandbox``.  See DESIGN.md §9 and elements-api.md for the behaviour.
"""

from typing import TYPE_CHECKING, Any

from sandbox.defaults import (
    BASE_PATH,
    DEFAULT_HOST,
    DEFAULT_ORG_SECRET,
    DEFAULT_PORT,
    DEFAULT_USER_SECRET,
    ENDPOINTS,
)
from sandbox.faults import FailRule, Faults, parse_delay, parse_fail

if TYPE_CHECKING:
    from sandbox.server import Sandbox, serve_forever, start

#: Loaded on first use (PEP 562): ``provision`` builds the ``sandbox`` command's parser from
#: ``sandbox.cli`` for every command, and the server module would add a tenth of a second to each.
_SERVER_NAMES = frozenset({"Sandbox", "serve_forever", "start"})


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from sandbox import server  # noqa: PLC0415 - see _SERVER_NAMES

        return getattr(server, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")

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

"""Parsers of the ``provision`` options that argparse cannot check by itself (issue 16 finding 10).

Each raises ``UsageError`` naming the option, the rule and the value; ``engine.cli.main`` prints it as
``provision: error: --port: ...`` and exits 2. Before, ``--port 70000`` listened on 4464 (70000 mod
65536) and ``--older-than 99999999999d`` or ``--limit 10**30`` escaped as ``OverflowError``.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import timedelta

from engine.errors import InvalidInputError

_DURATION_RE = re.compile(r"^\s*(\d{1,12})\s*([smhdw])\s*$", re.IGNORECASE | re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DURATION_S = 100 * 365 * 86400  # 100 years, as Engine.list's filters (engine.core.intake.MAX_AGE)
# A host name (RFC 1123 labels) when --host is not an IP address.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?", re.IGNORECASE | re.ASCII)
_WHOLE_RE = re.compile(r"\s*[+-]?[0-9]{1,12}\s*", re.ASCII)


# argparse's messages: "argument --flow: invalid choice...", "argument -o/--output: expected one
# argument", "the following arguments are required: --element, --name", "unrecognized arguments: -x".
_ARGPARSE_FIELD = re.compile(r"argument ([^:\s]+):|(?:required|unrecognized arguments): ([^,\s]+)")


class UsageError(InvalidInputError):
    """A CLI option value that argparse cannot check by itself (exit code 2)."""


class ArgumentsError(UsageError):
    """argparse refused the command line (an unknown verb or option, a missing or invalid value).

    ``field`` is the option or argument argparse named (``--flow``, ``COMMAND``...), else
    ``arguments``; ``usage`` is the usage line of the (sub)command, printed above a plain error.
    """

    def __init__(self, message: str, usage: str) -> None:
        named = _ARGPARSE_FIELD.search(message)
        field = (named.group(1) or named.group(2)).split("/")[-1] if named else "arguments"
        super().__init__(field, message, hint="see --help for the command's options")
        self.message = message  # argparse's own words: they name the option already
        self.usage = usage


def parse_duration(flag: str, text: str) -> timedelta:
    """``30m``, ``2h``, ``7d`` (also ``s`` and ``w``) up to 100 years; ``UsageError`` naming ``flag``."""
    match = _DURATION_RE.match(text or "")
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()] if match else -1
    if not 0 <= seconds <= _MAX_DURATION_S:
        raise UsageError(flag, f"expected a duration like 30m, 2h or 7d of at most 36500d (100 years), "
                         f"got {text[:40]!r}")
    return timedelta(seconds=seconds)


def whole_number(flag: str, minimum: int, maximum: int, note: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an int from ``minimum`` to ``maximum``, else ``UsageError`` (exit 2).

    ``UsageError`` is not one of the exceptions argparse turns into its own message, so ``main``
    prints it like every other input error: ``provision: error: --port: ...``.
    """
    def parse(text: str) -> int:
        value = int(text) if _WHOLE_RE.fullmatch(text) else None
        if value is None or not minimum <= value <= maximum:
            raise UsageError(flag, f"must be a whole number from {minimum} to {maximum}{note}, "
                             f"got {text[:40]!r}")
        return value

    return parse


#: ``--port``: 0 asks the system for any free port (as the help says).
port_number = whole_number("--port", 0, 65535, " (0 = any free port)")


def host_name(text: str) -> str:
    """An argparse ``type`` for ``--host``: an IP address or a host name, else ``UsageError``."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(text):
            raise UsageError("--host", "must be an IP address or a host name (e.g. 127.0.0.1, ::1, "
                             f"localhost), got {text[:60]!r}") from None
    return text

"""Fault injection: per-endpoint delays ("hold after commit" or "hold before commit") and error rates.

Spec strings come from the CLI: ``--delay ENDPOINT=SECONDS[:after|:before]`` and
``--fail ENDPOINT=RATE[:STATUS]``. ``after`` (the default) performs the effect, then holds the
response; ``before`` receives the request, holds it, then performs the effect whatever the client did
meanwhile (a platform that commits after the client's read timeout). In ``POST /_sandbox/faults`` a
delay is a number (after) or ``{"seconds": S, "when": "before"|"after"}``.
The same rules can be replaced at run time with ``POST /_sandbox/faults`` (see :meth:`Faults.load_json`),
where a fail rule may also carry ``count`` (fail only the next N matching calls, for deterministic tests)
and ``retry_after`` (seconds put in ``Retry-After`` on 429/503).

A ``patch`` rule (JSON only: ``{"patch": {"provider_token": {"expires_in": "3600.0"}}}``) performs the
effect and answers as usual, but with fields of a successful body replaced: a JSON object's keys are
set (``null`` removes the key), an XML answer's elements get the text (``null`` removes the element).
It plays a provider whose answers drift from its documentation after it has already rotated the
token (issue 16 item 1: ``"expires_in": "3600.0"``).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.defaults import ENDPOINTS

DEFAULT_FAIL_STATUS = 503
DEFAULT_RETRY_AFTER = 1.0


@dataclass
class FailRule:
    """Fail calls to one endpoint with probability ``rate``, answering ``status``."""

    rate: float
    status: int = DEFAULT_FAIL_STATUS
    count: int | None = None  # None: unlimited; N: only the next N calls that the rate selects
    retry_after: float = DEFAULT_RETRY_AFTER

    def to_json(self) -> dict[str, Any]:
        """JSON form, as accepted by :meth:`Faults.load_json`."""
        return {"rate": self.rate, "status": self.status, "count": self.count,
                "retry_after": self.retry_after}


#: What ``start(delays=...)`` accepts: spec strings or ``{endpoint: seconds}``.
DelaySpec = Mapping[str, float] | Iterable[str] | None
#: What ``start(fails=...)`` accepts: spec strings or ``{endpoint: rate | FailRule | {rate, status, ...}}``.
FailSpec = Mapping[str, float | FailRule | Mapping[str, Any]] | Iterable[str] | None


def _check_endpoint(name: str, spec: str) -> str:
    name = name.strip()
    if name not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {name!r} in {spec!r}; expected one of: {', '.join(ENDPOINTS)}")
    return name


def _number(text: Any, what: str, spec: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {text!r} in {spec!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} in {spec!r} must be a finite number")
    return value


def _check_seconds(value: Any, spec: str) -> float:
    seconds = _number(value, "SECONDS", spec)
    if seconds < 0:
        raise ValueError(f"SECONDS {value!r} in {spec!r} must be at least 0")
    return seconds


def _check_rate(value: Any, spec: str) -> float:
    rate = _number(value, "RATE", spec)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"RATE {value!r} in {spec!r} must be between 0 and 1")
    return rate


def _check_status(value: Any, spec: str) -> int:
    try:
        status = int(str(value).strip())
    except ValueError:
        raise ValueError(f"STATUS {value!r} in {spec!r} is not an integer") from None
    if not 400 <= status <= 599:
        raise ValueError(f"STATUS {value!r} in {spec!r} must be an HTTP error status (400-599)")
    return status


HOLD_MODES = ("after", "before")


def parse_delay_mode(spec: str) -> tuple[str, float, str]:
    """Parse ``ENDPOINT=SECONDS[:after|:before]`` into (endpoint, seconds, mode)."""
    name, sep, value = spec.partition("=")
    if not sep:
        raise ValueError(f"{spec!r} is not of the form ENDPOINT=SECONDS[:after|:before]")
    seconds_text, colon, mode = value.partition(":")
    mode = mode.strip() if colon else "after"
    if mode not in HOLD_MODES:
        raise ValueError(f"hold mode {mode!r} in {spec!r} must be 'after' or 'before'")
    return _check_endpoint(name, spec), _check_seconds(seconds_text.strip(), spec), mode


def parse_delay(spec: str) -> tuple[str, float]:
    """Parse ``ENDPOINT=SECONDS[:MODE]`` (``parse_delay_mode``); raise ``ValueError`` naming the bad part."""
    name, seconds, _mode = parse_delay_mode(spec)
    return name, seconds


def _delay_from_json(name: str, value: Any) -> tuple[float, str]:
    spec = f"delay.{name}"
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"seconds", "when"})
        if unknown:
            raise ValueError(f"{spec} has unknown keys: {', '.join(unknown)}")
        mode = value.get("when", "after")
        if mode not in HOLD_MODES:
            raise ValueError(f"{spec}.when {mode!r} must be 'after' or 'before'")
        return _check_seconds(value.get("seconds"), spec), str(mode)
    return _check_seconds(value, spec), "after"


def parse_fail(spec: str) -> tuple[str, FailRule]:
    """Parse ``ENDPOINT=RATE[:STATUS]``; raise ``ValueError`` naming the bad part."""
    name, sep, value = spec.partition("=")
    if not sep:
        raise ValueError(f"{spec!r} is not of the form ENDPOINT=RATE[:STATUS]")
    endpoint = _check_endpoint(name, spec)
    rate_text, colon, status_text = value.partition(":")
    rate = _check_rate(rate_text.strip(), spec)
    status = _check_status(status_text, spec) if colon else DEFAULT_FAIL_STATUS
    return endpoint, FailRule(rate, status)


def _patch_from_json(endpoint: str, value: Any) -> dict[str, Any]:
    spec = f"patch.{endpoint}"
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{spec} must be a non-empty object of fields to set (null removes one)")
    for field in value:
        if not isinstance(field, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", field):
            raise ValueError(f"{spec}: field name {field!r} must be 1-64 letters, digits, '_', '.', '-'")
    return dict(value)


def patch_body(body: bytes, fields: Mapping[str, Any]) -> bytes:
    """``body`` with ``fields`` set: keys of a JSON object, else element texts of an XML document."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key, value in fields.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return json.dumps(data).encode()
    text = body.decode("utf-8")
    for key, value in fields.items():
        element = re.compile(rf"<{re.escape(key)}(?:\s*/>|>[^<]*</{re.escape(key)}>)")
        replacement = "" if value is None else f"<{key}>{_xml_text(value)}</{key}>"
        text = element.sub(replacement.replace("\\", "\\\\"), text)  # a literal, not a template
    return text.encode("utf-8")


def _xml_text(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fail_rule_from_json(endpoint: str, value: Any) -> FailRule:
    spec = f"fail.{endpoint}"
    if isinstance(value, FailRule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return FailRule(_check_rate(value, spec))
    if not isinstance(value, Mapping):
        raise ValueError(f"{spec} must be a rate or an object with rate/status/count/retry_after")
    unknown = sorted(set(value) - {"rate", "status", "count", "retry_after"})
    if unknown:
        raise ValueError(f"{spec} has unknown keys: {', '.join(unknown)}")
    rule = FailRule(_check_rate(value.get("rate", 1.0), spec))
    if value.get("status") is not None:
        rule.status = _check_status(value["status"], spec)
    if value.get("count") is not None:
        count = value["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"count {count!r} in {spec} must be a non-negative integer")
        rule.count = count
    if value.get("retry_after") is not None:
        rule.retry_after = _check_seconds(value["retry_after"], spec)
    return rule


class Faults:
    """The fault rules in force, and the seeded RNG that decides each request."""

    def __init__(self, delays: Mapping[str, float] | None = None,
                 fails: Mapping[str, FailRule] | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.delays: dict[str, float] = dict(delays or {})
        self.delays_before: dict[str, float] = {}
        self.fails: dict[str, FailRule] = dict(fails or {})
        self.patches: dict[str, dict[str, Any]] = {}

    @classmethod
    def build(cls, delays: DelaySpec = None, fails: FailSpec = None, seed: int | None = None) -> Faults:
        """Build from spec strings (``["create_instance=1.5"]``) or mappings (``{"consent": 1.5}``)."""
        faults = cls(seed=seed)
        faults.replace(delays, fails)
        return faults

    def replace(self, delays: DelaySpec = None, fails: FailSpec = None,
                patches: Mapping[str, Any] | None = None) -> None:
        """Validate, then replace all rules at once (nothing changes if validation fails)."""
        parsed: list[tuple[str, float, str]] = []
        if isinstance(delays, Mapping):
            for name, value in delays.items():
                parsed.append((_check_endpoint(name, f"delay.{name}"), *_delay_from_json(name, value)))
        elif delays is not None:
            parsed += [parse_delay_mode(spec) for spec in delays]
        new_delays = {name: s for name, s, mode in parsed if mode == "after"}
        new_before = {name: s for name, s, mode in parsed if mode == "before"}
        new_fails: dict[str, FailRule] = {}
        if isinstance(fails, Mapping):
            for name, value in fails.items():
                new_fails[_check_endpoint(name, f"fail.{name}")] = _fail_rule_from_json(name, value)
        elif fails is not None:
            new_fails.update(parse_fail(spec) for spec in fails)
        new_patches = {_check_endpoint(name, f"patch.{name}"): _patch_from_json(name, value)
                       for name, value in (patches or {}).items()}
        with self._lock:
            self.delays, self.delays_before, self.fails = new_delays, new_before, new_fails
            self.patches = new_patches

    def load_json(self, body: Any) -> None:
        """Apply a ``POST /_sandbox/faults`` body: ``{"delay": {...}, "fail": {...}, "patch": {...}}``."""
        if not isinstance(body, Mapping):
            raise ValueError("body must be a JSON object with optional 'delay', 'fail' and 'patch' objects")
        unknown = sorted(set(body) - {"delay", "fail", "patch"})
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(unknown)} (expected 'delay', 'fail' and 'patch')")
        delays, fails, patches = body.get("delay") or {}, body.get("fail") or {}, body.get("patch") or {}
        if not all(isinstance(part, Mapping) for part in (delays, fails, patches)):
            raise ValueError("'delay', 'fail' and 'patch' must be JSON objects keyed by endpoint name")
        self.replace(delays, fails, patches)

    def to_json(self) -> dict[str, Any]:
        """The rules in force, in the shape :meth:`load_json` accepts."""
        with self._lock:
            delay: dict[str, Any] = dict(self.delays)
            delay.update({n: {"seconds": s, "when": "before"} for n, s in self.delays_before.items()})
            return {"delay": delay,
                    "fail": {name: rule.to_json() for name, rule in self.fails.items()},
                    "patch": {name: dict(fields) for name, fields in self.patches.items()}}

    def decide_failure(self, endpoint: str) -> FailRule | None:
        """The rule to apply to this call, or None to serve it normally.  Consumes ``count``."""
        with self._lock:
            rule = self.fails.get(endpoint)
            if rule is None or rule.rate <= 0.0:
                return None
            if rule.count is not None and rule.count <= 0:
                return None
            # random() is in [0, 1), so rate 1.0 always fails and rate 0.0 never does.
            if self._rng.random() >= rule.rate:
                return None
            if rule.count is not None:
                rule.count -= 1
            return FailRule(rule.rate, rule.status, rule.count, rule.retry_after)

    def delay_for(self, endpoint: str) -> float:
        """Seconds to hold the response of a call to ``endpoint`` (after its effect)."""
        with self._lock:
            return self.delays.get(endpoint, 0.0)

    def hold_before(self, endpoint: str) -> float:
        """Seconds to hold a call to ``endpoint`` before its effect (the effect happens regardless)."""
        with self._lock:
            return self.delays_before.get(endpoint, 0.0)

    def patch_for(self, endpoint: str) -> dict[str, Any] | None:
        """The fields to replace in a successful answer of ``endpoint``, or None."""
        with self._lock:
            fields = self.patches.get(endpoint)
            return dict(fields) if fields else None

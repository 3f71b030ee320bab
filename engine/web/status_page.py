"""A read-only HTML status page over an ``Engine`` (DESIGN §8), as a WSGI app built on werkzeug.

Routes (GET/HEAD only; ``provision serve`` mounts it for paths starting with ``/status``):

- ``/status``: attempts, newest first (at most 200, optional ``?state=FAILED``), with counts per state;
- ``/status/<id>``: one attempt, its timeline and its diagram (inline SVG with ``dot``, else Mermaid);
- ``/status/<id>/diagram.svg`` and ``/status/<id>/diagram.mmd``: the diagram alone.

Everything taken from the database is HTML-escaped (markupsafe), and only secret-free fields are shown:
never ``attempt.secrets``, and of stored errors only kind, message and hint.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, ServiceUnavailable
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from engine.errors import AttemptNotFoundError, InvalidInputError
from engine.inspection.render import GraphvizMissingError, render_attempt
from engine.security.crypto import scrub, secret_values
from states.attempt import Attempt, HistoryEntry
from states.model import State

if TYPE_CHECKING:  # the page only reads through the Engine's public methods
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from engine.core.facade import Engine

LIST_LIMIT = 200
_READ = ["GET", "HEAD"]
# No scripts, no remote anything: the page is static HTML plus inline SVG and inline styles.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2rem 2rem;color:#111}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f3f4f6}
.PROVISIONED{color:#15803d;font-weight:bold}.FAILED{color:#b91c1c;font-weight:bold}
.diagram svg{max-width:100%;height:auto}.hint{color:#555}
pre{background:#f8f8f8;padding:.6rem;overflow:auto}nav{margin-bottom:.8rem}
"""


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else ""


def _page(title: str, body: Markup) -> str:
    return str(Markup(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>"
        "<style>{}</style></head><body>{}</body></html>"
    ).format(title, Markup(_CSS), body))


def _rows(rows: Iterable[Sequence[Any]]) -> Markup:
    cells = (Markup("").join(Markup("<td>{}</td>").format(c) for c in row) for row in rows)
    return Markup("").join(Markup("<tr>{}</tr>").format(c) for c in cells)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> Markup:
    ths = Markup("").join(Markup("<th>{}</th>").format(h) for h in head)
    return Markup('<table class="{}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>').format(
        cls, ths, _rows(rows))


def _state(state: object) -> Markup:
    return Markup('<span class="{}">{}</span>').format(state, state)


def _inline_svg(svg: str) -> Markup:
    """Graphviz SVG ready to embed in HTML: the XML prolog and DOCTYPE only belong in a file.

    Safe to mark up: Graphviz escapes every label it writes, and labels were cleaned before that.
    """
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else "")


class StatusPage:
    """WSGI app: ``StatusPage(engine)(environ, start_response)``; reads only, never changes an attempt."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url_map = Map([
            Rule("/status", endpoint="index", methods=_READ),
            Rule("/status/<attempt_id>", endpoint="attempt", methods=_READ),
            Rule("/status/<attempt_id>/diagram.svg", endpoint="diagram_svg", methods=_READ),
            Rule("/status/<attempt_id>/diagram.mmd", endpoint="diagram_mermaid", methods=_READ),
        ])

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        urls = self.url_map.bind_to_environ(environ)
        try:
            endpoint, args = urls.match()
            response = getattr(self, f"_{endpoint}")(request, urls, **args)
        except AttemptNotFoundError as exc:
            response = self._error(NotFound(exc.message))
        except InvalidInputError as exc:
            response = self._error(BadRequest(exc.message))
        except HTTPException as exc:  # 404 for other paths, 405 for POST and friends
            response = exc if exc.code in (301, 302, 308) else self._error(exc)
        if isinstance(response, Response):
            response.headers.extend(_SECURITY_HEADERS)
        body: Iterable[bytes] = response(environ, start_response)
        return body

    # --- pages ----------------------------------------------------------------------------------

    def _error(self, exc: HTTPException) -> Response:
        body = Markup('<nav><a href="/status">all attempts</a></nav><h1>{} {}</h1><p>{}</p>').format(
            exc.code, exc.name, exc.description)
        response = Response(_page(f"{exc.code} {exc.name}", body), status=exc.code, mimetype="text/html")
        if exc.code == 405:
            response.headers["Allow"] = ", ".join(_READ)
        return response

    def _index(self, request: Request, urls: Any) -> Response:
        state = request.args.get("state") or None
        attempts = self.engine.list(state, limit=LIST_LIMIT)
        counts = self.engine.counts()
        count_rows = [(_state(s.value), counts.get(s.value, 0)) for s in State]
        count_rows.append((Markup("<b>total</b>"), sum(counts.values())))
        rows = [
            (Markup('<a href="{}">{}</a>').format(urls.build("attempt", {"attempt_id": a.id}), a.id),
             a.element_key, a.flow, a.name, _state(a.state), a.failure_reason or "", _when(a.created_at),
             _when(a.updated_at))
            for a in attempts
        ]
        shown = f"{len(attempts)} shown, newest first"
        if len(attempts) >= LIST_LIMIT:
            shown += f" (limit {LIST_LIMIT})"
        body = Markup(
            "<h1>element-provisioner: attempts</h1><h2>Per state</h2>{}<h2>Attempts{}</h2><p>{}</p>{}"
        ).format(
            _table(["state", "attempts"], count_rows, "counts"),
            f" in {state.upper()}" if state else "",
            shown,
            _table(["id", "element", "flow", "name", "state", "failure reason", "created", "updated"], rows,
                   "attempts"),
        )
        return Response(_page("element-provisioner status", body), mimetype="text/html")

    def _attempt(self, request: Request, urls: Any, attempt_id: str) -> Response:
        attempt = self.engine.get(attempt_id)
        history = self.engine.history(attempt.id)
        svg_url = urls.build("diagram_svg", {"attempt_id": attempt.id})
        mmd_url = urls.build("diagram_mermaid", {"attempt_id": attempt.id})
        # The diagram comes first so it is on screen without scrolling; the details follow.
        body = Markup(
            '<nav><a href="{}">all attempts</a></nav><h1>Attempt {}</h1><p>{} · {}/{} · {}</p>'
            '<div class="diagram" id="diagram">{}</div><p>{}</p><h2>Details</h2>{}<h2>Timeline</h2>{}'
        ).format(
            urls.build("index", {}), attempt.id, _state(attempt.state), attempt.element_key, attempt.flow,
            attempt.name, self._diagram(attempt, history),
            Markup('<a href="{}">diagram.svg</a> · <a href="{}">diagram.mmd</a>').format(svg_url, mmd_url),
            self._details(attempt), self._timeline(history, secret_values(attempt.secrets)),
        )
        return Response(_page(f"attempt {attempt.id}", body), mimetype="text/html")

    def _details(self, attempt: Attempt) -> Markup:
        error = attempt.last_error if isinstance(attempt.last_error, dict) else {}
        fields = [
            ("id", attempt.id), ("element", attempt.element_key), ("flow", attempt.flow),
            ("name", attempt.name),
            ("state", _state(attempt.state)), ("failure reason", attempt.failure_reason or ""),
            ("last error", scrub(" - ".join(str(error[k]) for k in ("kind", "message") if error.get(k)),
                                 secret_values(attempt.secrets))),
            ("instance id", attempt.instance_id if attempt.instance_id is not None else ""),
            ("renewals", attempt.renewals), ("created", _when(attempt.created_at)),
            ("updated", _when(attempt.updated_at)), ("next run", _when(attempt.next_run_at)),
        ]
        return _table(["field", "value"], fields, "details")

    def _diagram(self, attempt: Attempt, history: Sequence[HistoryEntry]) -> Markup:
        if shutil.which("dot") is not None:
            try:
                return _inline_svg(str(render_attempt(attempt, history, "svg")))
            except GraphvizMissingError:
                pass  # removed between the check and the call: fall back like when it is absent
        return Markup('<p class="hint">Graphviz (<code>dot</code>) is not installed, so here is the Mermaid '
                      "source (install graphviz for a picture).</p><pre>{}</pre>").format(
            render_attempt(attempt, history, "mermaid"))

    def _timeline(self, history: Sequence[HistoryEntry], needles: set[str]) -> Markup:
        rows = []
        for h in history:
            err = h.error if isinstance(h.error, dict) else {}  # only kind/message/hint are ever shown
            # A platform message may echo a token we sent: known secret values are masked (scrub).
            message = Markup("{}{}").format(
                scrub(" - ".join(str(err[k]) for k in ("kind", "message") if err.get(k)), needles),
                Markup('<br><span class="hint">{}</span>').format(scrub(str(err["hint"]), needles))
                if err.get("hint") else "",
            )
            rows.append((h.seq, h.trigger, h.source, _state(h.dest), _when(h.at),
                         "" if h.duration_ms is None else f"{h.duration_ms} ms", h.outcome, h.tries,
                         message, h.note or ""))
        head = ["seq", "trigger", "from", "to", "at", "duration", "outcome", "tries", "error", "note"]
        return _table(head, rows, "timeline")

    def _diagram_svg(self, request: Request, urls: Any, attempt_id: str) -> Response:
        attempt = self.engine.get(attempt_id)
        try:
            svg = render_attempt(attempt, self.engine.history(attempt.id), "svg")
        except GraphvizMissingError as exc:
            raise ServiceUnavailable(str(exc)) from None
        return Response(svg, mimetype="image/svg+xml")

    def _diagram_mermaid(self, request: Request, urls: Any, attempt_id: str) -> Response:
        attempt = self.engine.get(attempt_id)
        text = render_attempt(attempt, self.engine.history(attempt.id), "mermaid")
        return Response(text, mimetype="text/plain")

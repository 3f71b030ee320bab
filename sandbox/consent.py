"""The provider's consent page: ``GET|POST /_sandbox/consent`` (plays Intuit/Salesforce/HubSpot).

GET renders a form (Approve / Deny, company ``sandbox``/``production``, or ``realm``: an existing
company picked again, as Intuit's company picker allows); POSTing it to the same URL,
query string included, answers 302 to the callback with the provider's parameters (elements-api.md §3).
Problems are answered as a 400 HTML page, as a browser-facing provider would.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qsl, urlsplit

from werkzeug.wrappers import Request, Response

from sandbox.catalog import find_element
from sandbox.store import AuthCode, RequestToken, random_base62
from sandbox.urls import add_query
from sandbox.web import Context

_COMPANIES = ("sandbox", "production")


class ConsentError(Exception):
    """A consent request the provider refuses; rendered as a 400 HTML page."""


@dataclass
class _Consent:
    """What a consent URL asks for."""

    flow: str  # "oauth1" | "oauth2"
    callback: str
    state: str
    title: str
    request_token: RequestToken | None = None
    client_id: str = ""
    element_key: str | None = None


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n")
    return Response(html, status=status, mimetype="text/html")


def _parse(ctx: Context, request: Request) -> _Consent:
    args = request.args
    if args.get("oauth_token"):
        with ctx.store.lock:
            token = ctx.store.request_tokens.get(args["oauth_token"])
        if token is None:
            raise ConsentError(f"Unknown request token {args['oauth_token']!r}: get one from "
                               "/elements/{key}/oauth/token first.")
        if token.consumed:
            raise ConsentError("This request token was already exchanged for an access token.")
        callback = args.get("oauth_callback") or token.callback_url
        state = dict(_query_items(callback)).get("state", "")
        element = find_element(token.element_key)
        title = f"Connect {element.name if element else token.element_key}"
        return _Consent("oauth1", callback, state, title,
                        request_token=token, element_key=token.element_key)
    if args.get("response_type") == "code":
        absent = [name for name in ("client_id", "redirect_uri") if not args.get(name)]
        if absent:
            raise ConsentError(f"Missing required parameters: {', '.join(absent)}.")
        # intuit-oauth's AuthClient sends no ``element``: its QuickBooks scope says who we play.
        quickbooks = "com.intuit.quickbooks" in args.get("scope", "")
        element = find_element(args.get("element", "") or ("quickbooks" if quickbooks else ""))
        return _Consent("oauth2", args["redirect_uri"], args.get("state", ""),
                        f"Connect {element.name if element else 'your account'}",
                        client_id=args["client_id"], element_key=element.key if element else None)
    raise ConsentError("This is not an authorization request: expected oauth_token (OAuth 1.0a) or "
                       "response_type=code (OAuth 2.0) in the query.")


def _query_items(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _form(request: Request, consent: _Consent) -> Response:
    # Everything reflected into the page is escaped: callback URLs and states come from the client.
    radios = "\n".join(
        f'<label><input type="radio" name="company" value="{c}"{" checked" if c == "sandbox" else ""}>'
        f" {c} company</label><br>" for c in _COMPANIES)
    app = consent.request_token.api_key if consent.request_token else consent.client_id
    body = (f"<p>The application <code>{escape(app)}</code> "
            f"asks to connect to your account.</p>\n"
            f"<p>You will be sent back to <code>{escape(consent.callback)}</code> "
            f"with state <code>{escape(consent.state)}</code>.</p>\n"
            f'<form method="post" action="{escape(request.full_path)}">\n{radios}\n'
            '<button type="submit" name="decision" value="approve">Approve</button>\n'
            '<button type="submit" name="decision" value="deny">Deny</button>\n</form>')
    return _page(consent.title, body)


def _decide(ctx: Context, request: Request, consent: _Consent) -> Response:
    decision = request.form.get("decision", "")
    company = request.form.get("company") or "sandbox"
    if decision not in ("approve", "deny"):
        raise ConsentError(f"decision must be 'approve' or 'deny', got {decision!r}.")
    if company not in _COMPANIES:
        raise ConsentError(f"company must be 'sandbox' or 'production', got {company!r}.")
    store = ctx.store
    # Intuit lists the user's existing companies to pick from: ``realm`` picks one again (the
    # same realmId for a second authorisation), otherwise a new company of kind ``company``.
    picked = request.form.get("realm") or None
    if picked is not None:
        with store.lock:
            known = store.realms.get(picked)
        if known is None:
            raise ConsentError(f"realm must be one of the user's companies, got {picked!r}.")
        company = known
    params: dict[str, str] = {"state": consent.state}
    if decision == "deny":
        params = {"error": "access_denied", "state": consent.state}
        if consent.request_token is not None:
            params["oauth_token"] = consent.request_token.token
    elif consent.request_token is not None:
        with store.lock:
            token = consent.request_token
            # Each approval is a fresh authorisation: new company, new verifier (older ones stop working).
            token.realm_id = picked or store.new_realm(company)
            token.verifier = random_base62(7).lower()
            params.update(oauth_token=token.token, oauth_verifier=token.verifier,
                          realmId=token.realm_id, dataSource="QBO")
    else:
        element = find_element(consent.element_key or "")
        with store.lock:
            realm = picked or store.new_realm(company)
            code = AuthCode("AB" + random_base62(46), consent.client_id, consent.callback,
                            consent.element_key, realm, store.now())
            store.codes[code.code] = code
        params = {"code": code.code, "state": consent.state}
        if element is not None and element.has_realm:
            params["realmId"] = realm
    response = Response("", status=302)
    response.headers["Location"] = add_query(consent.callback, params)
    return response


def consent(ctx: Context, request: Request) -> Response:
    """Serve the consent page (GET) or the user's decision (POST)."""
    try:
        parsed = _parse(ctx, request)
        return _form(request, parsed) if request.method != "POST" else _decide(ctx, request, parsed)
    except ConsentError as exc:
        return _page("Authorization failed", f"<p>{escape(str(exc))}</p>", status=400)

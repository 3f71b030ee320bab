"""The provider client's Reconnect and refresh answers, parsed from canned answers (no HTTP).

The transport is replaced by a recorder that returns a fixed ``Answer``; the signing and the parsing are
the real ones (requests-oauthlib, defusedxml).
"""
from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header

from engine.clients.provider import ProviderClient, ProviderUrls
from engine.clients.transport import Answer, Transport
from engine.errors import ApiError

NS = 'xmlns="http://platform.intuit.com/api/v1"'


class Canned(Transport):
    """A transport that answers every call with ``answer`` and keeps the prepared requests."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(requests.Session(), connect_timeout=1, read_timeout=1)
        self.answer = answer
        self.sent: list[requests.PreparedRequest] = []

    def send(self, endpoint: str, prep: requests.PreparedRequest) -> Answer:
        self.sent.append(prep)
        return self.answer


def reconnect_xml(code: int, extra: str = "", ns: str = NS) -> Answer:
    body = (f'<?xml version="1.0" encoding="utf-8"?><ReconnectResponse {ns}>'
            f"<ErrorMessage>m{code}</ErrorMessage><ErrorCode>{code}</ErrorCode><ServerTime>2026-11-30T01:20:08.0000000Z</ServerTime>{extra}"
            "</ReconnectResponse>")
    return Answer(200, {"Content-Type": "application/xml"}, body.encode())


def client(answer: Answer) -> tuple[ProviderClient, Canned]:
    transport = Canned(answer)
    return ProviderClient(transport, ProviderUrls.under("https://provider.example/_provider")), transport


def test_reconnect_is_signed_in_the_authorization_header() -> None:
    provider, transport = client(reconnect_xml(0, "<OAuthToken>new-t</OAuthToken><OAuthTokenSecret>new-s"
                                                  "</OAuthTokenSecret>"))
    result = provider.reconnect_oauth1("ck", "cs", "tok", "ts")
    assert (result.code, result.token, result.secret) == (0, "new-t", "new-s")
    [prep] = transport.sent
    assert prep.method == "GET" and prep.url == "https://provider.example/_provider/oauth1/reconnect"
    header = prep.headers["Authorization"]
    header = header.decode() if isinstance(header, bytes) else header  # requests-oauthlib sets bytes
    params = dict(parse_authorization_header(header))
    assert params["oauth_signature_method"] == "HMAC-SHA1"
    assert params["oauth_consumer_key"] == "ck" and params["oauth_token"] == "tok"
    assert params["oauth_signature"] and "cs" not in header
    assert "ts" not in str(result) and "new-s" not in repr(result)


def test_outside_the_window_is_returned_not_raised() -> None:
    provider, _ = client(reconnect_xml(212))
    assert provider.reconnect_oauth1("ck", "cs", "tok", "ts").code == 212


@pytest.mark.parametrize("code,kind", [(22, "provider_unauthorized"), (24, "provider_unauthorized"),
                                       (270, "renewal_rejected"), (999, "renewal_rejected")])
def test_error_codes_are_classified(code: int, kind: str) -> None:
    provider, _ = client(reconnect_xml(code))
    with pytest.raises(ApiError) as err:
        provider.reconnect_oauth1("ck", "cs", "tok", "ts")
    assert err.value.kind == kind and not err.value.transient
    assert f"Reconnect error {code}" in err.value.message


def test_un_namespaced_answer_is_read_too() -> None:
    tokens = "<OAuthToken>t</OAuthToken><OAuthTokenSecret>s</OAuthTokenSecret>"
    provider, _ = client(reconnect_xml(0, tokens, ns=""))
    assert provider.reconnect_oauth1("ck", "cs", "tok", "ts").token == "t"


@pytest.mark.parametrize("body", [
    b"not xml",
    b"<ReconnectResponse><ErrorCode>zero</ErrorCode></ReconnectResponse>",
    # An entity expansion bomb: defusedxml refuses it instead of expanding it.
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<ReconnectResponse><ErrorCode>&b;</ErrorCode></ReconnectResponse>",
])
def test_malformed_answers_are_malformed(body: bytes) -> None:
    provider, _ = client(Answer(200, {}, body))
    with pytest.raises(ApiError) as err:
        provider.reconnect_oauth1("ck", "cs", "tok", "ts")
    assert err.value.kind == "malformed_response"


def test_success_without_tokens_is_refused() -> None:
    provider, _ = client(reconnect_xml(0))
    with pytest.raises(ApiError) as err:
        provider.reconnect_oauth1("ck", "cs", "tok", "ts")
    assert err.value.kind in ("malformed_response", "invalid_value")


@pytest.mark.parametrize("status,body,kind", [
    (400, {"error": "invalid_grant"}, "renewal_rejected"),
    (401, {"error": "invalid_client"}, "provider_unauthorized"),
    (503, {}, "unavailable"),
    (302, {}, "redirect"),
    (200, {"access_token": "a", "refresh_token": "r" * 9000}, "invalid_value"),
    (200, {"access_token": "a", "refresh_token": ["r"]}, "malformed_response"),
    (200, {"access_token": "a"}, "malformed_response"),  # no new refresh token: nothing usable
    (200, ["a", "r"], "malformed_response"),
])
def test_refresh_answers_are_classified(status: int, body: dict[str, Any], kind: str) -> None:
    provider, _ = client(Answer(status, {}, json.dumps(body).encode()))
    with pytest.raises(ApiError) as err:
        provider.refresh_oauth2("id", "secret", "rt")
    assert err.value.kind == kind


@pytest.mark.parametrize("given,kept", [
    (1800, 1800), ("3600.0", 3600), (" 60 ", 60), (1800.9, 1800), (True, 3600), (-5, 3600), ("soon", 3600),
    ("nan", 3600), ("1e300", 3600), ([60], 3600), ({"s": 1}, 3600), (None, 3600), ("9" * 50, 3600)])
def test_refresh_reads_lifetimes_leniently_and_keeps_the_tokens(given: Any, kept: int) -> None:
    body = {"access_token": "a", "refresh_token": "r", "expires_in": given,
            "x_refresh_token_expires_in": given}
    provider, transport = client(Answer(200, {}, json.dumps(body).encode()))
    answer = provider.refresh_oauth2("id", "secret", "rt")
    assert (answer.access_token, answer.refresh_token, answer.expires_in) == ("a", "r", kept)
    assert answer.refresh_expires_in == (None if kept == 3600 and given != "3600.0" else kept)
    assert answer.rotated() == {"oauth.user.token": "a", "oauth.user.refresh_token": "r"}
    assert transport.sent[0].headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("access", [None, "", ["a"], "a\x00b", 5.5])
def test_an_unusable_access_token_keeps_the_rotated_refresh_token(access: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    body = {"access_token": access, "refresh_token": "r-2"}
    provider, _ = client(Answer(200, {}, json.dumps(body).encode()))
    answer = provider.refresh_oauth2("id", "secret", "rt")
    assert answer.rotated() == {"oauth.user.refresh_token": "r-2"}  # the previous access token stays
    assert "no usable access_token" in caplog.text and "r-2" not in caplog.text


@pytest.mark.parametrize("code", ["0.0", " 0 ", "", "zero", None])
def test_a_reconnect_answer_with_new_tokens_is_a_renewal_whatever_its_code_says(code: str | None) -> None:
    tokens = "<OAuthToken>t-2</OAuthToken><OAuthTokenSecret>s-2</OAuthTokenSecret>"
    element = "" if code is None else f"<ErrorCode>{code}</ErrorCode>"
    body = f'<?xml version="1.0"?><ReconnectResponse {NS}><ErrorMessage/>{element}{tokens}' \
           "</ReconnectResponse>"
    provider, _ = client(Answer(200, {}, body.encode()))
    result = provider.reconnect_oauth1("ck", "cs", "tok", "ts")
    assert (result.code, result.token, result.secret) == (0, "t-2", "s-2")
    assert result.rotated() == {"oauth.user.token": "t-2", "oauth.user.token.secret": "s-2"}

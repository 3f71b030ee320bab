"""Helpers shared by the test modules (imported as ``testkit``; conftest files cannot be imported
reliably because every test directory may have its own)."""
from __future__ import annotations

import requests
from cryptography.fernet import Fernet

TEST_KEY = Fernet.generate_key().decode()


def consent(url: str, decision: str = "approve", company: str = "sandbox") -> str:
    """Play the user on the sandbox consent page; returns the redirect Location."""
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "decision" in page.text
    resp = requests.post(url, data={"decision": decision, "company": company}, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


QBO = {"api_key": "dev-consumer-key", "api_secret": "dev-consumer-secret", "callback_url": "https://app.example.com/cb"}
QUICK_CONFIG = {
    "oauth.api.key": "dev-consumer-key", "oauth.api.secret": "dev-consumer-secret",
    "oauth.user.token": "qyprd-user-token", "oauth.user.token.secret": "user-token-secret",
    "quickbooks.realm.id": "123146096291789", "oauth.callback.url": "https://app.example.com/cb",
}

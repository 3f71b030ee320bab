"""The elements (connectors) the sandbox knows about, and which OAuth flavour each one speaks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Element:
    """One element of the catalogue.

    ``oauth1`` is True for elements whose *default* flow is OAuth 1.0a (QuickBooks); such elements switch
    to OAuth2 when the request says ``authentication.type=oauth2``.  Elements with ``oauth1`` False are
    OAuth2 only.
    """

    id: int
    key: str
    name: str
    hub: str
    oauth1: bool
    default_scope: str
    #: Whether the provider's redirect carries ``realmId`` (Intuit does, Salesforce/HubSpot do not).
    has_realm: bool

    def flow_for(self, params: Mapping[str, Any]) -> str:
        """``"oauth1"`` or ``"oauth2"`` for a request carrying ``params`` (query or configuration)."""
        if not self.oauth1:
            return "oauth2"
        kind = str(params.get("authentication.type") or "").lower()
        return "oauth2" if kind == "oauth2" else "oauth1"

    def to_json(self, flow: str | None = None) -> dict[str, Any]:
        """The element block embedded in instance JSON (elements-api.md §11.1)."""
        return {
            "id": self.id,
            "name": self.name,
            "hookName": self.name.replace(" ", ""),
            "key": self.key,
            "description": f"Sandbox simulation of {self.name}",
            "active": True,
            "deleted": False,
            "typeOauth": True,
            "trialAccount": False,
            "configDescription": self.name,
            "signupURL": "",
            "hub": self.hub,
            "authentication": {"type": flow or ("oauth1" if self.oauth1 else "oauth2")},
        }


# Ids: 39 for QuickBooks is documented (elements-api.md §11.1); the others are invented but stable.
ELEMENTS: tuple[Element, ...] = (
    Element(39, "quickbooks", "QuickBooks Online", "finance", True, "com.intuit.quickbooks.accounting", True),
    Element(2, "sfdc", "Salesforce Sales Cloud", "crm", False, "api refresh_token", False),
    Element(27, "hubspot", "HubSpot CRM", "crm", False, "contacts", False),
)


def find_element(key_or_id: str) -> Element | None:
    """Look an element up by key or numeric id (the platform accepts both in ``/elements/{keyOrId}``)."""
    for element in ELEMENTS:
        if element.key == key_or_id or str(element.id) == key_or_id:
            return element
    return None

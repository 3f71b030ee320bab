"""Constants shared by the sandbox and by the engine (which imports them as its own defaults).

Keep the names stable: ``engine/`` reads ``DEFAULT_USER_SECRET``/``DEFAULT_ORG_SECRET`` so that an engine and
a sandbox started with no options work together out of the box (DESIGN.md §9, §10).
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8040
BASE_PATH = "/elements/api-v2"
DEFAULT_USER_SECRET = "sandbox-user-secret"
DEFAULT_ORG_SECRET = "sandbox-org-secret"

#: Endpoint names accepted by ``--delay`` / ``--fail``.  Grouping choices:
#:  * ``list_instances`` covers ``GET /instances`` *and* ``GET /instances/{id}`` (every instance read), so
#:    one fault rule affects both the adopt-by-tag lookup and the renewal health check alike;
#:  * ``update_instance`` covers ``PUT``/``PATCH``/``DELETE /instances/{id}``;
#:  * ``consent`` covers GET and POST of the consent page;
#:  * ``provider_token`` covers both Intuit endpoints (OAuth2 refresh and OAuth1 reconnect).
ENDPOINTS: tuple[str, ...] = (
    "oauth_token",
    "oauth_url",
    "consent",
    "create_instance",
    "list_instances",
    "update_instance",
    "provider_token",
    "provider_check",  # the QuickBooks CompanyInfo read (sandbox.company)
)

#: Paths outside BASE_PATH (the sandbox's own pages and the fake Intuit endpoints).
CONSENT_PATH = "/_sandbox/consent"
REQUESTS_PATH = "/_sandbox/requests"
FAULTS_PATH = "/_sandbox/faults"
PROVIDER_BEARER_PATH = "/_provider/oauth2/tokens/bearer"
PROVIDER_RECONNECT_PATH = "/_provider/oauth1/reconnect"
PROVIDER_REVOKE_PATH = "/_provider/oauth2/tokens/revoke"
PROVIDER_DISCOVERY_PATH = "/_provider/.well-known/openid_configuration"
PLATFORM_REFRESH_PATH = "/_sandbox/platform-refresh"
INSTANCE_STATUS_PATH = "/_sandbox/instances/<instance_id>/status"
PROVIDER_COMPANY_INFO_PATH = "/_provider/v3/company/<realm_id>/companyinfo/<realm_again>"
TOKEN_INVALIDATE_PATH = "/_sandbox/provider/tokens/invalidate"
HEALTH_PATH = "/health"

#: Intuit token lifetimes (elements-api.md §13.3).
OAUTH1_TOKEN_LIFETIME_S = 180 * 86400
OAUTH1_RECONNECT_WINDOW_S = 30 * 86400
OAUTH2_ACCESS_TOKEN_LIFETIME_S = 3600
OAUTH2_REFRESH_TOKEN_LIFETIME_S = 100 * 86400
#: Intuit's absolute refresh-token cap (five years; ``x_refresh_token_hard_expires_in``).
OAUTH2_REFRESH_TOKEN_HARD_LIFETIME_S = 5 * 365 * 86400

#: Default ``oauth.user.refresh_interval`` values the platform stores (seconds, as strings).
OAUTH1_REFRESH_INTERVAL = "13046400"  # 151 days: Intuit's recommended reconnect point
OAUTH2_REFRESH_INTERVAL = "3600"

MASK = "********"

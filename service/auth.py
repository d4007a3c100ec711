"""Bearer-token checks for chat (optional API keys) and admin endpoints (admin token).

401 means no usable credentials (missing, malformed or unknown token); 403 means known
credentials without the right (a chat key on an admin endpoint) or admin disabled. Tokens are
compared in constant time against every accepted value and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.settings import ServiceSettings


def _token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str, accepted: Sequence[SecretStr]) -> bool:
    found = False
    for secret in accepted:
        found |= hmac.compare_digest(token.encode(), secret.get_secret_value().encode())
    return found


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, code="invalid_api_key",
                        headers={"WWW-Authenticate": 'Bearer realm="crossguard"'})


def require_api_key(settings: ServiceSettings, authorization: str | None) -> None:
    """Chat and models: open unless API keys are configured; the admin token also works."""
    if not settings.api_keys:
        return
    token = _token(authorization)
    accepted = [*settings.api_keys, *filter(None, [settings.admin_token])]
    if token is None or not _matches(token, accepted):
        raise _unauthorized("a valid API key is required: Authorization: Bearer <key>")


def require_admin(settings: ServiceSettings, authorization: str | None) -> None:
    if settings.admin_token is None:
        raise Forbidden("admin endpoints are disabled: set CROSSGUARD_ADMIN_TOKEN to enable them",
                        code="admin_disabled")
    token = _token(authorization)
    if token is not None and _matches(token, [settings.admin_token]):
        return
    if token is not None and _matches(token, settings.api_keys):
        raise Forbidden("this API key may chat but not administer", code="not_admin")
    raise _unauthorized("the admin token is required: Authorization: Bearer <token>")

"""Request material until the facade's ``access()`` lands (issue 14, the lead's part).

Builds the ``Access`` answer from the credential the manager hands a ``use`` principal
today, placing it on a blank request exactly as ``httpx`` auth does, and keeps only what
was added (headers, query parameters). Replaced by ``CredentialManager.access`` on merge.
"""

from __future__ import annotations

from typing import Any

import httpx

from credman.auth import apply_credential
from credman.manager import CredentialManager

__all__ = ["access"]

_BLANK = "https://credential.invalid/"


def access(
    manager: CredentialManager,
    credential_id: str,
    *,
    principal: str,
    min_ttl: int | None,
    rejected_version: int | None,
) -> dict[str, Any]:
    """``Access`` as JSON: credential_id, version, headers, params, expires_at."""
    if rejected_version is not None:
        manager._refresh_after_401(credential_id, principal, rejected_version)
    credential, version = manager._get_versioned(credential_id, principal)
    blank = httpx.Request("GET", _BLANK)
    applied = apply_credential(httpx.Request("GET", _BLANK), credential)
    headers = {
        k.decode(): v.decode() for k, v in applied.headers.raw if k.decode() not in blank.headers
    }
    expires_at = credential.expires_at_or_none
    return {
        "credential_id": credential_id,
        "version": version,
        "headers": headers,
        "params": dict(applied.url.params),
        "expires_at": expires_at.isoformat() if expires_at else None,
    }

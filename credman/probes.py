"""Credential tests: apply a credential to its probe request, record and audit the outcome.

A 401 from a refreshable credential refreshes once and tests again. The outcome is kept on
the credential (``probe_ok`` and ``probe_status``) without changing its version; the sweep
re-runs due probes so a silently revoked key is noticed.

``trial`` tests a credential before it is stored (``store(..., test=True)``, ``credman add
--test``): a refreshable one makes a live token request (the tokens it gets are the ones
stored, since a rotating provider has spent the old refresh token), then the probe, if any,
runs with the resulting material. A failure raises and nothing is stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from loguru import logger

from credman._operation import Operations
from credman.access import SYSTEM, Actor
from credman.credentials import Credentials, access_of
from credman.egress import EgressDenied
from credman.errors import (
    CredentialError,
    CredentialValidationError,
    RefreshFailed,
)
from credman.httpx_auth import apply_access
from credman.lifecycle import Credential, JWTBearer, OAuth2, Permission, RefreshPolicy
from credman.logs import own_requests
from credman.notify import CredentialEvent, EventKind, Notifier
from credman.oauth import request_token
from credman.refresher import Refresher, merged
from credman.storage import repository
from credman.validation import check_credential_id

__all__ = ["ProbeResult", "Probes"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of testing a credential against its probe."""

    credential_id: str
    ok: bool
    status: int | None
    elapsed_ms: float
    at: datetime
    error: str | None = None


class Probes:
    """Runs probes on demand (``test``) and for the sweep (``test_due``)."""

    def __init__(
        self,
        operations: Operations,
        credentials: Credentials,
        refresher: Refresher,
        notifier: Notifier,
        policy: RefreshPolicy,
        http: httpx.Client,
    ) -> None:
        self._operations = operations
        self._credentials = credentials
        self._refresher = refresher
        self._notifier = notifier
        self._policy = policy
        self._http = http

    def __repr__(self) -> str:
        return "Probes()"

    def test(self, credential_id: str, *, principal: Actor) -> ProbeResult:
        """Apply the credential to its probe request; record and audit the outcome."""
        credential_id = check_credential_id(credential_id)
        credential, version = self._credentials.open_for_use(credential_id, principal=principal)
        if credential.probe is None:
            message = f"probe: credential {credential_id!r} has no probe to test against"
            raise CredentialValidationError(message, fields=("probe",), credential_id=credential_id)
        result = self._send(credential_id, version, credential)
        retry = result.status == 401 and credential.refreshable
        if retry and self._refresher.renew(credential_id, principal, version):
            renewed, version = self._credentials.open_for_use(credential_id, principal=principal)
            result = self._send(credential_id, version, renewed)
        self._record(result, principal)
        return result

    def trial(
        self, credential_id: str, credential: Credential, *, principal: Actor, create_only: bool
    ) -> Credential:
        """Test ``credential`` live before it is stored; the credential to store.

        The caller must be allowed to store it (``manage``), and with ``create_only`` the id
        must be free, before anything leaves the process. The outcome is audited as a
        ``test`` of the id (``ok`` or ``failed``); a failure raises (``RefreshFailed`` from
        the token endpoint, ``CredentialUnusable`` from the probe) and nothing is stored.
        """
        credential_id = check_credential_id(credential_id)
        ops = self._operations
        with ops.run("test", principal, credential_id, writes=False) as connection:
            ops.act(connection, principal, credential_id, {Permission.MANAGE})
            record = repository.load_credential(connection, credential_id, missing_ok=True)
            if record is not None and create_only:
                raise CredentialValidationError(
                    f"credential {credential_id!r} exists; 'credman update' changes it",
                    fields=("credential_id",),
                    credential_id=credential_id,
                )
        now = ops.now()
        credential = credential.resolved(now)
        exchanged = credential.refreshable and isinstance(credential, OAuth2 | JWTBearer)
        if not exchanged and credential.probe is None:
            message = (
                f"test: a {credential.kind} credential is tested through its probe; "
                "give it one (probe url, e.g. --probe-url)"
            )
            raise CredentialValidationError(message, fields=("probe",), credential_id=credential_id)
        if isinstance(credential, OAuth2 | JWTBearer) and exchanged:
            try:
                grant = request_token(self._http, credential, now=now, timeout=self._policy.timeout)
            except RefreshFailed as failure:
                self._audit_trial(principal, credential_id, "failed", error=failure.error_code)
                raise RefreshFailed(
                    f"test of {credential_id!r} failed, nothing stored: {failure}",
                    permanent=failure.permanent,
                    credential_id=credential_id,
                    error_code=failure.error_code,
                    retry_after=failure.retry_after,
                ) from None
            credential = merged(credential, grant, now, self._policy.clock_skew)
        result = None
        if credential.probe is not None:
            result = self._send(credential_id, 0, credential)
            if not result.ok:
                why = f"HTTP {result.status}" if result.status is not None else result.error
                expected = ",".join(str(code) for code in credential.probe.expect)
                self._audit_trial(principal, credential_id, "failed", status=result.status)
                raise CredentialValidationError(
                    f"test of {credential_id!r} failed, nothing stored: the probe answered "
                    f"{why}, expected {expected}",
                    fields=("credential",),
                    credential_id=credential_id,
                )
        status = result.status if result is not None else None
        self._audit_trial(principal, credential_id, "ok", exchanged=exchanged, status=status)
        logger.info("tested {!r} before storing it", credential_id)
        return credential

    def _audit_trial(
        self, principal: Actor, credential_id: str, outcome: str, **detail: object
    ) -> None:
        ops = self._operations
        with ops.run("test", principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, {Permission.MANAGE})
            ops.audit(act, "test", credential_id, outcome, before_store=True, **detail)

    def test_due(self, credential_id: str) -> ProbeResult | None:
        """The sweep's periodic re-test of one credential; never raises."""
        try:
            return self.test(credential_id, principal=SYSTEM)
        except CredentialError as exc:
            logger.info("sweep could not test {!r}: {}", credential_id, type(exc).__name__)
            return None

    def _send(self, credential_id: str, version: int, credential: Credential) -> ProbeResult:
        probe = credential.probe
        assert probe is not None
        material = access_of(credential_id, version, credential)
        request = apply_access(self._http.build_request(probe.method, probe.url), material)
        started, at = time.perf_counter(), self._operations.now()
        try:
            with own_requests():  # httpx's INFO line would carry a key placed in the query
                # streamed and closed unread: only the status matters, the body could be huge
                response = self._http.send(request, auth=None, follow_redirects=False, stream=True)
                response.close()
        except httpx.HTTPError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            # one word for every transport failure: a refused port and a silent one look alike
            error = "egress_denied" if isinstance(exc, EgressDenied) else "unreachable"
            return ProbeResult(credential_id, False, None, elapsed, at, error)
        elapsed = (time.perf_counter() - started) * 1000
        ok = response.status_code in probe.expect
        return ProbeResult(credential_id, ok, response.status_code, elapsed, at)

    def _record(self, result: ProbeResult, principal: Actor) -> None:
        outcome = "ok" if result.ok else "failed"
        values = {"probe_at": result.at, "probe_status": result.status, "probe_ok": result.ok}
        ops = self._operations
        with ops.run("test", principal, result.credential_id) as connection:
            act = ops.act(connection, principal, result.credential_id, {Permission.USE})
            record = repository.load_credential(connection, result.credential_id, for_update=True)
            values["probe_due_at"] = act.now + self._policy.probe_interval
            repository.record_probe(connection, record.id, values)
            ops.audit(
                act,
                "test",
                record.id,
                outcome,
                status=result.status,
                elapsed_ms=round(result.elapsed_ms, 1),
                error=result.error,
            )
        if result.ok:
            return
        why = str(result.status or result.error)
        logger.warning("probe of {!r} failed: {}", record.id, why)
        self._notifier.emit(
            CredentialEvent(
                kind=EventKind.PROBE_FAILED,
                credential_id=record.id,
                state=record.state,
                at=result.at,
                error_code=why,
            )
        )

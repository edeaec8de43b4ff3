"""The built-in catalogue of OAuth2 provider profiles: data files read into a checked schema.

Each ``catalogue/*.toml`` file describes one provider as Nango's ``providers.yaml`` does:
the authorization request (URL, scope separator, extra parameters), the token request
(URL, client authentication), the refresh behaviour and the response quirks as flags.
URLs may hold ``{variables}`` (a tenant, a subdomain) that ``endpoints()`` fills in.
``ProviderProfile`` is the schema; a test validates every file against it.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import resources
from string import Formatter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from credman.errors import CredentialValidationError, NotFound
from credman.lifecycle.types import OAuth2
from credman.oauth.quirks import STANDARD, ResponseQuirks

__all__ = [
    "Endpoints",
    "ProviderProfile",
    "catalogue",
    "load_profile",
    "profile",
    "quirks_for",
]

_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
_VARIABLE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_URL = Annotated[str, Field(pattern=r"^https://[^\s]+$", max_length=512)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthorizeSpec(_Strict):
    """The authorization request."""

    url: _URL
    scope_separator: Literal[" ", ","] = " "
    default_scopes: tuple[str, ...] = ()
    params: dict[str, str] = Field(default_factory=dict)
    """Extra parameters, e.g. Google's access_type=offline and prompt=consent."""


class TokenSpec(_Strict):
    """The token request."""

    url: _URL
    client_auth: Literal["client_secret_post", "client_secret_basic", "private_key_jwt"] = (
        "client_secret_post"
    )


class RefreshSpec(_Strict):
    """How the provider treats refresh tokens."""

    rotates_refresh_token: bool = False
    old_token_grace_seconds: int | None = Field(default=None, ge=0)
    """How long a rotated-out refresh token keeps working (None: not at all, or unknown)."""


class ResponseSpec(_Strict):
    """How the token response departs from RFC 6749."""

    errors_with_http_200: bool = False
    ok_field: bool = False
    expires_in: Literal["seconds", "seconds_string", "milliseconds", "absent"] = "seconds"
    permanent_errors: tuple[Annotated[str, Field(pattern=r"^[a-z_]{1,64}$")], ...] = ()
    keep_fields: tuple[Annotated[str, Field(pattern=r"^[a-z_]{1,64}$")], ...] = ()


class Endpoints(_Strict):
    """A profile's URLs with its variables filled in."""

    authorization_url: str
    token_url: str
    revocation_url: str | None = None
    device_authorization_url: str | None = None
    issuer: str | None = None


class ProviderProfile(_Strict):
    """One provider's profile: the schema every catalogue file must satisfy."""

    name: Annotated[str, Field(pattern=_NAME)]
    display_name: str
    docs: _URL
    issuer: _URL | None = None
    revocation_url: _URL | None = None
    device_authorization_url: _URL | None = None
    notes: str = ""
    authorize: AuthorizeSpec
    token: TokenSpec
    refresh: RefreshSpec = RefreshSpec()
    response: ResponseSpec = ResponseSpec()

    @field_validator("display_name")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def variables(self) -> tuple[str, ...]:
        """The ``{variables}`` the profile's URLs need, sorted."""
        urls = [self.authorize.url, self.token.url, self.issuer, self.revocation_url]
        urls.append(self.device_authorization_url)
        names = {
            field
            for url in urls
            if url
            for _, field, _, _ in Formatter().parse(url)
            if field is not None
        }
        return tuple(sorted(names))

    @property
    def quirks(self) -> ResponseQuirks:
        """The response quirks the token parser applies."""
        unit = 0.001 if self.response.expires_in == "milliseconds" else 1.0
        return ResponseQuirks(
            ok_field=self.response.ok_field,
            expires_in_unit=unit,
            permanent_errors=frozenset(self.response.permanent_errors),
            keep_fields=self.response.keep_fields,
        )

    def endpoints(self, variables: dict[str, str] | None = None) -> Endpoints:
        """The URLs with ``variables`` filled in; each must be a plain host label."""
        values = dict(variables or {})
        missing = [name for name in self.variables if name not in values]
        if missing:
            raise CredentialValidationError(
                f"profile {self.name!r} needs {', '.join(missing)}", fields=tuple(missing)
            )
        for name in self.variables:
            if not _VARIABLE_VALUE.fullmatch(values[name]):
                raise CredentialValidationError(
                    f"{name}: must be a host name label (letters, digits, '.', '-')",
                    fields=(name,),
                )

        def fill(url: str | None) -> str | None:
            return None if url is None else url.format(**values)

        return Endpoints(
            authorization_url=self.authorize.url.format(**values),
            token_url=self.token.url.format(**values),
            revocation_url=fill(self.revocation_url),
            device_authorization_url=fill(self.device_authorization_url),
            issuer=fill(self.issuer),
        )

    def scope(self, scopes: list[str] | tuple[str, ...] | None = None) -> str | None:
        """The scope parameter: the given scopes (or the defaults) joined the provider's way."""
        chosen = tuple(scopes) if scopes else self.authorize.default_scopes
        return self.authorize.scope_separator.join(chosen) if chosen else None

    def credential(
        self,
        *,
        client_id: str,
        variables: dict[str, str] | None = None,
        scopes: list[str] | tuple[str, ...] | None = None,
        **fields: Any,
    ) -> OAuth2:
        """An OAuth2 credential for this provider awaiting connect; ``fields`` override."""
        urls = self.endpoints(variables)
        values: dict[str, Any] = {
            "token_url": urls.token_url,
            "authorization_url": urls.authorization_url,
            "revocation_url": urls.revocation_url,
            "device_authorization_url": urls.device_authorization_url,
            "client_id": client_id,
            "client_auth": self.token.client_auth,
            "scope": self.scope(scopes),
            "authorize_params": dict(self.authorize.params) or None,
            "profile": self.name,
        }
        return OAuth2(**(values | fields))


def load_profile(text: str) -> ProviderProfile:
    """A profile from TOML text; CredentialValidationError names what is wrong."""
    try:
        return ProviderProfile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        error = CredentialValidationError(f"profile: not valid TOML ({exc})", fields=("profile",))
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(p) for p in e["loc"]) + ": " + e["msg"]
            for e in exc.errors(include_input=False, include_url=False)
        )
        error = CredentialValidationError(f"profile: {problems}", fields=("profile",))
    raise error


@cache
def catalogue() -> dict[str, ProviderProfile]:
    """Every built-in profile by name (read once from the package data)."""
    folder = resources.files("credman.oauth") / "catalogue"
    profiles = [
        load_profile(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    ]
    return {p.name: p for p in profiles}


def profile(name: str) -> ProviderProfile:
    """The built-in profile ``name``; NotFound names the known ones."""
    found = catalogue().get(name)
    if found is None:
        known = ", ".join(sorted(catalogue()))
        raise NotFound(f"no provider profile {name!r} (known: {known})")
    return found


def quirks_for(credential: OAuth2) -> ResponseQuirks:
    """The response quirks of the credential's profile (standard when it has none)."""
    if credential.profile is None:
        return STANDARD
    found = catalogue().get(credential.profile)
    return STANDARD if found is None else found.quirks

"""The credential types: what each kind of credential holds and what makes it valid.

Every type is a frozen pydantic model whose secret fields are :class:`Secret` values.
``model_dump()``/``model_dump_json()`` show them masked (``**********``) unless the
serialization context says ``{"reveal_secrets": True}``.
Construction validates; any failure is a :class:`CredentialValidationError` that names
the fields and never echoes the input. ``expires_in`` is resolved to ``expires_at``
against a ``now`` the caller passes, so these models never read the clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, get_args, overload
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    ValidationError,
    model_validator,
)

from credman.crypto.secret import Secret
from credman.errors import CredentialValidationError

__all__ = [
    "CREDENTIAL_TYPES",
    "MAX_SECRET_LENGTH",
    "MAX_TEXT_LENGTH",
    "REVEAL_SECRETS",
    "ApiKey",
    "BasicAuth",
    "BearerToken",
    "Credential",
    "JWTBearer",
    "OAuth2",
    "Probe",
    "credential_from_parts",
]

MAX_TEXT_LENGTH = 2048
MAX_SECRET_LENGTH = 16384
MAX_LIFETIME = timedelta(days=3650)


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value or value.isspace():
        raise ValueError("must not be empty")
    if len(value) > MAX_SECRET_LENGTH:
        raise ValueError(f"must be at most {MAX_SECRET_LENGTH} characters")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return Secret(_utf8(value))


def _mentions_secret(annotation: object) -> bool:
    return annotation is Secret or any(_mentions_secret(arg) for arg in get_args(annotation))


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be UTF-8 text") from None
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range in UTC") from None


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return _utf8(value)


def _token_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("must use https (plain http is allowed only on loopback)")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials in the URL")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


REVEAL_SECRETS = "reveal_secrets"
"""The serialization context key that makes dumps carry plaintext: ``{REVEAL_SECRETS: True}``."""


def _dump_secret(value: Secret, info: SerializationInfo) -> str:
    """A secret in a dump: masked, unless the caller asked by name for the plaintext."""
    context = info.context
    if isinstance(context, Mapping) and context.get(REVEAL_SECRETS) is True:
        return value.reveal()
    return str(value)


if TYPE_CHECKING:
    # How a type checker sees a secret field: set from a str (or a Secret), read as a Secret,
    # which is what the validator below does at run time. A descriptor says exactly that:
    # dataclass_transform takes __init__'s parameter type from __set__ (PEP 681).

    class SecretStr:
        """A secret field: accepts ``str | Secret``, holds a :class:`Secret`."""

        @overload
        def __get__(self, instance: None, owner: type) -> SecretStr: ...
        @overload
        def __get__(self, instance: object, owner: type) -> Secret: ...
        def __get__(self, instance: object, owner: type) -> Secret | SecretStr: ...
        def __set__(self, instance: object, value: str | Secret) -> None: ...

    class OptionalSecretStr:
        """An optional secret field: accepts ``str | Secret | None``, holds ``Secret | None``."""

        @overload
        def __get__(self, instance: None, owner: type) -> OptionalSecretStr: ...
        @overload
        def __get__(self, instance: object, owner: type) -> Secret | None: ...
        def __get__(self, instance: object, owner: type) -> Secret | OptionalSecretStr | None: ...
        def __set__(self, instance: object, value: str | Secret | None) -> None: ...

    class OptionalProbe:
        """A credential's probe: accepts a :class:`Probe` or its fields as a mapping."""

        @overload
        def __get__(self, instance: None, owner: type) -> OptionalProbe: ...
        @overload
        def __get__(self, instance: object, owner: type) -> Probe | None: ...
        def __get__(self, instance: object, owner: type) -> Probe | OptionalProbe | None: ...
        def __set__(self, instance: object, value: Probe | Mapping[str, Any] | None) -> None: ...

else:
    SecretStr = Annotated[Secret, PlainValidator(_to_secret), PlainSerializer(_dump_secret)]
    OptionalSecretStr = SecretStr | None

NONE: Any = None
"""The default of an optional field that type checkers see as a descriptor: None."""
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH), AfterValidator(_non_blank)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_utc)]
Lifetime = Annotated[int, Field(gt=0, le=int(MAX_LIFETIME.total_seconds()))]
TokenUrl = Annotated[Text, AfterValidator(_token_url)]
SigningAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256"
]


class Probe(BaseModel):
    """A request that shows whether a credential still works: method, URL, expected statuses."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: TokenUrl
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect: tuple[Annotated[int, Field(ge=100, le=599)], ...] = (200,)

    @model_validator(mode="after")
    def _expects_something(self) -> Self:
        if not self.expect:
            raise ValueError("expect: give at least one status code")
        return self


if not TYPE_CHECKING:
    OptionalProbe = Probe | None  # a mapping is validated into a Probe


class Credential(BaseModel):
    """Base of the credential types: frozen, strict about unknown fields, secrets masked.

    Every type may carry a :class:`Probe` (``mgr.test()`` applies the credential to it).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        hide_input_in_errors=True,
        str_max_length=MAX_TEXT_LENGTH,
    )

    kind: ClassVar[str] = ""
    secret_fields: ClassVar[tuple[str, ...]] = ()

    probe: OptionalProbe = NONE

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = _translate(type(self).__name__, exc, type(self).model_fields)
        else:
            return
        raise error  # raised outside the except block: the pydantic error is not chained

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.secret_fields = tuple(
            name for name, info in cls.model_fields.items() if _mentions_secret(info.annotation)
        )

    @classmethod
    def can_refresh(cls, public: Mapping[str, Any], secret_names: Collection[str]) -> bool:
        """Whether new material can be obtained without an operator, from the non-secret
        fields and the names of the secret fields that are set (so a stored credential can
        be judged without decrypting it)."""
        return False

    @property
    def refreshable(self) -> bool:
        """Whether new material can be obtained without an operator."""
        return self.can_refresh(self.public_fields(), self.secret_values().keys())

    @property
    def expires_at_or_none(self) -> datetime | None:
        """When the material stops working, if it says."""
        return getattr(self, "expires_at", None)

    def resolved(self, now: datetime) -> Self:
        """This credential with a relative ``expires_in`` turned into ``expires_at``."""
        expires_in = getattr(self, "expires_in", None)
        if expires_in is None:
            return self
        return self.model_copy(
            update={"expires_in": None, "expires_at": now + timedelta(seconds=expires_in)}
        )

    def public_fields(self) -> dict[str, Any]:
        """The non-secret fields, JSON-ready."""
        return self.model_dump(mode="json", exclude=set(self.secret_fields), exclude_none=True)

    def secret_values(self) -> dict[str, str]:
        """The secret fields that are set, revealed: only for the encryption layer."""
        values = {name: getattr(self, name) for name in self.secret_fields}
        return {name: value.reveal() for name, value in values.items() if value is not None}

    def with_material(self, **changes: Any) -> Self:
        """A validated copy with some fields replaced (e.g. new tokens after a refresh)."""
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(changes)
        return type(self)(**data)


class _Expiring(BaseModel):
    expires_at: Timestamp | None = None
    expires_in: Lifetime | None = None

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_at is not None and self.expires_in is not None:
            raise ValueError("expires_in: give expires_at or expires_in, not both")
        return self


class BasicAuth(Credential):
    """HTTP Basic authentication: a username and a password."""

    kind: ClassVar[str] = "basic"
    username: Text
    password: SecretStr

    @model_validator(mode="after")
    def _no_colon(self) -> Self:
        if ":" in self.username:
            raise ValueError("username must not contain ':' (RFC 7617)")
        return self


class ApiKey(Credential):
    """A static API key sent in a header (default ``X-API-Key``) or a query parameter."""

    kind: ClassVar[str] = "api_key"
    key: SecretStr
    header: Text | None = None
    query_param: Text | None = None
    prefix: Annotated[str, Field(max_length=64)] = ""

    @model_validator(mode="after")
    def _one_placement(self) -> Self:
        if self.header is not None and self.query_param is not None:
            raise ValueError("query_param: give header or query_param, not both")
        return self

    @property
    def placement(self) -> Literal["header", "query"]:
        """Where the key goes in a request."""
        return "query" if self.query_param is not None else "header"

    @property
    def header_name(self) -> str:
        """The header the key is sent in (when placed in a header)."""
        return self.header or "X-API-Key"


class BearerToken(Credential, _Expiring):
    """A bearer token, optionally with an expiry."""

    kind: ClassVar[str] = "bearer"
    token: SecretStr


class OAuth2(Credential, _Expiring):
    """OAuth2 tokens, kept fresh by the refresh-token or client-credentials grant.

    With an ``authorization_url`` (or ``device_authorization_url``) the tokens may be
    missing: the credential waits for ``connect`` (authorization code + PKCE, or the
    device grant) to obtain them. ``profile`` names a provider profile whose response
    quirks apply; ``metadata`` keeps the non-secret response fields the profile asks for
    (e.g. Salesforce's ``instance_url``).
    """

    kind: ClassVar[str] = "oauth2"
    token_url: TokenUrl
    client_id: Text
    client_secret: OptionalSecretStr = NONE
    grant_type: Literal["refresh_token", "client_credentials"] = "refresh_token"
    client_auth: Literal["client_secret_post", "client_secret_basic", "private_key_jwt"] = (
        "client_secret_post"
    )
    client_key: SecretStr | None = None
    """PEM private key (or HS secret) that signs ``private_key_jwt`` client assertions."""
    client_key_algorithm: SigningAlgorithm | None = None
    """The client assertion's algorithm (None: RS256)."""
    client_key_id: Text | None = None
    scope: Text | None = None
    access_token: OptionalSecretStr = NONE
    refresh_token: OptionalSecretStr = NONE
    token_type: Annotated[str, Field(min_length=1, max_length=64)] = "Bearer"
    authorization_url: TokenUrl | None = None
    device_authorization_url: TokenUrl | None = None
    revocation_url: TokenUrl | None = None
    authorize_params: Annotated[dict[Text, Text], Field(max_length=32)] | None = None
    """Extra authorization request parameters (Google: access_type=offline, prompt=consent)."""
    profile: Text | None = None
    metadata: Annotated[dict[Text, Text], Field(max_length=32)] | None = None

    @model_validator(mode="after")
    def _grant_has_material(self) -> Self:
        signed = self.client_auth == "private_key_jwt"
        if self.grant_type == "client_credentials" and self.client_secret is None and not signed:
            raise ValueError("client_secret is required for the client_credentials grant")
        if self.client_auth == "client_secret_basic" and self.client_secret is None:
            raise ValueError("client_secret is required for client_secret_basic")
        if self.client_auth == "private_key_jwt" and self.client_key is None:
            raise ValueError("client_key is required for private_key_jwt")
        connectable = self.authorization_url or self.device_authorization_url
        has_tokens = self.access_token or self.refresh_token
        if self.grant_type == "refresh_token" and not (has_tokens or connectable):
            raise ValueError(
                "access_token or refresh_token is required for refresh_token "
                "(or an authorization_url to connect)"
            )
        return self

    @property
    def awaiting_connect(self) -> bool:
        """Registered for connect, not yet authorised: no tokens at all."""
        return self.grant_type == "refresh_token" and not (self.access_token or self.refresh_token)

    @classmethod
    def can_refresh(cls, public: Mapping[str, Any], secret_names: Collection[str]) -> bool:
        return public.get("grant_type") == "client_credentials" or "refresh_token" in secret_names


class JWTBearer(Credential, _Expiring):
    """An RFC 7523 JWT bearer assertion grant: a signed assertion traded for access tokens."""

    kind: ClassVar[str] = "jwt_bearer"
    token_url: TokenUrl
    issuer: Text
    subject: Text
    audience: Text
    private_key: SecretStr
    algorithm: SigningAlgorithm = "RS256"
    key_id: Text | None = None
    scope: Text | None = None
    assertion_lifetime: Annotated[int, Field(gt=0, le=3600)] = 300
    access_token: OptionalSecretStr = NONE

    @model_validator(mode="after")
    def _key_matches_algorithm(self) -> Self:
        pem = "-----BEGIN" in self.private_key.reveal()
        if self.algorithm.startswith("HS") == pem:
            raise ValueError(
                "private_key: a PEM key for RS/PS/ES algorithms, a shared secret for HS"
            )
        if pem:
            _check_private_key(self.private_key.reveal(), self.algorithm)
        return self

    @classmethod
    def can_refresh(cls, public: Mapping[str, Any], secret_names: Collection[str]) -> bool:
        return True


def _check_private_key(pem: str, algorithm: str) -> None:
    """The PEM opens as an unencrypted private key of the algorithm's family (at store time,
    not at the first refresh)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            "private_key: not a readable PEM private key (unencrypted PKCS#8 or PKCS#1/SEC1)"
        ) from None
    rsa_family = algorithm[:2] in ("RS", "PS")
    if not isinstance(key, rsa.RSAPrivateKey if rsa_family else ec.EllipticCurvePrivateKey):
        raise ValueError(
            f"private_key: {algorithm} needs {'an RSA' if rsa_family else 'an EC'} key"
        )


CREDENTIAL_TYPES: dict[str, type[Credential]] = {
    cls.kind: cls for cls in (BasicAuth, ApiKey, BearerToken, OAuth2, JWTBearer)
}


def credential_from_parts(kind: str, public: dict[str, Any], secrets: dict[str, str]) -> Credential:
    """Rebuild a credential of ``kind`` from its stored public and decrypted secret fields."""
    cls = CREDENTIAL_TYPES.get(kind)
    if cls is None:
        raise CredentialValidationError(f"type: unknown credential type {kind!r}", fields=("type",))
    return cls(**public, **secrets)


def _translate(
    model: str, exc: ValidationError, names: Mapping[str, object]
) -> CredentialValidationError:
    """One CredentialValidationError naming every offending field. A model validator's
    error has no location: its message starts with the field it is about (``"name: ..."``
    or ``"name is required ..."``), and that field is named (the model's name only when the
    message starts with none)."""
    problems: list[str] = []
    fields: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        named = message.split(" ", 1)[0].removesuffix(":")
        fields.append(location or (named if named in names else model))
        problems.append(f"{location}: {message}" if location else message)
    return CredentialValidationError(
        f"invalid {model}: " + "; ".join(problems), fields=tuple(fields)
    )

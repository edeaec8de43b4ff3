"""The ``credman`` command line: the operators' tool over :class:`CredentialManager`.

Secrets never come from argv (visible in ``ps``): every secret option takes the name of an
environment variable (``--x-env VAR``) or a file (``--x-file PATH``, ``-`` for stdin). A
``CredentialError`` ends the command with one line on stderr and exit code 1, never a
traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from loguru import logger
from rich.console import Console
from rich.table import Table

from credman.cli_connect import connect as connect_command
from credman.cli_keys import keys_app
from credman.cli_providers import providers_app
from credman.config import Settings
from credman.crypto import KeyFileProvider
from credman.errors import (
    CredentialError,
    CredentialUnusable,
    CredentialValidationError,
    KeyringError,
)
from credman.lifecycle import ApiKey, BasicAuth, BearerToken, Credential, JWTBearer, OAuth2
from credman.logs import configure_logging
from credman.manager import CredentialManager
from credman.models import CredentialInfo

__all__ = ["app", "main"]

app = typer.Typer(
    name="credman",
    help="Credential manager for integration services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback with locals could show secrets
    add_completion=False,
)
add_app = typer.Typer(help="Store a credential (secrets from env vars, files or stdin).")
audit_app = typer.Typer(help="The tamper-evident audit trail.")
app.add_typer(add_app, name="add")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(providers_app, name="providers")
app.command("connect")(connect_command)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(slots=True)
class Options:
    """The global options, resolved."""

    database_url: str | None
    key_file: str | None
    principal: str

    def manager(self) -> CredentialManager:
        """Open the manager these options name."""
        return CredentialManager(self.database_url, self.key_file)


def _options(ctx: typer.Context) -> Options:
    options = ctx.find_object(Options)
    assert options is not None
    return options


@contextmanager
def _manager(ctx: typer.Context) -> Iterator[CredentialManager]:
    manager = _options(ctx).manager()
    try:
        yield manager
    finally:
        manager.close()


@app.callback()
def _global(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(envvar="CREDMAN_DATABASE_URL", help="Database URL.")
    ] = None,
    key_file: Annotated[
        str | None, typer.Option(envvar="CREDMAN_KEY_FILE", help="Key file path.")
    ] = None,
    principal: Annotated[
        str, typer.Option(envvar="CREDMAN_PRINCIPAL", help="Who is acting.")
    ] = "admin",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Operational logs.")] = False,
) -> None:
    """Credential manager for integration services."""
    ctx.obj = Options(database_url, key_file, principal)
    if verbose:
        configure_logging(level="DEBUG")


# -- secrets from env, file or stdin -----------------------------------------------------


def read_secret(name: str, env: str | None, file: str | None, *, required: bool) -> str | None:
    """A secret from an environment variable or a file ('-' is stdin), never from argv."""
    if env is not None and file is not None:
        raise CredentialValidationError(f"{name}: give --{name}-env or --{name}-file, not both")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise CredentialValidationError(f"{name}: environment variable {env} is not set")
        return value
    if file is not None:
        return _read_file(name, file)
    if required:
        raise CredentialValidationError(
            f"{name}: required (--{name}-env VAR or --{name}-file PATH)"
        )
    return None


def _read_file(name: str, file: str) -> str:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not readable UTF-8 text"
        raise CredentialValidationError(f"{name}: cannot read {file}: {reason}") from None
    return text.removesuffix("\n").removesuffix("\r")


def _secret_options(name: str) -> tuple[Any, Any]:
    env = typer.Option(f"--{name}-env", metavar="VAR", help=f"{name} from this env var.")
    file = typer.Option(f"--{name}-file", metavar="PATH", help=f"{name} from file, - stdin.")
    return env, file


def _store(ctx: typer.Context, credential_id: str, build: Callable[[], Credential]) -> None:
    credential = build()
    with _manager(ctx) as manager:
        info = manager.store(credential_id, credential, principal=_options(ctx).principal)
    out.print(f"stored {info.type} {info.credential_id!r}: {info.state} (version {info.version})")


# -- commands ----------------------------------------------------------------------------


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the key file (0600) if missing and bring the database to the current schema."""
    settings = Settings.from_env(key_file=_options(ctx).key_file)
    provider = KeyFileProvider(settings.key_file)
    try:
        provider.create()
        out.print(f"created key file {provider.path} (mode 0600): back it up, keep it secret")
    except KeyringError:
        if not provider.path.exists():
            raise
        out.print(f"key file {provider.path} exists; keeping it")
    with _manager(ctx) as manager:
        out.print(f"database ready at {manager.database_url}")


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Upgrade the database schema to this version's (also done on every start)."""
    with _manager(ctx) as manager:
        revision = manager.migrate()
    out.print(f"database {manager.database_url} at schema revision {revision}")


OAUTH_SECRET_ENV, OAUTH_SECRET_FILE = _secret_options("client-secret")
ACCESS_ENV, ACCESS_FILE = _secret_options("access-token")
REFRESH_ENV, REFRESH_FILE = _secret_options("refresh-token")


@add_app.command("oauth2")
def add_oauth2(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    token_url: Annotated[str, typer.Option(help="The provider's token endpoint.")],
    client_id: Annotated[str, typer.Option(help="OAuth client id.")],
    scope: Annotated[str | None, typer.Option(help="Space-separated scopes.")] = None,
    expires_in: Annotated[int | None, typer.Option(help="Access token lifetime (s).")] = None,
    grant_type: Annotated[str, typer.Option(help="refresh_token|client_credentials")] = (
        "refresh_token"
    ),
    client_auth: Annotated[
        str, typer.Option(help="client_secret_post|client_secret_basic")
    ] = "client_secret_post",
    client_secret_env: Annotated[str | None, OAUTH_SECRET_ENV] = None,
    client_secret_file: Annotated[str | None, OAUTH_SECRET_FILE] = None,
    access_token_env: Annotated[str | None, ACCESS_ENV] = None,
    access_token_file: Annotated[str | None, ACCESS_FILE] = None,
    refresh_token_env: Annotated[str | None, REFRESH_ENV] = None,
    refresh_token_file: Annotated[str | None, REFRESH_FILE] = None,
) -> None:
    """Store OAuth2 tokens (refresh-token or client-credentials grant)."""
    _store(
        ctx,
        credential_id,
        lambda: OAuth2(
            token_url=token_url,
            client_id=client_id,
            scope=scope,
            expires_in=expires_in,
            grant_type=grant_type,
            client_auth=client_auth,
            client_secret=read_secret(
                "client-secret", client_secret_env, client_secret_file, required=False
            ),
            access_token=read_secret(
                "access-token", access_token_env, access_token_file, required=False
            ),
            refresh_token=read_secret(
                "refresh-token", refresh_token_env, refresh_token_file, required=False
            ),
        ),
    )


KEY_ENV, KEY_FILE = _secret_options("key")


@add_app.command("api-key")
def add_api_key(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    key_env: Annotated[str | None, KEY_ENV] = None,
    key_file: Annotated[str | None, KEY_FILE] = None,
    header: Annotated[str | None, typer.Option(help="Header name (default X-API-Key).")] = None,
    query_param: Annotated[str | None, typer.Option(help="Send as this query parameter.")] = None,
    prefix: Annotated[str, typer.Option(help="Prefix, e.g. 'Bearer '.")] = "",
) -> None:
    """Store an API key sent in a header or a query parameter."""
    _store(
        ctx,
        credential_id,
        lambda: ApiKey(
            key=read_secret("key", key_env, key_file, required=True),
            header=header,
            query_param=query_param,
            prefix=prefix,
        ),
    )


PASSWORD_ENV, PASSWORD_FILE = _secret_options("password")


@add_app.command("basic")
def add_basic(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    username: Annotated[str, typer.Option(help="User name.")],
    password_env: Annotated[str | None, PASSWORD_ENV] = None,
    password_file: Annotated[str | None, PASSWORD_FILE] = None,
) -> None:
    """Store HTTP Basic credentials."""
    _store(
        ctx,
        credential_id,
        lambda: BasicAuth(
            username=username,
            password=read_secret("password", password_env, password_file, required=True),
        ),
    )


TOKEN_ENV, TOKEN_FILE = _secret_options("token")


@add_app.command("bearer")
def add_bearer(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    token_env: Annotated[str | None, TOKEN_ENV] = None,
    token_file: Annotated[str | None, TOKEN_FILE] = None,
    expires_in: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
) -> None:
    """Store a static bearer token."""
    _store(
        ctx,
        credential_id,
        lambda: BearerToken(
            token=read_secret("token", token_env, token_file, required=True),
            expires_in=expires_in,
        ),
    )


PRIVATE_KEY_ENV, PRIVATE_KEY_FILE = _secret_options("private-key")


@add_app.command("jwt")
def add_jwt(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    token_url: Annotated[str, typer.Option(help="The provider's token endpoint.")],
    issuer: Annotated[str, typer.Option(help="Assertion issuer (iss).")],
    subject: Annotated[str, typer.Option(help="Assertion subject (sub).")],
    audience: Annotated[str, typer.Option(help="Assertion audience (aud).")],
    private_key_env: Annotated[str | None, PRIVATE_KEY_ENV] = None,
    private_key_file: Annotated[str | None, PRIVATE_KEY_FILE] = None,
    algorithm: Annotated[str, typer.Option(help="Signing algorithm.")] = "RS256",
    key_id: Annotated[str | None, typer.Option(help="Key id (kid) header.")] = None,
    scope: Annotated[str | None, typer.Option(help="Space-separated scopes.")] = None,
) -> None:
    """Store an RFC 7523 JWT bearer assertion grant."""
    _store(
        ctx,
        credential_id,
        lambda: JWTBearer(
            token_url=token_url,
            issuer=issuer,
            subject=subject,
            audience=audience,
            private_key=read_secret(
                "private-key", private_key_env, private_key_file, required=True
            ),
            algorithm=algorithm,
            key_id=key_id,
            scope=scope,
        ),
    )


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _info_table(infos: list[CredentialInfo]) -> Table:
    table = Table("id", "type", "state", "version", "expires", "next due", "key")
    for info in infos:
        table.add_row(
            info.credential_id,
            info.type,
            info.state,
            str(info.version),
            _when(info.expires_at),
            _when(info.next_due_at),
            str(info.key_version or "-"),
        )
    return table


@app.command()
def status(ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """A credential's state and metadata (no secret values)."""
    with _manager(ctx) as manager:
        info = manager.info(credential_id, principal=_options(ctx).principal)
    table = Table("field", "value", show_header=False)
    for name in ("credential_id", "type", "state", "version", "attempts", "last_error"):
        table.add_row(name, str(getattr(info, name) or "-"))
    for name in ("created_at", "updated_at", "expires_at", "next_due_at", "lease_until"):
        table.add_row(name, _when(getattr(info, name)))
    for name, value in sorted(info.metadata.items()):
        table.add_row(f"metadata.{name}", str(value))
    out.print(table)


@app.command()
def history(
    ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Every transition of a credential, oldest first."""
    with _manager(ctx) as manager:
        steps = manager.history(credential_id, principal=_options(ctx).principal)
    table = Table("at", "from", "to", "trigger", "principal", "version", "reason")
    for step in steps:
        table.add_row(
            _when(step.at),
            step.from_state or "-",
            step.to_state,
            step.trigger,
            step.principal,
            str(step.version),
            step.reason or "",
        )
    out.print(table)


@app.command("list")
def list_credentials(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only credentials in this state.")] = None,
) -> None:
    """The credentials you may see."""
    with _manager(ctx) as manager:
        infos = manager.list(principal=_options(ctx).principal, state=state and state.upper())
    out.print(_info_table(infos))


@app.command()
def revoke(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why (recorded in history).")],
) -> None:
    """Revoke a credential for good: its secret material is destroyed, its history kept."""
    with _manager(ctx) as manager:
        info = manager.revoke(credential_id, principal=_options(ctx).principal, reason=reason)
    out.print(f"revoked {info.credential_id!r} (version {info.version})")


@app.command()
def grant(
    ctx: typer.Context,
    grantee: Annotated[str, typer.Argument(metavar="PRINCIPAL")],
    pattern: Annotated[str, typer.Argument(metavar="PATTERN")],
    permissions: Annotated[list[str], typer.Argument(metavar="PERMISSION...")],
) -> None:
    """Grant permissions (use, manage, audit, admin) on ids matching PATTERN."""
    with _manager(ctx) as manager:
        result = manager.grant(grantee, pattern, permissions, principal=_options(ctx).principal)
    out.print(f"{grantee} may {','.join(sorted(result.permissions))} on {pattern!r}")


@app.command()
def ungrant(
    ctx: typer.Context,
    grantee: Annotated[str, typer.Argument(metavar="PRINCIPAL")],
    pattern: Annotated[str, typer.Argument(metavar="PATTERN")],
) -> None:
    """Remove a principal's grant on PATTERN."""
    with _manager(ctx) as manager:
        removed = manager.revoke_grant(grantee, pattern, principal=_options(ctx).principal)
    out.print(f"removed {grantee} on {pattern!r}" if removed else "no such grant")


@app.command()
def grants(
    ctx: typer.Context,
    grantee: Annotated[str | None, typer.Argument(metavar="[PRINCIPAL]")] = None,
) -> None:
    """The grants in force."""
    with _manager(ctx) as manager:
        rows = manager.grants(principal=_options(ctx).principal, grantee=grantee)
    table = Table("principal", "pattern", "permissions", "granted by", "at")
    for row in rows:
        table.add_row(
            row.principal,
            row.pattern,
            ",".join(sorted(row.permissions)),
            row.created_by,
            _when(row.created_at),
        )
    out.print(table)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None, typer.Option(help="A head kept elsewhere, SEQ:HASH, that must still be there.")
    ] = None,
) -> None:
    """Recompute the hash chain; exit 1 naming the first bad row if it is broken."""
    with _manager(ctx) as manager:
        report = manager.verify_audit(_anchor(anchor) if anchor else None)
    if not report.ok:
        err.print(f"audit chain BROKEN at row {report.first_bad_seq}: {report.problem}")
        raise typer.Exit(1)
    out.print(
        f"audit chain ok: {report.rows_checked} rows, head {report.head_seq}:{report.head_hash}"
    )


def _anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise CredentialValidationError("anchor: SEQ:HASH as printed by 'credman audit head'")
    return int(seq), digest


@audit_app.command("head")
def audit_head(ctx: typer.Context) -> None:
    """Print the chain head (sequence:hash) for anchoring outside the database."""
    with _manager(ctx) as manager:
        seq, digest = manager.audit_head()
    out.print(f"{seq}:{digest}")


@audit_app.command("tail")
def audit_tail(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("-n", "--limit", help="How many events.")] = 20,
    denied: Annotated[bool, typer.Option("--denied", help="Only access denials.")] = False,
    principal: Annotated[str | None, typer.Option("--who", help="Only this principal.")] = None,
) -> None:
    """The newest audit events."""
    with _manager(ctx) as manager:
        events = manager.audit_events(
            principal=_options(ctx).principal,
            limit=limit,
            subject=principal,
            outcome="denied" if denied else None,
        )
    table = Table("seq", "at", "principal", "action", "credential", "outcome", "detail")
    for event in events:
        detail = " ".join(f"{k}={v}" for k, v in sorted(event.detail.items()))
        table.add_row(
            str(event.seq),
            _when(event.at),
            event.principal,
            event.action,
            event.credential_id or "-",
            event.outcome,
            detail,
        )
    out.print(table)


@app.command()
def diagram(
    ctx: typer.Context,
    credential_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Draw this credential's actual path.")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write files here.")] = None,
) -> None:
    """Lifecycle diagrams from the transition table, or one credential's path from its history."""
    from credman import diagrams

    if credential_id is None:
        for path in diagrams.write_lifecycle_diagrams(output or Path("diagrams")):
            out.print(f"wrote {path}")
        return
    with _manager(ctx) as manager:
        steps = manager.history(credential_id, principal=_options(ctx).principal)
    path_steps = [(s.from_state, s.to_state, s.trigger) for s in steps]
    current = steps[-1].to_state
    mermaid = diagrams.credential_path_mermaid(credential_id, path_steps, current)
    if output is None:
        out.print(mermaid, markup=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    stem = output / f"credential-{credential_id.replace('/', '_')}"
    stem.with_suffix(".md").write_text(f"```mermaid\n{mermaid}```\n")
    svg = diagrams.credential_path_svg(credential_id, path_steps, current)
    stem.with_suffix(".svg").write_bytes(svg)
    out.print(f"wrote {stem}.md and {stem}.svg")


@app.command()
def token(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    principal: Annotated[
        str | None, typer.Option("--principal", help="Who asks (overrides the global option).")
    ] = None,
) -> None:
    """Print a currently valid token, bare (refreshing first if due): for scripts and pipes."""
    with _manager(ctx) as manager:
        access = manager.access(credential_id, principal=principal or _options(ctx).principal)
    if access.token is None:
        raise CredentialUnusable(credential_id, "ACTIVE", "this credential has no bare token")
    sys.stdout.write(access.token.reveal() + "\n")


@app.command("test")
def test_credential(
    ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Apply the credential to its probe request; exit 1 if it does not work."""
    with _manager(ctx) as manager:
        result = manager.test(credential_id, principal=_options(ctx).principal)
    verdict = "works" if result.ok else "FAILS"
    out.print(
        f"{credential_id!r} {verdict}: HTTP {result.status or result.error} "
        f"in {result.elapsed_ms:.0f} ms"
    )
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def refresh(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    force: Annotated[bool, typer.Option("--force", help="Refresh even if not due.")] = False,
) -> None:
    """Refresh an OAuth credential now (with --force) or if it is due."""
    with _manager(ctx) as manager:
        info = manager.refresh(credential_id, principal=_options(ctx).principal, force=force)
    out.print(
        f"{info.credential_id!r}: {info.state} (version {info.version}), "
        f"expires {_when(info.expires_at)}"
    )


@app.command()
def serve(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(help="Seconds between sweeps.")] = 30.0,
    workers: Annotated[int, typer.Option(help="Refreshes in parallel.")] = 4,
    once: Annotated[bool, typer.Option("--once", help="Sweep once and exit.")] = False,
) -> None:
    """Run the scheduler daemon in the foreground until SIGINT/SIGTERM: keeps tokens fresh."""
    from credman.scheduler import CredentialScheduler

    configure_logging(level="INFO")
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    with _manager(ctx) as manager:
        scheduler = CredentialScheduler(manager, interval=interval, workers=workers)
        if once:
            scheduler.sweep()
            return
        scheduler.start()
        logger.info("credman serve: sweeping every {}s (pid {})", interval, os.getpid())
        while not stop.wait(1.0):
            pass
        logger.info("credman serve: stopping")
        scheduler.shutdown(wait=True)


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Demo folder (recreated).")] = Path(
        ".demo"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Shorter token lifetimes.")] = False,
) -> None:
    """The end-to-end walkthrough: store, grant, use, refresh, expire, revoke, audit, diagrams."""
    from credman.demo import run_demo

    lifetime, watch = (1.5, 3.5) if quick else (3.0, 7.0)
    raise typer.Exit(run_demo(directory, lifetime=lifetime, watch=watch, console=out))


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"error: {' '.join(message.split())}", markup=False)
    sys.exit(code)


def main() -> None:
    """Entry point: run the app; a CredentialError is one line on stderr and exit 1."""
    try:
        app()
    except CredentialError as exc:
        _fail(str(exc), 1)
    except OSError as exc:  # e.g. an output folder that cannot be written
        _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}", 1)
    except Exception as exc:  # never a traceback: it could carry secrets in locals
        _fail(f"internal error ({type(exc).__name__}); run with -v for logs", 2)

"""`credman connect` as a user runs it: the RFC 8252 loopback flow (the test plays the
browser), OIDC discovery with --issuer, and the device flow."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from credman import CredentialManager, OAuth2, State
from credman.crypto import KeyFileProvider
from credman.oauth.loopback import SUCCESS_PAGE
from credman.testing.provider import TokenServer

CLIENT, SECRET = "cli-app", "cli-secret-canary-4c2f"
PUBLIC = "cli-public"
LOOPBACK = "http://127.0.0.1/callback"


@pytest.fixture
def provider() -> Iterator[TokenServer]:
    with TokenServer(
        clients={CLIENT: SECRET},
        public_clients=[PUBLIC],
        redirect_uris={CLIENT: [LOOPBACK], PUBLIC: [LOOPBACK]},
        device_interval=1,
    ) as running:
        yield running


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    KeyFileProvider(tmp_path / "c.key").create()
    CredentialManager(f"sqlite:///{tmp_path / 'c.db'}", str(tmp_path / "c.key")).close()
    return os.environ | {
        "CREDMAN_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "CREDMAN_KEY_FILE": str(tmp_path / "c.key"),
        "COLUMNS": "200",
        "CLIENT_SECRET": SECRET,
    }


def manager(env: dict[str, str]) -> CredentialManager:
    return CredentialManager(env["CREDMAN_DATABASE_URL"], env["CREDMAN_KEY_FILE"])


def run(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "credman", "connect", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def url_from(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("visit: "), line
    return line.removeprefix("visit: ").strip()


def play_browser(authorization_url: str) -> httpx.Response:
    """GET the authorization URL on the provider, then follow its redirect to the listener."""
    redirect = httpx.get(authorization_url, timeout=10)
    assert 302 == redirect.status_code
    return httpx.get(redirect.headers["Location"], timeout=10)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def store_pending(env: dict[str, str], provider: TokenServer, **fields: str | None) -> None:
    values: dict[str, str | None] = {
        "token_url": provider.url,
        "authorization_url": provider.authorize_url,
        "device_authorization_url": provider.device_authorization_url,
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    with manager(env) as mgr:
        mgr.store("gh", OAuth2(**(values | fields)), principal="admin")


def test_cli_loopback_flow_connects(env: dict[str, str], provider: TokenServer) -> None:
    """connect --no-browser prints the URL; the browser's redirect reaches the listener; ACTIVE."""
    store_pending(env, provider)
    process = run(env, "gh", "--no-browser", "--timeout", "60")
    page = play_browser(url_from(process))
    code, out, _ = finish(process)
    with manager(env) as mgr:
        state = mgr.info("gh", principal="admin").state
    assert (0, 200, SUCCESS_PAGE, State.ACTIVE) == (code, page.status_code, page.content, state)
    assert "connected 'gh': ACTIVE" in out


def test_cli_flow_uses_an_ephemeral_loopback_port_and_s256(
    env: dict[str, str], provider: TokenServer
) -> None:
    """The redirect URI is http://127.0.0.1:PORT/callback, sent with an S256 challenge."""
    store_pending(env, provider)
    process = run(env, "gh", "--no-browser", "--timeout", "60")
    play_browser(url_from(process))
    finish(process)
    seen = provider.authorization_requests[-1]
    url = httpx.URL(seen.redirect_uri)
    assert ("127.0.0.1", "/callback", True, "S256") == (
        url.host,
        url.path,
        (url.port or 0) > 1023,
        seen.code_challenge_method,
    )
    assert seen.redirect_uri == provider.code_exchanges[-1]["redirect_uri"]


def test_the_success_page_shows_no_token(env: dict[str, str], provider: TokenServer) -> None:
    """Neither the code nor any token appears on the page the browser gets."""
    store_pending(env, provider)
    process = run(env, "gh", "--no-browser", "--timeout", "60")
    authorization_url = url_from(process)
    redirect = httpx.get(authorization_url, timeout=10)
    code = httpx.URL(redirect.headers["Location"]).params["code"]
    page = httpx.get(redirect.headers["Location"], timeout=10)
    finish(process)
    assert (False, "no-store") == (code in page.text, page.headers["Cache-Control"])


def test_cli_access_denied_fails_with_one_line(env: dict[str, str], provider: TokenServer) -> None:
    """A denied consent exits non-zero with a one-line error; the credential stays CREATED."""
    store_pending(env, provider)
    provider.authorize_mode = "access_denied"
    process = run(env, "gh", "--no-browser", "--timeout", "60")
    play_browser(url_from(process))
    code, _, err = finish(process)
    with manager(env) as mgr:
        state = mgr.info("gh", principal="admin").state
    assert (1, 1, True, State.CREATED) == (
        code,
        len(err.strip().splitlines()),
        "access_denied" in err,
        state,
    )


def test_cli_times_out_when_nobody_authorises(env: dict[str, str], provider: TokenServer) -> None:
    """Without a callback the command gives up after --timeout with a clear error."""
    store_pending(env, provider)
    process = run(env, "gh", "--no-browser", "--timeout", "1")
    url_from(process)
    code, _, err = finish(process)
    assert (1, True) == (code, "no authorization arrived" in err)


def test_cli_issuer_discovers_registers_and_connects(
    env: dict[str, str], provider: TokenServer
) -> None:
    """--issuer reads discovery, stores the credential CREATED, then connects it."""
    process = run(
        env,
        "corp",
        "--issuer",
        provider.issuer,
        "--client-id",
        CLIENT,
        "--client-secret-env",
        "CLIENT_SECRET",
        "--no-browser",
        "--timeout",
        "60",
    )
    play_browser(url_from(process))
    code, _, err = finish(process)
    with manager(env) as mgr:
        steps = [t.trigger for t in mgr.history("corp", principal="admin")]
    assert (0, ["create", "activate"]) == (code, steps), err


def test_cli_device_flow_prints_the_user_code_and_polls(
    env: dict[str, str], provider: TokenServer
) -> None:
    """--device prints the user code; once the user approves, the command connects."""
    store_pending(env, provider, client_id=PUBLIC, client_secret=None)
    process = run(env, "gh", "--device", "--timeout", "60")
    assert process.stdout is not None
    lines = [process.stdout.readline(), process.stdout.readline()]
    user_code = lines[1].split(":", 1)[1].strip()
    provider.approve_device(user_code)
    code, out, err = finish(process)
    assert (0, True) == (code, "connected 'gh': ACTIVE" in out), err

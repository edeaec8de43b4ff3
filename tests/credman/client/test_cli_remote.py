"""The CLI with --server: the same commands against a running service, no database or key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from credman import ApiKey

if TYPE_CHECKING:
    from conftest import Service


def _credman(service: Service, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only CREDMAN_TOKEN and CREDMAN_CA in its environment."""
    env = {"CREDMAN_TOKEN": service.token, "CREDMAN_CA": str(service.ca_file)}
    command = [str(Path(sys.executable).parent / "credman"), "--server", service.url, *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_token_and_status_come_from_the_service(service: Service, tmp_path: Path) -> None:
    """`credman --server URL token ID` prints the component's key; `status` its state."""
    service.manager.store("github-x", ApiKey(key="k-remote"), principal="admin")
    token = _credman(service, tmp_path, "token", "github-x")
    status = _credman(service, tmp_path, "status", "github-x", "--json")
    assert (0, "k-remote\n") == (token.returncode, token.stdout)
    assert (0, True) == (status.returncode, '"ACTIVE"' in status.stdout)


def test_local_only_commands_refuse_server(service: Service, tmp_path: Path) -> None:
    """A command that needs the key file (keys status) refuses --server with one line."""
    workdir = tmp_path / "operator"
    workdir.mkdir()
    done = _credman(service, workdir, "keys", "status")
    assert (1, True) == (done.returncode, "--server" in done.stderr)
    assert [] == list(workdir.iterdir())

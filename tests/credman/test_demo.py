"""The demo runs end to end (short mode) and leaves only what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_leaves_only_what_it_says(tmp_path: Path) -> None:
    """`credman demo --quick` exits 0, verifies the audit chain and lists what it left."""
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "credman", "demo", "--quick", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"COLUMNS": "120", "PATH": ""},
    )
    assert (0, "") == (result.returncode, result.stderr)  # no Fontconfig warning, no noise
    assert "audit chain ok" in result.stdout
    assert "revoked 0 grants" in result.stdout
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert [
        "credman.db",
        "credman.key",
        "diagrams/credential-github-prod.md",
        "diagrams/credential-github-prod.svg",
        "diagrams/lifecycle.md",
        "diagrams/lifecycle.svg",
    ] == left
    assert ", ".join(left) in result.stdout.replace("\n", "")

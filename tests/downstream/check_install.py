"""Run in a fresh venv holding only the built wheel and its runtime dependencies (no extras):
every module imports, the migrations ship and run, py.typed ships, and a feature whose
extra is missing says which extra to install. Exits non-zero on the first failure."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

import credman
from credman import CredentialError, CredentialManager
from credman.crypto import KeyFileProvider

NOT_IMPORTABLE = (
    "credman.__main__",  # importing it runs the command line
    "credman.storage.migrations",  # alembic's env.py runs only under alembic
    "credman.server",  # the HTTP service: the 'server' extra (FastAPI, uvicorn)
)


def _modules() -> list[str]:
    found = pkgutil.walk_packages(credman.__path__, "credman.")
    return sorted(m.name for m in found if not m.name.startswith(NOT_IMPORTABLE))


def _refuses(call: object, extra: str) -> None:
    try:
        call()  # type: ignore[operator]
    except CredentialError as error:
        assert f"pip install 'credman[{extra}]'" in str(error), str(error)
    else:
        raise AssertionError(f"no CredentialError naming the {extra!r} extra")


def main() -> None:
    modules = _modules()
    for name in modules:
        importlib.import_module(name)
    assert resources.files("credman").joinpath("py.typed").is_file(), "py.typed is missing"
    versions = resources.files("credman.storage.migrations").joinpath("versions")
    assert any(p.name.endswith(".py") for p in versions.iterdir()), "no migration versions"
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "credman.key"
        KeyFileProvider(key).create()
        with CredentialManager(f"sqlite:///{scratch}/credman.db", str(key)) as manager:
            from credman.testing import time_machine

            _refuses(lambda: time_machine(manager).__enter__(), "testing")
        from credman.diagrams import lifecycle_svg

        _refuses(lifecycle_svg, "diagrams")
    print(f"{len(modules)} modules import from {Path(credman.__file__).parent}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""A ``credman serve`` process for tests: python _serve_process.py DB KEY HOST:PORT CERT KEY.

Logs go to stderr as the CLI's would (redacted loguru lines plus uvicorn's own); prints
``ready`` on stdout once every listener accepts connections.
"""

from __future__ import annotations

import sys
from typing import Any

from credman import CredentialManager
from credman.logs import configure_logging
from credman.server import load_settings, serve


def main() -> int:
    database_url, key_file, http, cert, key = sys.argv[1:6]
    configure_logging(level="DEBUG")
    settings = load_settings(http=http, tls_cert=cert, tls_key=key, interval=1.0)

    def make_manager(**options: Any) -> CredentialManager:
        return CredentialManager(database_url, key_file, **options)

    def ready() -> None:
        print("ready", flush=True)

    return serve(settings, make_manager, ready=ready)


if __name__ == "__main__":
    sys.exit(main())

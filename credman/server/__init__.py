"""The HTTP service: ``create_app(manager, settings)`` and ``serve(settings, make_manager)``.

Needs the ``server`` extra (FastAPI, uvicorn, prometheus_client).
"""

from credman.server.app import create_app
from credman.server.run import serve
from credman.server.settings import ServerSettings, load_settings

__all__ = ["ServerSettings", "create_app", "load_settings", "serve"]

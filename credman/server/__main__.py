"""``python -m credman.server openapi``: print the OpenAPI document (for ``docs/openapi.json``)."""

import json
import sys

from credman.server.app import openapi_document

if sys.argv[1:] != ["openapi"]:
    sys.exit("usage: python -m credman.server openapi")
print(json.dumps(openapi_document(), indent=2))

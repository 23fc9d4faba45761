"""The HTTP API's routes, one router per concern; `servers/http_api.py` wires them into the app with the
middleware and error handlers. Every route reaches the engine through `ServerContext` (a FastAPI dependency)."""

from photoseek.servers.routes.images import router as images
from photoseek.servers.routes.index import router as index
from photoseek.servers.routes.search import router as search
from photoseek.servers.routes.service import router as service

ROUTERS = (service, search, images, index)

__all__ = ["ROUTERS"]

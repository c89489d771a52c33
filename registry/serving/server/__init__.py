"""The built-in model server (`registry serve DIR`): V2 inference over a folder `registry pull` keeps.

`Server` (models.py) keeps each model's versions live in persistent, sandboxed workers
(`registry.runner.worker`) and swaps them as the folder's links move; `create_app`
(app.py) puts the Open Inference Protocol over it. Needs the `serve` extra (FastAPI,
uvicorn, prometheus-client). Both names are importable from here, loaded on first use:

    from registry.serving.server import Server, create_app
    with Server(Path("/srv/models")) as server:      # loads, then watches the folder
        app = create_app(server)                     # any ASGI server, or TestClient
"""

from __future__ import annotations

from typing import Any

__all__ = ["Server", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "Server":
        from registry.serving.server.models import Server

        return Server
    if name == "create_app":
        from registry.serving.server.app import create_app

        return create_app
    raise AttributeError(name)

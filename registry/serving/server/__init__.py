"""The built-in model server (`registry serve DIR`): V2 inference over a folder `registry pull` keeps.

`Server` (models.py) keeps each model's versions live in persistent, sandboxed workers
(`registry.runner.worker`) and swaps them as the folder's links move; `create_app`
(app.py) puts the Open Inference Protocol over it. Needs the `serve` extra (FastAPI,
uvicorn, prometheus-client) for the app and the metrics.
"""

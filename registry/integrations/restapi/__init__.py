"""`registry api`: the read-only REST API and the promotion endpoint (FastAPI)."""

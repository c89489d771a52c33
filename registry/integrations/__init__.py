"""Surfaces built on the queries and changes: the REST API, the MCP server, the static site, importers, the demo."""

"""Read-only answers about a registry: the inventory, manifests, the audit log, validation and the consistency rule."""

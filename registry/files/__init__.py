"""The registry's files: layout, names, the hardened YAML reader, schemas, cards, stages, registry.yaml, CODEOWNERS.

The bottom layer: reads and checks bytes it is given; no git, no DVC, no network."""

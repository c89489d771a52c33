"""Files that `registry init` writes into a new registry besides registry.yaml."""

from __future__ import annotations

from registry import __version__

WORKFLOW_FILE = ".github/workflows/registry.yml"


def workflow() -> str:
    # Installs the distribution by its own name, pinned: `pip install registry` is another package.
    return f"""\
# Gate checks for a model registry, written by `registry init` ({__version__}).
# On a pull request: validate what changed. On main: publish the production manifest.
name: registry
on:
  pull_request:
  push:
    branches: [main]
permissions:
  contents: read
jobs:
  gates:
    if: github.event_name == 'pull_request'
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "gitops-registry=={__version__}"
      - run: registry validate
  manifest:
    if: github.event_name == 'push'
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "gitops-registry=={__version__}"
      - run: registry manifest --stage production --json > manifest.json
      - uses: actions/upload-artifact@v4
        with:
          name: production-manifest
          path: manifest.json
"""

"""Workflow files: the one `registry init` writes into a registry, and this project's reusable one.

Both are rendered from the same job text, so a registry made by `init` and a registry
that calls `.github/workflows/registry-gates.yml` run the very same steps. The
reusable file is checked into this project; a test keeps it equal to
`reusable_workflow()`.
"""

from __future__ import annotations

from registry import __version__

WORKFLOW_FILE = ".github/workflows/registry.yml"
REUSABLE_WORKFLOW_FILE = ".github/workflows/registry-gates.yml"
# Set (non-empty) where `registry` is already on PATH: a self-hosted runner, or a local run of the steps.
SKIP_INSTALL_ENV = "REGISTRY_SKIP_INSTALL"
CHECK_REPORT = "registry-check.json"
MANIFEST_FILE = "manifest.json"


# The extra a DVC remote's URL scheme needs on the runner (DVC's own plugin for that storage).
REMOTE_EXTRAS = {"s3": "s3"}


def package_spec(remote_url: str = "") -> str:
    """What pip installs: the distribution's own name, pinned (`pip install registry` is an
    unrelated package), with the extra the DVC remote needs, e.g. gitops-registry[s3]==X.Y.Z."""
    scheme = remote_url.partition("://")[0] if "://" in remote_url else ""
    extra = REMOTE_EXTRAS.get(scheme.lower())
    return f"gitops-registry{f'[{extra}]' if extra else ''}=={__version__}"


# @NAME@ placeholders, not str.format: the text is full of ${{ }} and shell ${VAR:-}.
_JOBS = """\
jobs:
  gates:
    if: github.event_name == 'pull_request'
    runs-on: ubuntu-latest
    timeout-minutes: 30
    # A new push to the PR cancels the run still checking the old head.
    concurrency:
      group: registry-gates-${{ github.repository }}-${{ github.event.pull_request.number || github.ref }}
      cancel-in-progress: true
    env:
      REGISTRY_PACKAGE: @PACKAGE@
      BASE_REF: @BASE_REF@
      # Credentials of the DVC remote (S3); unset secrets are empty and DVC falls back to its defaults.
      AWS_ACCESS_KEY_ID: ${{ secrets.AWS_ACCESS_KEY_ID }}
      AWS_SECRET_ACCESS_KEY: ${{ secrets.AWS_SECRET_ACCESS_KEY }}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0  # the gates diff against the base branch and read merged history
      - uses: actions/setup-python@v5
        with:
          python-version: @PYTHON@
      - name: Install gitops-registry
        id: install
        run: |
          if [ -n "${REGISTRY_SKIP_INSTALL:-}" ]; then
            echo "REGISTRY_SKIP_INSTALL is set: using $(command -v registry)"
          else
            python -m pip install --disable-pip-version-check "$REGISTRY_PACKAGE"
          fi
          registry --version
      - name: Pull the checked versions' artifacts from DVC
        run: registry fetch --base "origin/$BASE_REF"
      - name: Gates
        # Also after a failed pull: the report then says which artifact could not be verified.
        if: ${{ !cancelled() && steps.install.outcome == 'success' }}
        run: registry check --base "origin/$BASE_REF" --json @REPORT@ --summary "$GITHUB_STEP_SUMMARY"
      - name: Upload the gate report
        if: ${{ !cancelled() }}
        uses: actions/upload-artifact@v4
        with:
          name: registry-check-report
          path: @REPORT@
          if-no-files-found: ignore
  manifest:
    if: github.event_name == 'push' && github.ref == format('refs/heads/{0}', github.event.repository.default_branch)
    runs-on: ubuntu-latest
    timeout-minutes: 15
    concurrency:
      group: registry-manifest-${{ github.repository }}-${{ github.ref }}
      cancel-in-progress: false
    env:
      REGISTRY_PACKAGE: @PACKAGE@
      STAGE: @STAGE@
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: @PYTHON@
      - name: Install gitops-registry
        run: |
          if [ -n "${REGISTRY_SKIP_INSTALL:-}" ]; then
            echo "REGISTRY_SKIP_INSTALL is set: using $(command -v registry)"
          else
            python -m pip install --disable-pip-version-check "$REGISTRY_PACKAGE"
          fi
          registry --version
      - name: Build the manifest
        run: registry manifest --stage "$STAGE" --json > @MANIFEST@
      - name: Publish the manifest
        uses: actions/upload-artifact@v4
        with:
          name: @ARTIFACT@
          path: @MANIFEST@
          if-no-files-found: error
"""

_INIT_HEAD = """\
# Gate checks for a model registry, written by `registry init` (@VERSION@).
# On a pull request: pull the checked versions' artifacts from DVC and run the gates
# (report in the job summary and as an artifact). On main: publish the production
# manifest as an artifact. DVC remote credentials come from repository secrets
# (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY for S3; put the region in .dvc/config).
# Set REGISTRY_SKIP_INSTALL on a runner that already has `registry` on PATH.
name: registry
on:
  pull_request:
  push:
    branches: [main]
permissions:
  contents: read
defaults:
  run:
    shell: bash
"""

_REUSABLE_HEAD = """\
# Reusable gate checks for a model registry (generated by registry.templates.reusable_workflow()).
# In a registry repository:
#   on: {pull_request: {}, push: {branches: [main]}}
#   permissions: {contents: read}
#   jobs:
#     registry:
#       uses: <org>/<repo>/.github/workflows/registry-gates.yml@<ref>
#       secrets: inherit
# The same jobs as the workflow `registry init` writes; see docs/workflows.md.
name: registry-gates
on:
  workflow_call:
    inputs:
      python-version:
        description: Python for the runner.
        type: string
        default: "3.11"
      registry-package:
        description: What pip installs, pinned (extras such as gitops-registry[s3]==X.Y.Z for an S3 remote, or a path).
        type: string
        default: "@SPEC@"
      base-ref:
        description: The branch a pull request merges into (default, the PR's base branch).
        type: string
        default: ""
      stage:
        description: The stage whose manifest is published on pushes to the default branch.
        type: string
        default: production
    secrets:
      AWS_ACCESS_KEY_ID:
        description: DVC remote credentials (S3).
        required: false
      AWS_SECRET_ACCESS_KEY:
        description: DVC remote credentials (S3).
        required: false
permissions:
  contents: read
defaults:
  run:
    shell: bash
"""


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


_FILES = {"REPORT": CHECK_REPORT, "MANIFEST": MANIFEST_FILE}


def workflow(remote_url: str = "") -> str:
    """The workflow `registry init` writes: self-contained, pinned to this version, with the
    extra that the registry's DVC remote needs."""
    values = {"VERSION": __version__, "PACKAGE": f'"{package_spec(remote_url)}"', "PYTHON": '"3.11"',
              "BASE_REF": "${{ github.base_ref }}", "STAGE": "production",
              "ARTIFACT": "production-manifest", **_FILES}
    return _render(_INIT_HEAD + _JOBS, values)


def reusable_workflow() -> str:
    """This project's `on: workflow_call` workflow, which registries call with `uses:`."""
    values = {"SPEC": package_spec(), "PACKAGE": "${{ inputs.registry-package }}",
              "PYTHON": "${{ inputs.python-version }}",
              "BASE_REF": "${{ inputs.base-ref || github.base_ref }}", "STAGE": "${{ inputs.stage }}",
              "ARTIFACT": "${{ inputs.stage }}-manifest", **_FILES}
    return _render(_REUSABLE_HEAD + _JOBS, values)

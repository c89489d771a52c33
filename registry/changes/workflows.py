"""Workflow files: the one `registry init` writes into a registry, and this project's reusable one.

Both are rendered from the same job text, so a registry made by `init` and a registry
that calls `.github/workflows/registry-gates.yml` run the very same steps. The
reusable file is checked into this project; a test keeps it equal to
`reusable_workflow()`.
"""

from __future__ import annotations

from registry.version import __version__

WORKFLOW_FILE = ".github/workflows/registry.yml"
REUSABLE_WORKFLOW_FILE = ".github/workflows/registry-gates.yml"
# Set (non-empty) where the `python` on PATH has gitops-registry installed: a self-hosted runner, or a
# local run of the steps.
SKIP_INSTALL_ENV = "REGISTRY_SKIP_INSTALL"
CHECK_REPORT = "registry-check.json"
MANIFEST_FILE = "manifest.json"


# The extra a DVC remote's URL scheme needs on the runner (DVC's own plugin for that storage).
REMOTE_EXTRAS = {"s3": "s3"}


def package_spec(remote_url: str = "", scan_profiles: tuple[str, ...] = ()) -> str:
    """What pip installs: the distribution's own name, pinned (`pip install registry` is an
    unrelated package), with the extras the registry needs: its DVC remote's (e.g.
    gitops-registry[s3]==X.Y.Z) and `sklearn` (skops) when registry.yaml turns that scan
    profile on, so the gates can read .skops files."""
    scheme = remote_url.partition("://")[0] if "://" in remote_url else ""
    wanted = (REMOTE_EXTRAS.get(scheme.lower()), "sklearn" if "sklearn" in scan_profiles else None)
    extras = ",".join(e for e in wanted if e)
    return f"gitops-registry{f'[{extras}]' if extras else ''}=={__version__}"


# Actions pinned by full commit SHA (a tag can be moved), the release in a comment.
ACTIONS = {
    "checkout": "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683  # v4.2.2",
    "setup-python": "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065  # v5.6.0",
    "upload-artifact": "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02  # v4.6.2",
    "download-artifact": "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093  # v4.3.0",
    "cache": "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684  # v4.2.3",
}
FETCHED_ARTIFACT = "registry-fetched"
# The interpreter of the venv the install step makes outside the checkout (written to $GITHUB_ENV).
PYTHON_ENV = "REGISTRY_PYTHON"

# Every job starts the same way: a checkout that keeps no token, Python, and `registry` installed
# in a venv under $RUNNER_TEMP, run as `python -I` (no script folder or current directory on
# sys.path, no PYTHON* variables, no user site): a `pip/`, `registry/`, `yaml/` or
# `sitecustomize.py` in the pull request cannot stand in for the real ones.
_SETUP = """\
      - uses: @CHECKOUT@
        with:
          fetch-depth: 0  # full history: the gates diff against the base branch and read merged history
          persist-credentials: false  # no token left in .git/config
      - uses: @SETUP_PYTHON@
        with:
          python-version: @PYTHON@
      - name: Install gitops-registry
        id: install
        run: |
          cd "$RUNNER_TEMP"  # outside the checkout
          if [ -n "${REGISTRY_SKIP_INSTALL:-}" ]; then
            python=$(command -v python)
            echo "REGISTRY_SKIP_INSTALL is set: using $python"
          else
            python -I -m venv "$RUNNER_TEMP/registry-venv"
            python="$RUNNER_TEMP/registry-venv/bin/python"
            "$python" -I -m pip install --disable-pip-version-check "$REGISTRY_PACKAGE"
          fi
          echo "REGISTRY_PYTHON=$python" >> "$GITHUB_ENV"
          "$python" -I -m registry --version
"""

# @NAME@ placeholders, not str.format: the text is full of ${{ }} and shell ${VAR:-}.
_JOBS = """\
jobs:
  fetch:
    # Holds the DVC remote's credentials, so it runs none of the pull request's code: it pulls
    # the bytes the gates will read and hands them to the gates job as a workflow artifact.
    if: github.event_name == 'pull_request'
    runs-on: ubuntu-latest
    timeout-minutes: 30
    permissions:
      contents: read
    # A new push to the PR cancels the run still checking the old head.
    concurrency:
      group: registry-fetch-${{ github.repository }}-${{ github.event.pull_request.number || github.ref }}
      cancel-in-progress: true
    env:
      REGISTRY_PACKAGE: @PACKAGE@
      BASE_REF: @BASE_REF@
    steps:
@SETUP@      - name: Pull the checked versions' artifacts from DVC
        env:
          # Credentials of the DVC remote (S3), in this step only; unset secrets are empty and DVC falls back to its defaults.
          AWS_ACCESS_KEY_ID: ${{ secrets.AWS_ACCESS_KEY_ID }}
          AWS_SECRET_ACCESS_KEY: ${{ secrets.AWS_SECRET_ACCESS_KEY }}
        run: |
          # The remote and its options come from the base branch, never from the PR's .dvc/config.
          if [ -L .dvc ]; then echo "error: .dvc is a symbolic link" >&2; exit 1; fi
          rm -f .dvc/config .dvc/config.local
          git show "origin/$BASE_REF:.dvc/config" > .dvc/config
          "$REGISTRY_PYTHON" -I -m registry fetch --base "origin/$BASE_REF"
      - name: Hand the pulled files over
        # Also after a failed pull: the gates job then reports which artifact could not be verified.
        if: ${{ !cancelled() && steps.install.outcome == 'success' }}
        run: |
          "$REGISTRY_PYTHON" -I -m registry.gates.handover pack --base "origin/$BASE_REF" "$RUNNER_TEMP/@FETCHED@"
      - name: Upload the pulled files
        if: ${{ !cancelled() && steps.install.outcome == 'success' }}
        uses: @UPLOAD@
        with:
          name: @FETCHED@
          path: ${{ runner.temp }}/@FETCHED@
          if-no-files-found: error
          retention-days: 1
  gates:
    # Runs the gates and with them the model's code: no secret, and a read-only token that only
    # actions/checkout sees. The artifacts come from the fetch job.
    needs: fetch
    if: ${{ !cancelled() && github.event_name == 'pull_request' }}
    runs-on: ubuntu-latest
    timeout-minutes: 30
    permissions:
      contents: read
    concurrency:
      group: registry-gates-${{ github.repository }}-${{ github.event.pull_request.number || github.ref }}
      cancel-in-progress: true
    env:
      REGISTRY_PACKAGE: @PACKAGE@
      BASE_REF: @BASE_REF@
    steps:
@SETUP@      - name: Download the pulled files
        id: download
        continue-on-error: true  # nothing uploaded when the fetch job failed early: the gates say what is missing
        uses: @DOWNLOAD@
        with:
          name: @FETCHED@
          path: ${{ runner.temp }}/@FETCHED@
      - name: Put the pulled files in place
        if: ${{ steps.download.outcome == 'success' }}
        run: |
          "$REGISTRY_PYTHON" -I -m registry.gates.handover unpack --base "origin/$BASE_REF" "$RUNNER_TEMP/@FETCHED@"
      - name: Cache the models' environments
        # Built from the versions' requirements files (`environment:` in a card; docs/model-code.md), one
        # folder per file hash and Python. GitHub keeps a pull request's cache to that pull request.
        uses: @CACHE@
        with:
          path: ~/.cache/registry/envs
          key: registry-envs-${{ runner.os }}-${{ hashFiles('models/**/requirements*.txt') }}
          restore-keys: |
            registry-envs-${{ runner.os }}-
      - name: Gates
        # Also after a failed pull: the report then says which artifact could not be verified.
        if: ${{ !cancelled() && steps.install.outcome == 'success' }}
        run: |
          "$REGISTRY_PYTHON" -I -m registry check --base "origin/$BASE_REF" --json "$RUNNER_TEMP/@REPORT@" --summary "$GITHUB_STEP_SUMMARY"
      - name: Upload the gate report
        if: ${{ !cancelled() }}
        uses: @UPLOAD@
        with:
          name: registry-check-report
          path: ${{ runner.temp }}/@REPORT@
          if-no-files-found: ignore
  manifest:
    if: github.event_name == 'push' && github.ref == format('refs/heads/{0}', github.event.repository.default_branch)
    runs-on: ubuntu-latest
    timeout-minutes: 15
    permissions:
      contents: read
    concurrency:
      group: registry-manifest-${{ github.repository }}-${{ github.ref }}
      cancel-in-progress: false
    env:
      REGISTRY_PACKAGE: @PACKAGE@
      STAGE: @STAGE@
    steps:
@SETUP@      - name: Build the manifest
        run: |
          "$REGISTRY_PYTHON" -I -m registry manifest --stage "$STAGE" --json > "$RUNNER_TEMP/@MANIFEST@"
      - name: Publish the manifest
        uses: @UPLOAD@
        with:
          name: @ARTIFACT@
          path: ${{ runner.temp }}/@MANIFEST@
          if-no-files-found: error
"""

# Rendered only for a registry that opts in (registry.yaml `audit: {record_approvals: true}`):
# the one job with `contents: write`. It runs on pushes to the default branch (main's code,
# never a pull request's) and pushes refs/notes/registry/approvals; the token reaches git
# through that one step's environment (GIT_CONFIG_*), never .git/config.
_APPROVALS_JOB = """\
  approvals:
    if: github.event_name == 'push' && github.ref == format('refs/heads/{0}', github.event.repository.default_branch)
    runs-on: ubuntu-latest
    timeout-minutes: 10
    permissions:
      contents: write  # push refs/notes/registry/approvals
      pull-requests: read  # read each merged PR's reviews
    # One run at a time, never cancelled: every push's pull requests get their notes.
    concurrency:
      group: registry-approvals-${{ github.repository }}
      cancel-in-progress: false
    env:
      REGISTRY_PACKAGE: @PACKAGE@
    steps:
@SETUP@      - name: Record the merged pull requests' approvals as git notes
        env:
          GITHUB_TOKEN: ${{ github.token }}
          BEFORE: ${{ github.event.before }}
          AFTER: ${{ github.sha }}
        run: |
          basic=$(printf 'x-access-token:%s' "$GITHUB_TOKEN" | base64 -w0)
          echo "::add-mask::$basic"
          export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="http.${GITHUB_SERVER_URL}/.extraheader"
          export GIT_CONFIG_VALUE_0="AUTHORIZATION: basic $basic"
          # A new branch's first push has no "before": record the last commit only.
          if [ "$BEFORE" = "0000000000000000000000000000000000000000" ]; then BEFORE="$AFTER~1"; fi
          "$REGISTRY_PYTHON" -I -m registry record-approvals --range "$BEFORE..$AFTER" --push
"""

_INIT_HEAD = """\
# Gate checks for a model registry, written by `registry init` (@VERSION@).
# On a pull request: job `fetch` pulls the checked versions' artifacts from DVC (the only
# step with the DVC credentials, and it runs none of the PR's code) and hands them over as
# an artifact; job `gates` runs the gates, and the model's code, with no secret (report in
# the job summary and as an artifact). On main: publish the production manifest as an
# artifact. DVC remote credentials come from repository secrets (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY for S3; put the region in .dvc/config). See docs/workflows.md of
# gitops-registry. Set REGISTRY_SKIP_INSTALL on a runner whose `python` already has
# gitops-registry installed.
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
# Reusable gate checks for a model registry (generated by registry.changes.workflows.reusable_workflow()).
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
        description: What pip installs, pinned (extras such as gitops-registry[s3]==X.Y.Z for an S3 remote, or an absolute path).
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
    values = {"SETUP": _SETUP, "CHECKOUT": ACTIONS["checkout"], "SETUP_PYTHON": ACTIONS["setup-python"],
              "UPLOAD": ACTIONS["upload-artifact"], "DOWNLOAD": ACTIONS["download-artifact"], "CACHE": ACTIONS["cache"],
              "FETCHED": FETCHED_ARTIFACT, **values}
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


_FILES = {"REPORT": CHECK_REPORT, "MANIFEST": MANIFEST_FILE}


def workflow(remote_url: str = "", record_approvals: bool = False, scan_profiles: tuple[str, ...] = ()) -> str:
    """The workflow `registry init` (and `registry workflow`) writes: self-contained, pinned to
    this version, with the extra that the registry's DVC remote needs, and the approvals job
    only where registry.yaml opts in."""
    values = {"VERSION": __version__, "PACKAGE": f'"{package_spec(remote_url, scan_profiles)}"', "PYTHON": '"3.11"',
              "BASE_REF": "${{ github.base_ref }}", "STAGE": "production",
              "ARTIFACT": "production-manifest", **_FILES}
    return _render(_INIT_HEAD + _JOBS + (_APPROVALS_JOB if record_approvals else ""), values)


def reusable_workflow() -> str:
    """This project's `on: workflow_call` workflow, which registries call with `uses:`."""
    values = {"SPEC": package_spec(), "PACKAGE": "${{ inputs.registry-package }}",
              "PYTHON": "${{ inputs.python-version }}",
              "BASE_REF": "${{ inputs.base-ref || github.base_ref }}", "STAGE": "${{ inputs.stage }}",
              "ARTIFACT": "${{ inputs.stage }}-manifest", **_FILES}
    return _render(_REUSABLE_HEAD + _JOBS, values)

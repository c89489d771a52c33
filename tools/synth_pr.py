"""Pull requests on a synthetic registry (tools/synth.py), made with git plumbing for tools/bench.

Each is one commit on top of HEAD, written through a private index so the registry's work
tree stays as generated (synth reuses a cached registry only while it is untouched).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import tempfile
from pathlib import Path

from synth import ARTIFACT

from registry.files.names import Version

REGISTRATION_REF = "refs/bench/one-model-registration"


def registration_pr(path: Path, model: str, ref: str = REGISTRATION_REF) -> str:
    """A commit on top of HEAD that registers one new version of `model` (the next major), as
    `registry register` would: its card and a small safetensors file kept in git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, check=True).stdout.decode().strip()

    latest = max(version_folders(path, model), key=Version.parse)
    version = f"{int(latest.split('.')[0]) + 1}.0.0"
    header = json.dumps({"weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    weights = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 0.5, -0.5)
    lines, in_artifacts = [], False
    for line in git("show", f"HEAD:models/{model}/{latest}/card.yaml").splitlines():
        if in_artifacts and line.startswith(("- ", "  ")):
            continue  # the old version's artifact list
        in_artifacts = False
        if line.startswith("version:"):
            line = f"version: {version}"
        elif line == "artifacts:":
            in_artifacts = True
            lines += ["artifacts:", f"- path: {ARTIFACT}", f"  size: {len(weights)}",
                      f"  sha256: {hashlib.sha256(weights).hexdigest()}", "  storage: git"]
            continue
        lines.append(line)
    folder = f"models/{model}/{version}"
    files = {f"{folder}/card.yaml": ("\n".join(lines) + "\n").encode(), f"{folder}/{ARTIFACT}": weights}
    return commit_on_head(path, files, f"Register {model} {version}", ref)


def version_folders(path: Path, model: str) -> list[str]:
    """The version folders of a model at HEAD."""
    out = subprocess.run(["git", "ls-tree", "HEAD", f"models/{model}/"], cwd=path, capture_output=True,
                         check=True).stdout.decode()
    return [line.split("\t")[1].rsplit("/", 1)[1] for line in out.splitlines() if line.split()[1] == "tree"]


def commit_on_head(path: Path, files: dict[str, bytes], subject: str, ref: str) -> str:
    """A commit on top of HEAD that writes these files (with a "Reason: bench" trailer), made with
    git plumbing and a private index so the work tree stays as generated; `ref` is pointed at it."""
    def git(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
        return subprocess.run(["git", *args], cwd=path, input=stdin, capture_output=True, check=True,
                              env=env).stdout.decode().strip()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"), GIT_AUTHOR_NAME="bench",
                   GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
                   GIT_COMMITTER_EMAIL="bench@example.com")
        git("read-tree", "HEAD", env=env)
        for name, data in files.items():
            blob = git("hash-object", "-w", "--stdin", stdin=data)
            git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
        tree = git("write-tree", env=env)
        commit = git("commit-tree", tree, "-p", "HEAD", "-m", subject, "-m", "Reason: bench", env=env)
    git("update-ref", ref, commit)
    return ref

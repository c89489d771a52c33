"""Which version folders a stage serves at a registry commit, with what files: read from the blob-less mirror."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from registry.files import stages
from registry.files.cards import Artifact
from registry.queries import manifest
from registry.repo import git, storage
from registry.repo.registry import MODELS_DIR, Registry
from registry.serving.mirror import Blob, Mirror
from registry.serving.remote import Remote, from_config
from registry.serving.store import PullError
from registry.serving.verify import VerificationError, Wanted, safe_relative
from registry.signing.manifest import SIGNATURE_FILE, is_signed_file

__all__ = ["resolve"]


def resolve(mirror: Mirror, cat: git.CatFile, commit: str, source: str, stage: str, scope: Sequence[str],
            should_stop: Callable[[], None], required: bool = True) -> tuple[list[Wanted], Remote | None]:
    """What each model in scope must serve of `stage` at commit (all models when scope is empty),
    and the DVC remote its artifacts are read from. With required=False (the canary beside
    production) a model of the scope without a version in `stage` is left out, not refused."""
    root = mirror.subtrees(cat, f"{commit}^{{tree}}")
    model_trees = mirror.subtrees(cat, root[MODELS_DIR][1]) if MODELS_DIR in root else {}
    names = [n for n in sorted(model_trees) if not scope or n in scope]
    unknown = [n for n in scope if n not in model_trees]
    if unknown:
        raise PullError(f"--model {unknown[0]}: no such model in the registry at {commit[:12]}")
    model_entries = {n: mirror.subtrees(cat, model_trees[n][1]) for n in names}
    config_blob = mirror.subtrees(cat, root[".dvc"][1]).get("config") if ".dvc" in root else None
    # Blobs in two batches: the stage files (and DVC config), then the folders they name.
    mirror.prefetch([t[stages.STAGES_FILE][1] for t in model_entries.values() if stages.STAGES_FILE in t]
                    + ([config_blob[1]] if config_blob else []))
    folders: list[str] = []
    for name, entries in model_entries.items():
        if stages.STAGES_FILE not in entries:
            continue
        text = cat.read(entries[stages.STAGES_FILE][1]) or b""
        held = stages.parse(text, f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}")
        folders += [entries[v][1] for v in held.versions_in(stage) if v in entries]
    mirror.prefetch(b.oid for f in folders for b in mirror.walk(cat, f))
    should_stop()
    served = manifest.build(Registry(mirror.path), stage, at=commit, names=tuple(names)).as_json()["models"]
    missing = [n for n in scope if n not in served]
    if missing and required:
        raise PullError(f"--model {missing[0]}: has no {stage} version at registry commit {commit[:12]}")
    remote = from_config(cat.read(config_blob[1]) if config_blob else None, source)
    wanted = []
    for name, entry in sorted(served.items()):
        version = entry["version"]
        tree = model_entries[name][version][1]
        folder = entry["path"]
        blobs = mirror.walk(cat, tree)
        for blob in blobs:
            safe_relative(blob.path, folder)
            if blob.mode not in ("100644", "100755"):
                raise VerificationError(f"{folder}/{blob.path}: not a regular file (git mode {blob.mode}); refused")
        artifacts = tuple(Artifact(safe_relative(a["path"], folder), int(a["size"]), a["sha256"], a["storage"])
                          for a in entry["artifacts"])
        by_path = {b.path: b for b in blobs}
        dvc_md5 = {}
        for artifact in artifacts:
            if artifact.storage == "dvc":
                pointer = by_path[f"{artifact.path}.dvc"]
                dvc_md5[artifact.path] = _pointer_md5(cat, pointer, f"{folder}/{pointer.path}")
        git_files = tuple(b for b in blobs if is_signed_file(b.path) or b.path == SIGNATURE_FILE)
        git_files = tuple(b for b in git_files if b.path not in dvc_md5)
        wanted.append(Wanted(name, version, entry.get("traffic"), tree, folder, git_files, dvc_md5, artifacts))
    if remote is None and any(w.dvc_md5 for w in wanted):
        raise PullError(".dvc/config names no default remote; the artifacts cannot be downloaded")
    return wanted, remote


def _pointer_md5(cat: git.CatFile, pointer: Blob, path: str) -> str:
    return storage.parse_pointer(cat.read(pointer.oid) or b"", path).md5

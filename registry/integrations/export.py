"""`registry export NAME@VERSION --format mar|mlflow|v2|kserve --out DIR`: a version for another model server.

The version is read from one commit of the local registry (HEAD unless `at` names another):
its card and git-kept files from git objects, its DVC-tracked artifacts through DVC (the
local cache, else the remote), into a temp folder. Every artifact's size and sha256 is
checked against the card before any builder sees the folder; only what the card lists (and
card.yaml, signature.json) is handed on. The builder for the format
(`registry.serving.formats`) then writes into another temp folder beside `--out`, which is
renamed onto `--out` (missing or empty) when it is complete: the output appears whole or not
at all.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError, ValidationError
from registry.files import cards, stages
from registry.files.layout import CARD_FILE
from registry.files.names import check_model_name, check_version
from registry.repo import git, storage
from registry.repo.registry import MODELS_DIR, Registry
from registry.serving.verify import artifact_mismatch

FORMATS = ("mar", "mlflow", "v2", "kserve")
KSERVE_FILE = "inferenceservice.yaml"
SIGNATURE_FILE = "signature.json"
REGULAR = ("100644", "100755")  # git modes of plain files; links and submodules are never followed


class ExportError(RegistryError):
    """The version cannot be exported: its files do not match its card, or a builder refused it."""


@dataclass(frozen=True)
class Exported:
    name: str
    version: str
    format: str
    out: Path
    commit: str
    files: tuple[str, ...]  # what --out holds, relative paths
    signed_by: str | None = None  # the trusted key that verified the version (with trusted_keys)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "format": self.format, "out": str(self.out),
                "registry_commit": self.commit, "files": list(self.files), "signed_by": self.signed_by}


@dataclass(frozen=True)
class Source:
    """The version as one commit has it: its card, its git files (path -> blob id), its stages."""

    commit: str
    folder: str  # models/<name>/<version>
    card: cards.Card
    git_files: Mapping[str, str]
    pointers: Mapping[str, str]  # artifact path -> DVC md5, for storage: dvc
    stages: stages.Stages


def export(reg: Registry, name: str, version: str, fmt: str, out: Path, *, at: str = "HEAD",
           storage_uri: str | None = None, trusted_keys: Path | None = None,
           progress: storage.Progress | None = None) -> Exported:
    """Export name@version (as of `at`) in format `fmt` into the new or empty folder `out`.

    With trusted_keys (a PEM file of one or more public keys), the version's signature must
    verify against one of them, over the very files exported, as `registry pull` requires.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    check_model_name(name)
    check_version(version)
    keys = _keys(trusted_keys) if trusted_keys is not None else None
    out = Path(os.path.abspath(out))
    check_out(out)
    source = read_source(reg, name, version, at)
    uri = kserve_storage_uri(source, storage_uri) if fmt == "kserve" else None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot be written ({exc.strerror}); give a folder you can write") from None
    try:
        folder = materialise(reg, source, work / "version", progress)
        signed_by = _verify(folder, name, version, keys) if keys is not None else None
        built = work / "out"
        build(fmt, folder, source, built, name=name, version=version, storage_uri=uri)
        files = tuple(sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if not p.is_dir()))
        try:
            os.replace(built, out)  # onto a missing or empty folder: one rename
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot be written ({exc.strerror}); give a new or empty folder") from None
    except OSError as exc:  # a full disk or a folder we cannot write under --out's parent; nothing is left
        raise ExportError(f"--out {out}: the export could not be written beside it: "
                          f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(name, version, fmt, out, source.commit, files, signed_by)


def check_out(out: Path) -> None:
    """Refuse an --out that exists and is not an empty folder: nothing is ever overwritten."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: the folder is not empty; give a new or empty folder (nothing is overwritten)")


def read_source(reg: Registry, name: str, version: str, at: str) -> Source:
    """The version's card, files and pointers at `at`; a usage error for an unknown model or version."""
    if not at or "\n" in at or at.startswith("-"):
        raise UsageError(f"--at {at!r}: no such commit, branch or tag in this registry")
    folder = f"{MODELS_DIR}/{name}/{version}"
    with git.CatFile(reg.root) as cat:
        [(commit, _)] = cat.read_many_with_ids([f"{at}^{{commit}}"])
        if commit is None:
            raise UsageError(f"--at {at}: no such commit, branch or tag in this registry")
        where = "" if at == "HEAD" else f" at {at}"
        if cat.read(f"{commit}:{MODELS_DIR}/{name}/") is None:
            raise UsageError(f"no model named {name!r} in this registry{where}; see `registry ls`")
        card_text = cat.read(f"{commit}:{folder}/{CARD_FILE}")
        if card_text is None:
            raise UsageError(f"{name}@{version} is not registered{where}; see `registry show {name}` for its versions")
        card = cards.parse(card_text, f"{folder}/{CARD_FILE}")
        problems = [*cards.folder_problems(card, name, version, f"{folder}/{CARD_FILE}", card_text),
                    *cards.environment_problems(card, f"{folder}/{CARD_FILE}", card_text)]
        if problems:
            raise ValidationError(problems)
        entries = git.ls_tree(commit, reg.root, [folder + "/"])
        git_files: dict[str, str] = {}
        for entry in entries:
            relative = entry.path[len(folder) + 1:]
            if entry.mode not in REGULAR:
                raise ExportError(f"{entry.path}: not a plain file (git mode {entry.mode}); refused")
            git_files[relative] = entry.sha
        pointers: dict[str, str] = {}
        for artifact in card.artifacts:
            if artifact.storage != "dvc":
                continue
            blob = git_files.get(artifact.path + ".dvc")
            if blob is None:
                raise ExportError(f"{folder}/{artifact.path}.dvc: the DVC pointer of an artifact card.yaml lists "
                                  "is missing; run `registry validate`")
            pointers[artifact.path] = storage.parse_pointer(cat.read(blob) or b"", f"{folder}/{artifact.path}.dvc").md5
        stages_path = f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}"
        stages_text = cat.read(f"{commit}:{stages_path}")
        held = stages.parse(stages_text, stages_path) if stages_text is not None else stages.Stages()
    return Source(commit, folder, card, git_files, pointers, held)


def materialise(reg: Registry, source: Source, dest: Path, progress: storage.Progress | None = None) -> Path:
    """The version folder at dest: card.yaml, signature.json and the card's artifacts, each checked."""
    card = source.card
    ref = f"{card.name}@{card.version}"
    dest.mkdir(parents=True)
    wanted = [CARD_FILE, *([SIGNATURE_FILE] if SIGNATURE_FILE in source.git_files else [])]
    wanted += [a.path for a in card.artifacts if a.storage == "git"]
    with git.CatFile(reg.root) as cat:
        for relative in wanted:
            blob = source.git_files.get(relative)
            if blob is None:
                raise ExportError(f"{ref}: {relative}: listed in card.yaml but not in {source.folder}")
            data = cat.read(blob)
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data or b"")
    for artifact in card.artifacts:
        if artifact.storage == "dvc":
            target = dest / artifact.path
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.fetch_at(reg.root, f"{source.folder}/{artifact.path}", source.commit, target)
            if progress is not None:
                progress(artifact.path, artifact.size, artifact.size)
    for artifact in card.artifacts:
        digest, size = storage.file_digest(dest / artifact.path)
        where = "the DVC cache or remote" if artifact.storage == "dvc" else "git"
        problem = artifact_mismatch(ref, artifact, size, digest, f"the copy in {where}")
        if problem:
            raise ExportError(f"{problem}, so nothing was exported")
    return dest


def _keys(path: Path) -> tuple[Any, ...]:
    from registry.signing.keys import load_public_keys

    try:
        return load_public_keys(path)
    except RegistryError as exc:
        raise UsageError(f"--trusted-keys: {exc}") from None


def _verify(folder: Path, name: str, version: str, keys: tuple[Any, ...]) -> str:
    """The version's signature over the materialised files, against the trusted keys; the signer's key id."""
    from registry.signing.bundle import verify_folder
    from registry.signing.manifest import SignatureError

    try:
        return verify_folder(folder, name, version, keys).key_id
    except SignatureError as exc:
        message = str(exc).replace(str(folder), f"{MODELS_DIR}/{name}/{version}")
        raise ExportError(f"{name}@{version}: {message}; nothing was exported") from None


def kserve_storage_uri(source: Source, given: str | None) -> str:
    """Where KServe will read the exported V2 layout: --storage-uri, where the user uploads --out.

    The DVC remote holds content-addressed objects, not a version's folder, so no URI there
    is one KServe's storage initializer could load a model folder from: the export writes the
    verified folder, and the InferenceService names where it will be uploaded.
    """
    if given:
        return given
    ref = f"{source.card.name}@{source.card.version}"
    raise UsageError(f"--format kserve needs --storage-uri: where you will upload the export (s3://bucket/models); "
                     f"the InferenceService then reads {ref.replace('@', '/')} below it")


def build(fmt: str, folder: Path, source: Source, out: Path, *, name: str, version: str,
          storage_uri: str | None) -> None:
    """Call the format's builder (registry.serving.formats.<fmt>) to write `out`."""
    card = source.card.data
    if fmt == "mlflow":
        from registry.serving.formats.mlflow import write_pyfunc

        write_pyfunc(folder, card, out, name=name, version=version)
        return
    out.mkdir()
    if fmt == "mar":
        _builder("mar", "build_mar")(folder, card, out, name=name, version=version)
    elif fmt == "v2":
        _builder("v2", "write_model")(folder, card, out, name=name, version=version)
    else:  # kserve: the V2 layout KServe's MLServer runtime loads, and the InferenceService naming it
        _builder("v2", "write_model")(folder, card, out, name=name, version=version)
        canary = source.stages.canary if source.stages.canary and source.stages.canary.version == version else None
        text = _builder("kserve", "inference_service")(
            name, version, storage_uri, canary_version=canary.version if canary else None,
            canary_traffic=canary.traffic if canary else None)
        (out / KSERVE_FILE).write_text(str(text), encoding="utf-8")


def _builder(module: str, function: str) -> Callable[..., Any]:
    qualified = f"registry.serving.formats.{module}"
    try:
        loaded = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name != qualified:
            raise
        raise ExportError(f"--format {module}: this installation has no {qualified}; "
                          "upgrade gitops-registry") from None
    found: Callable[..., Any] = getattr(loaded, function)
    return found

"""`registry register`: put a trained version (artifacts + card) into the registry on a branch."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.changes import branches, codeowners
from registry.errors import UsageError, ValidationError
from registry.files import cards, schemas, stages, yamlio
from registry.files.cards import Artifact, Card
from registry.files.names import Version, check_model_name, check_version
from registry.repo import git, storage
from registry.repo.registry import MODEL_FILE, Registry

CHUNK = 1 << 20
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    branch: str | None
    commit: str
    card: Card
    warnings: tuple[str, ...] = field(default=())
    signed_by: str | None = None  # the signing key's id (hex sha256 of its public PEM)


@dataclass(frozen=True)
class _Source:
    path: Path
    name: str
    size: int


def register(
    reg: Registry,
    name: str,
    version: str | None,
    card_file: Path,
    artifact_paths: Sequence[Path],
    *,
    bump: str | None = None,
    no_branch: bool = False,
    push: bool = False,
    progress: ProgressFn | None = None,
    sign_key: Path | None = None,
    passphrase: bytes | None = None,
    card_from_readme: bool = False,
) -> Registered:
    check_model_name(name)
    version = _resolve_version(reg, name, version, bump)
    card_data, card_text = _read_card_input(card_file, name, version)
    declared = _declared_artifacts(card_data, str(card_file), card_text)
    sources = _check_artifacts(artifact_paths)
    if declared is not None:
        declared.check_files(sources)
    readme_warnings = _fill_from_readme(card_data, sources) if card_from_readme else []
    branch = None if no_branch else f"register/{name}/{version}"
    warnings = _check_repo_state(reg, name, version, branch) + readme_warnings
    # Validate the whole card now, with placeholder digests, so a bad card changes nothing.
    placeholder = [Artifact(s.name, s.size, "0" * 64, "git").as_dict() for s in sources]
    probe = _complete_card(card_data, name, version, placeholder)
    problems = schemas.validate("card", probe, str(card_file), card_text)
    if problems:
        raise ValidationError(problems)
    private_key = None
    if sign_key is not None:
        from registry.signing import keys

        private_key = keys.load_private_key(sign_key, passphrase, option="--sign-key")

    version_dir = reg.version_dir(name, version)
    new_model = not reg.has_model(name)

    def restore() -> None:
        _remove_written(reg, version_dir, name if new_model else None)

    with branches.change_on_branch(reg.root, branch, restore):
        artifacts, to_dvc = _copy_in(reg, version_dir, sources, progress)
        if progress and to_dvc:  # the copy bars are full; say what the wait is for
            pushed = sum(path.stat().st_size for path in to_dvc)
            progress("push to the DVC remote", 0, pushed)
        storage.add_and_push(reg.root, to_dvc)
        if progress and to_dvc:
            progress("push to the DVC remote", pushed, pushed)
        card = Card.from_data(_complete_card(card_data, name, version, [a.as_dict() for a in artifacts]))
        yamlio.atomic_write(version_dir / cards.CARD_FILE, card.to_text())
        signed_by = None
        if private_key is not None:
            from registry.changes import sign

            # signature.json lands in the version folder, so it is part of this commit.
            signed_by = sign.sign_new_version(version_dir, card, private_key)
        paths = [reg.rel(version_dir)]
        if new_model:
            _write_model_files(reg, name, card_data)
            paths += [reg.rel(reg.model_dir(name) / MODEL_FILE), reg.rel(reg.model_dir(name) / stages.STAGES_FILE)]
            # CODEOWNERS is not edited here: its catch-all rule (admins) covers a new model
            # until `registry codeowners` adds the model's own lines in a pull request of its own.
        message = f"Register {name}@{version}\n\n{card.data['description'].strip().splitlines()[0]}\n"
        commit = git.commit_paths(reg.root, paths, message)
    if push:
        branches.push(reg.root, branch, "The version")
    return Registered(name, version, branch, commit, card, tuple(warnings), signed_by)


def _resolve_version(reg: Registry, name: str, version: str | None, bump: str | None) -> str:
    if bump and version:
        raise UsageError("give either VERSION or --bump, not both")
    if bump:
        taken = [Version.parse(v) for v in (*reg.versions(name), *_proposed_versions(reg, name))]
        base = max(taken, default=Version(0, 0, 0))
        return str(base.bump(bump))
    if not version:
        raise UsageError("missing VERSION (or use --bump major|minor|patch)")
    return check_version(version)


def _proposed_versions(reg: Registry, name: str) -> list[str]:
    """Versions claimed by open registration branches (`register/NAME/VERSION`), local, fetched
    from a remote, or on origin now: `--bump` must not pick one of them."""
    prefix = f"register/{name}/"
    refs = git.branch_refs(reg.root, prefix)
    if "origin" in git.remote_names(reg.root):
        # Offline (None): the local and fetched branches still count.
        refs += git.remote_heads(reg.root, f"refs/heads/{prefix}*") or []
    found = []
    for ref in refs:
        _, sep, version = ref.partition(f"/{prefix}")
        if sep and Version.is_valid(version):
            found.append(version)
    return found


def _read_card_input(card_file: Path, name: str, version: str) -> tuple[dict[str, Any], bytes]:
    """The input card's fields and its bytes (for locating problems)."""
    shown = str(card_file)
    if not card_file.exists():
        raise UsageError(f"--card {card_file}: no such file")
    if card_file.is_dir():
        raise UsageError(f"--card {card_file}: is a directory; give the card's YAML file")
    data = yamlio.load_file(card_file, shown)
    if not isinstance(data, dict):
        raise ValidationError.one(shown, "a card must be a mapping of fields (name: value)", 1)
    text = yamlio.read_bytes(card_file, shown)
    for field_name, expected in (("name", name), ("version", version)):
        if field_name in data and data[field_name] != expected:
            raise ValidationError.one(
                shown, f"is {data[field_name]!r} but you are registering {name}@{version}; "
                "fix the card or the command", yamlio.line_of(text, [field_name]), field_name,
            )
    return data, text


@dataclass(frozen=True)
class _Declared:
    """The `artifacts` a training job wrote into the input card: register checks path, size and
    sha256 against the files, end to end, before anything changes. `storage` is the registry's
    choice (git or DVC, by size and content), so a declared one is replaced, not compared."""

    shown: str
    text: bytes
    entries: tuple[dict[str, Any], ...]

    def problem(self, index: int, key: str, message: str) -> ValidationError:
        return ValidationError.one(self.shown, message, yamlio.line_of(self.text, ["artifacts", index, key]),
                                   f"artifacts[{index}].{key}")

    def check_files(self, sources: Sequence[_Source]) -> None:
        given = {s.name: s for s in sources}
        listed: set[str] = set()
        for index, entry in enumerate(self.entries):
            path = entry["path"]
            source = given.get(path)
            if source is None:
                raise self.problem(index, "path", f"{path!r} is not among the --artifact files "
                                   f"({', '.join(sorted(given))}); list only the files you register")
            if path in listed:
                raise self.problem(index, "path", f"{path!r} is listed twice")
            listed.add(path)
            if "size" in entry and entry["size"] != source.size:
                raise self.problem(index, "size", f"is {entry['size']} but {source.path} has {source.size} "
                                   "bytes: the file is not the one the card describes")
            if "sha256" in entry:
                digest, _ = storage.file_digest(source.path)
                if entry["sha256"] != digest:
                    raise self.problem(index, "sha256", f"is {entry['sha256']!r} but {source.path} has "
                                       f"{digest!r}: the file is not the one the card describes")
        missing = sorted(set(given) - listed)
        if missing:
            raise ValidationError.one(self.shown, f"does not list {', '.join(missing)}, given with --artifact; "
                                      "list every file or leave `artifacts` out",
                                      yamlio.line_of(self.text, ["artifacts"]), "artifacts")


def _declared_artifacts(data: dict[str, Any], shown: str, text: bytes) -> _Declared | None:
    """Take `artifacts` out of the input card; their shape is checked here, their values later."""
    if "artifacts" not in data:
        return None
    entries = data.pop("artifacts")
    declared = _Declared(shown, text, ())
    if not isinstance(entries, list):
        raise ValidationError.one(shown, "must be a list of entries with path, size, sha256, storage",
                                  yamlio.line_of(text, ["artifacts"]), "artifacts")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise declared.problem(index, "path", "each entry needs a `path` naming an --artifact file")
        unknown = sorted(set(entry) - {"path", "size", "sha256", "storage"})
        if unknown:
            raise declared.problem(index, unknown[0], "unknown key; entries have path, size, sha256, storage")
    return _Declared(shown, text, tuple(entries))


def _fill_from_readme(card_data: dict[str, Any], sources: Sequence[_Source]) -> list[str]:
    """`--card-from-readme`: the registered README.md's front matter fills what the card leaves out."""
    from registry.files import hfreadme

    readme = next((s for s in sources if s.name == hfreadme.README), None)
    if readme is None:
        raise UsageError(f"--card-from-readme: no {hfreadme.README} among the artifacts (a folder given "
                         f"with --artifact has it at its top); register the folder's {hfreadme.README} or "
                         "leave the option out")
    meta, _ = hfreadme.front_matter(readme.path, str(readme.path))
    if not meta:
        return [f"--card-from-readme: {readme.path} has no YAML front matter (--- ... ---); nothing taken from it"]
    return hfreadme.fill(card_data, meta)


def _check_artifacts(paths: Sequence[Path]) -> list[_Source]:
    """The files to register, each with its path in the version folder.

    A file goes to the version root by its own name. A folder's CONTENTS go to the version root
    by their paths relative to it, recursively (as `huggingface_hub.upload_folder` and MLflow's
    `log_artifacts` do): `--artifact ./bert` registers `bert/1_Pooling/config.json` as
    `1_Pooling/config.json`. A symlink or special file anywhere in a folder is refused.
    """
    if not paths:
        raise UsageError("give at least one --artifact FILE or FOLDER")
    sources: list[_Source] = []
    seen: dict[str, Path] = {}
    for given in paths:
        if given.is_symlink():
            target = given.resolve()
            if given.parent.resolve() not in target.parents:
                raise UsageError(
                    f"--artifact {given}: a symlink to {target}, outside its own folder; "
                    "pass the file itself"
                )
        if not given.exists():
            raise UsageError(f"--artifact {given}: no such file")
        if given.is_dir():
            found = list(_walk_folder(given))
            if not found:
                raise UsageError(f"--artifact {given}: the folder holds no files")
        elif given.is_file():
            found = [(given.name, given)]
        else:
            raise UsageError(f"--artifact {given}: not a regular file")
        for rel, path in found:
            problem = cards.artifact_path_problem(rel)
            if problem is not None:
                shown = given if path == given else path
                raise UsageError(f"--artifact {shown}: {problem}")
            if rel in seen:
                raise UsageError(f"--artifact {path}: two artifacts are named {rel!r} in the version "
                                 f"folder ({seen[rel]} and {path}); register one of them")
            seen[rel] = path
            sources.append(_Source(path, rel, path.stat().st_size))
    for rel, path in seen.items():
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            clash = seen.get("/".join(parts[:depth]))
            if clash is not None:
                raise UsageError(f"--artifact {clash}: is a file named {'/'.join(parts[:depth])!r} in the version "
                                 f"folder, where {path} needs a folder of that name; register one of them")
    return sources


def _walk_folder(folder: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """(path relative to the folder, path) of each file under folder, sorted; refuses symlinks
    and special files anywhere in it, before anything is copied."""
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path, rel = Path(entry.path), f"{prefix}{entry.name}"
            if entry.is_symlink():
                raise UsageError(f"--artifact {path}: is a symlink; a registered folder holds regular "
                                 "files only (copy the file in instead)")
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_folder(path, f"{rel}/")
            elif entry.is_file(follow_symlinks=False):
                yield rel, path
            else:
                raise UsageError(f"--artifact {path}: not a regular file or folder")


def _check_repo_state(reg: Registry, name: str, version: str, branch: str | None) -> list[str]:
    dirty = git.dirty_paths(reg.root)
    if dirty:
        raise UsageError(
            f"the registry has uncommitted changes ({', '.join(dirty[:3])}); commit or stash them first"
        )
    version_dir = reg.version_dir(name, version)
    if version_dir.exists():
        rel = reg.rel(version_dir)
        if not git.is_tracked(reg.root, rel):
            # Nothing there is tracked on this branch: files git leaves behind when switching away
            # from an unmerged registration branch (DVC-tracked weights are git-ignored).
            raise UsageError(
                f"{rel} holds files that no commit on this branch tracks: leftovers of an unmerged branch "
                f"(e.g. register/{name}/{version}, whose commits keep them), not a registered version; "
                f"clear the folder with `rm -rf {rel}` and register again"
            )
        raise UsageError(
            f"{name}@{version} already exists in the work tree; versions are immutable, register a new one"
        )
    refs = git.all_refs(reg.root)
    spec = f"models/{name}/{version}/{cards.CARD_FILE}"
    with git.CatFile(reg.root) as cat:
        found = cat.read_many([f"{ref}:{spec}" for ref in refs])
    for ref, blob in zip(refs, found, strict=True):
        if blob is not None:
            short = ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
            raise UsageError(
                f"{name}@{version} is already registered on branch {short}; register a new version"
            )
    if branch and git.rev_parse(f"refs/heads/{branch}", reg.root):
        raise UsageError(f"branch {branch} already exists; delete it or register another version")
    warnings = []
    # Also with --no-branch: a version proposed on origin's register branch is taken.
    proposed = f"register/{name}/{version}"
    if "origin" in git.remote_names(reg.root):
        on_origin = git.remote_heads(reg.root, proposed)
        if on_origin is None:
            warnings.append("could not reach origin to check for the branch there; checked locally only")
        elif on_origin:
            raise UsageError(
                f"{name}@{version} is already proposed on origin (branch {proposed}); register a new version"
            )
    return warnings


def _complete_card(data: dict[str, Any], name: str, version: str, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    complete = dict(data)
    complete["name"] = name
    complete["version"] = version
    complete.setdefault("created", dt.datetime.now(dt.UTC).date().isoformat())
    complete["artifacts"] = artifacts
    return complete


def _copy_in(
    reg: Registry, version_dir: Path, sources: list[_Source], progress: ProgressFn | None
) -> tuple[list[Artifact], list[Path]]:
    """Copy each artifact in, computing size and sha256 in the same pass; pick its storage."""
    version_dir.mkdir(parents=True)
    artifacts, to_dvc = [], []
    limit = reg.config.git_max_bytes
    for source in sources:
        dest = version_dir / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        binary = False
        with source.path.open("rb") as src, dest.open("wb") as out:
            while chunk := src.read(CHUNK):
                if size == 0 and b"\0" in chunk[:8192]:
                    binary = True
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress:
                    progress(source.name, size, source.size)
            out.flush()
            os.fsync(out.fileno())
        if not binary:
            try:
                dest.read_bytes().decode("utf-8") if size <= limit else None
            except UnicodeDecodeError:
                binary = True
        in_dvc = binary or size > limit
        if in_dvc:
            to_dvc.append(dest)
        artifacts.append(Artifact(source.name, size, digest.hexdigest(), "dvc" if in_dvc else "git"))
    return artifacts, to_dvc


def _write_model_files(reg: Registry, name: str, card_data: dict[str, Any]) -> None:
    header = yamlio.schema_header(f"../../{schemas.REPO_SCHEMA_DIR}/model.schema.json")
    creator = card_data.get("creator")
    owners = [creator] if isinstance(creator, str) and creator.startswith("@") else []
    model = {
        "description": str(card_data.get("description", "")).strip().splitlines()[0],
        "owners": owners,
        "task": card_data.get("task", ""),
        "tags": {},
    }
    yamlio.atomic_write(reg.model_dir(name) / MODEL_FILE, header + yamlio.dumps(model))
    yamlio.atomic_write(reg.model_dir(name) / stages.STAGES_FILE, stages.Stages().to_text())


def _remove_written(reg: Registry, version_dir: Path, new_model: str | None) -> None:
    """Take away what a failed registration wrote; `branches.change_on_branch` resets the
    index and the branch."""
    shutil.rmtree(reg.model_dir(new_model) if new_model else version_dir, ignore_errors=True)
    if new_model:
        # The first model made models/ too; rmdir leaves it if anything else is in it.
        with contextlib.suppress(OSError):
            reg.model_dir(new_model).parent.rmdir()
    git.restore_paths(reg.root, [codeowners.CODEOWNERS_FILE])

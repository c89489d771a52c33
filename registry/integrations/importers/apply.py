"""Turning an import plan into commits on the model's review branch, in a temporary git worktree."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from registry.errors import GitError, RegistryError, UsageError
from registry.files import cards, schemas, stages, yamlio
from registry.files.cards import Artifact
from registry.files.stages import Stages
from registry.integrations.importers.plan import (
    ModelOutcome,
    ModelPlan,
    ProgressFn,
    SourceFile,
    VersionOutcome,
    VersionPlan,
    check_card,
    promotions,
)
from registry.repo import git, storage
from registry.repo.registry import MODEL_FILE, MODELS_DIR, Registry, version_sort_key

REMOTE = "origin"


def check_push(reg: Registry, push: bool) -> None:
    """Refuse up front, before anything is downloaded, when the branches could not be pushed."""
    if push and REMOTE not in git.remote_names(reg.root):
        raise UsageError(f"the registry has no remote {REMOTE!r} to push the import branches to; "
                         f"add one (git remote add {REMOTE} URL) or leave out --push")


def apply(reg: Registry, plan: ModelPlan, *, push: bool, progress: ProgressFn | None = None) -> ModelOutcome:
    """Register the plan's new versions and set its stages on plan.branch; push it if asked."""
    if git.current_branch(reg.root) == plan.branch:
        raise UsageError(f"branch {plan.branch} is checked out in {reg.root}; switch to another branch "
                         "(e.g. git switch main) and run the import again")
    for version in plan.versions:
        check_card(version)
    base = _base_ref(reg, plan.branch)
    found = _registered(reg, plan, base)
    outcomes: dict[str, VersionOutcome] = {}
    for version in plan.versions:
        where = found.get(version.version)
        if where is None:
            continue
        ref, existing = where
        differences = _differences(existing, version.files)
        shown = _short(ref)
        if differences:
            outcomes[version.version] = VersionOutcome(
                version.version, version.label, version.source_version, "conflict", version.stage, existing,
                f"{plan.name}@{version.version} is already registered (on {shown}) with other files: "
                f"{'; '.join(differences)}; it is not overwritten (give {version.label} another version "
                "in the source, or register the new files as a new version)")
        else:
            outcomes[version.version] = VersionOutcome(
                version.version, version.label, version.source_version, "skipped", version.stage, existing,
                f"already registered on {shown} with the same files")
    conflicts = [o for o in outcomes.values() if o.status == "conflict"]
    if conflicts:
        return ModelOutcome(plan.name, plan.label, "conflict", plan.branch,
                            tuple(outcomes[v.version] if v.version in outcomes else
                                  VersionOutcome(v.version, v.label, v.source_version, "not imported", v.stage, ())
                                  for v in plan.versions),
                            notes=plan.notes,
                            error=f"{len(conflicts)} version{'s' if len(conflicts) != 1 else ''} conflict "
                                  "with what is registered; nothing was imported for this model")
    on_base = {v for v, (ref, _) in found.items() if ref == base}
    notes = list(plan.notes) + _source_tag_notes(reg, plan, base)
    for number, (ref, _) in sorted(found.items()):
        if ref != base:
            notes.append(f"{plan.name}@{number} is registered on {_short(ref)}, not on {_short(base)}; "
                         "its stage is not set on this branch")
    new = [v for v in plan.versions if v.version not in outcomes]
    current = _stages_at(reg, base, plan.name)
    steps, unreachable = promotions(current, plan, on_base | {v.version for v in new}, reg.config.transitions)
    notes += unreachable
    if not new and not _model_changes(reg, plan, base):
        return ModelOutcome(plan.name, plan.label, "up-to-date", plan.branch if _branch_exists(reg, plan.branch) else None,
                            tuple(outcomes[v.version] for v in plan.versions),
                            stages=current, notes=tuple(notes), promotions=steps)
    outcome = _commit(reg, plan, base, outcomes, new, notes, push, progress)
    return ModelOutcome(outcome.name, outcome.label, outcome.status, outcome.branch, outcome.versions,
                        outcome.stages, outcome.commits, outcome.pushed, outcome.notes, outcome.error, steps)


def _commit(reg: Registry, plan: ModelPlan, base: str, outcomes: dict[str, VersionOutcome],
            new: list[VersionPlan], notes: list[str], push: bool, progress: ProgressFn | None) -> ModelOutcome:
    from registry.changes.register import register

    old_tip = git.rev_parse(f"refs/heads/{plan.branch}", reg.root)
    commits: list[str] = []
    try:
        with _worktree(reg, plan.branch, base) as work, tempfile.TemporaryDirectory(prefix="registry-cards-") as tmp:
            created_model = not work.has_model(plan.name)
            for version in sorted(new, key=lambda v: version_sort_key(v.version)):
                card_file = Path(tmp) / f"{version.version}.card.yaml"
                card_file.write_text(yamlio.dumps(dict(version.card)))
                done = register(work, plan.name, version.version, card_file, [f.path for f in version.files],
                                no_branch=True, push=False, progress=progress)
                commits.append(done.commit)
                outcomes[version.version] = VersionOutcome(
                    version.version, version.label, version.source_version, "registered", version.stage, done.card.artifacts)
            commit = _commit_model_file(work, plan, created_model)
            if commit:
                commits.append(commit)
    except BaseException:
        _restore_branch(reg, plan.branch, old_tip)
        raise
    pushed = False
    if push:
        try:
            git.push_branch(reg.root, plan.branch, REMOTE)
        except GitError as exc:
            raise RegistryError(f"{exc}\nThe import of {plan.name} is committed on branch {plan.branch}; "
                                f"push it with `git push -u {REMOTE} {plan.branch}`") from None
        pushed = True
    return ModelOutcome(plan.name, plan.label, "imported", plan.branch,
                        tuple(outcomes[v.version] for v in plan.versions),
                        stages=_stages_at(reg, plan.branch, plan.name), commits=tuple(commits),
                        pushed=pushed, notes=tuple(notes))


def _model_changes(reg: Registry, plan: ModelPlan, base: str) -> bool:
    """Would model.yaml on base change? (Nothing new to register.)"""
    text = _read_at(reg, base, f"{MODELS_DIR}/{plan.name}/{MODEL_FILE}")
    if text is None:
        return False
    data = yamlio.loads(text, f"{MODELS_DIR}/{plan.name}/{MODEL_FILE}") or {}
    return _with_tags(data, plan) != data


def _source_tag_notes(reg: Registry, plan: ModelPlan, base: str) -> list[str]:
    """An existing model.yaml keeps its tags: say which of the source's tags it does not hold."""
    path = f"{MODELS_DIR}/{plan.name}/{MODEL_FILE}"
    text = _read_at(reg, base, path)
    if text is None or not plan.source_tags:
        return []
    held = (yamlio.loads(text, path) or {}).get("tags") or {}
    differ = sorted(k for k, v in plan.source_tags.items() if k not in held or str(held[k]) != v)
    if not differ:
        return []
    return [f"{plan.label}: model tags {', '.join(differ)} are not in {path} as they are in the source; "
            "an import writes a model's tags only when it creates the model: edit model.yaml to bring them over"]


def _with_tags(data: Mapping[str, Any], plan: ModelPlan) -> dict[str, Any]:
    updated = dict(data)
    if plan.tag_prefix is None:
        return updated
    prefix = plan.tag_prefix
    tags = {k: v for k, v in (data.get("tags") or {}).items() if not str(k).startswith(prefix)}
    tags.update(plan.model_tags)
    updated["tags"] = tags
    return updated


def _commit_model_file(work: Registry, plan: ModelPlan, created_model: bool) -> str | None:
    """model.yaml's importer-owned tags (and, for a new model, its description and task) in one
    commit; None when unchanged. Stages are never set by an import: see :func:`promotions`."""
    model_path = work.model_dir(plan.name) / MODEL_FILE
    data = yamlio.load_file(model_path, work.rel(model_path)) or {}
    updated = _with_tags(data, plan)
    if created_model and plan.source_tags:
        # The source's tags first; the importer-owned ones (under tag_prefix) win on a clash.
        updated["tags"] = {**{k: v for k, v in plan.source_tags.items()
                              if plan.tag_prefix is None or not k.startswith(plan.tag_prefix)},
                           **(updated.get("tags") or {})}
    if created_model:
        if plan.description:
            updated["description"] = plan.description.strip().splitlines()[0]
        if plan.task:
            updated["task"] = plan.task
    if updated == data:
        return None
    header = yamlio.schema_header(f"../../{schemas.REPO_SCHEMA_DIR}/model.schema.json")
    yamlio.atomic_write(model_path, header + yamlio.dumps(updated))
    return git.commit_paths(work.root, [work.rel(model_path)], f"Describe {plan.name} from {plan.label}\n\nReason: imported\n")


def _base_ref(reg: Registry, branch: str) -> str:
    """Continue the import branch (local, else the pushed one); a new branch starts at HEAD."""
    for ref in (f"refs/heads/{branch}", f"refs/remotes/{REMOTE}/{branch}"):
        if git.rev_parse(ref, reg.root):
            return ref
    if not git.rev_parse("HEAD", reg.root):
        raise UsageError("the registry has no commit yet; run `registry init` first")
    current = git.current_branch(reg.root)
    return f"refs/heads/{current}" if current else "HEAD"


def _branch_exists(reg: Registry, branch: str) -> bool:
    return git.rev_parse(f"refs/heads/{branch}", reg.root) is not None


def _short(ref: str) -> str:
    return ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")


def _read_at(reg: Registry, ref: str, path: str) -> bytes | None:
    with git.CatFile(reg.root) as cat:
        return cat.read(f"{ref}:{path}")


def _stages_at(reg: Registry, ref: str, name: str) -> Stages:
    rel = f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}"
    text = _read_at(reg, ref, rel)
    return stages.parse(text, rel) if text is not None else Stages()


def _registered(reg: Registry, plan: ModelPlan, base: str) -> dict[str, tuple[str, tuple[Artifact, ...]]]:
    """For each planned version registered on some ref: (the ref, preferring base; its artifacts)."""
    refs = [base, *(r for r in git.all_refs(reg.root) if r != base)]
    specs = [(ref, v.version) for v in plan.versions for ref in refs]
    with git.CatFile(reg.root) as cat:
        blobs = cat.read_many([f"{ref}:{MODELS_DIR}/{plan.name}/{version}/{cards.CARD_FILE}"
                               for ref, version in specs])
    found: dict[str, tuple[str, tuple[Artifact, ...]]] = {}
    for (ref, version), blob in zip(specs, blobs, strict=True):
        if blob is None or version in found:
            continue
        rel = f"{_short(ref)}:{MODELS_DIR}/{plan.name}/{version}/{cards.CARD_FILE}"
        try:
            artifacts = cards.parse(blob, rel).artifacts
        except RegistryError:
            artifacts = ()  # an unreadable card never matches: reported as a conflict
        found[version] = (ref, artifacts)
    return found


def _differences(existing: Sequence[Artifact], files: Sequence[SourceFile]) -> list[str]:
    have = {a.path: a.sha256 for a in existing}
    want = {f.name: f.sha256 for f in files}
    if not have:
        return ["its card cannot be read"]
    out = []
    for name in sorted(have.keys() | want.keys()):
        if name not in want:
            out.append(f"{name} is registered but not in the source")
        elif name not in have:
            out.append(f"{name} is in the source but not registered")
        elif have[name] != want[name]:
            out.append(f"{name} has sha256 {want[name][:12]}… in the source, {have[name][:12]}… registered")
    return out


@contextmanager
def _worktree(reg: Registry, branch: str, base: str) -> Iterator[Registry]:
    """A temporary checkout of branch (made from base when new) sharing the DVC cache and remotes."""
    holder = Path(tempfile.mkdtemp(prefix="registry-import-"))
    path = holder / "worktree"
    try:
        git.add_worktree(reg.root, path, branch, None if base == f"refs/heads/{branch}" else base)
        try:
            storage.share_cache(reg.root, path)
            yield Registry(path)
        finally:
            git.remove_worktree(reg.root, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _restore_branch(reg: Registry, branch: str, old_tip: str | None) -> None:
    """Undo a failed import: the branch goes back to where it was, or away if it is new."""
    git.set_branch(reg.root, branch, old_tip)

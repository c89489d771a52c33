"""`registry manifest`: what a serving system needs for one stage, read from one commit's tree.

Nothing is checked out: model folders, stages, cards and pointers are read from git
objects through one `git cat-file --batch` process.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from registry.errors import UsageError, ValidationError
from registry.files import schemas, stages
from registry.files.layout import CARD_FILE
from registry.files.names import MODEL_NAME_RE, Version
from registry.queries.shapes import (
    SERVABLE as SERVABLE,  # the stages a manifest is made for (serving)
)
from registry.queries.shapes import Manifest, ManifestArtifact, ManifestModel
from registry.repo import git, storage
from registry.repo.blobcache import BlobCache
from registry.repo.registry import MODELS_DIR, Registry


class NothingServed(UsageError):
    """--as-of a time before the registry's history: there is no manifest to give (REST: 404)."""


def parse_time(value: str, option: str = "--as-of") -> dt.datetime:
    """An ISO 8601 date or time (2026-11-01, 2026-11-01T12:00Z, …+02:00); no offset means UTC."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}(:?\d{2})?)?)?", value, re.ASCII):
            raise ValueError(value)
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r}: use an ISO 8601 time, e.g. 2026-11-01T12:00Z or 2026-11-01 "
                         "(midnight UTC)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def commit_as_of(reg: Registry, when: str, at: str = "HEAD") -> str:
    """The last commit of at's first-parent history that reached it at or before `when`."""
    moment = parse_time(when)
    if git.rev_parse(at, reg.root) is None:
        raise UsageError(f"--at {at}: no such commit, branch or tag in this registry")
    # Committer time: when a merge (or a direct commit) landed on the branch. "<epoch> +0000" is exact.
    found = "" if moment.timestamp() < 0 else git.last_commit_before(reg.root, at, int(moment.timestamp()))
    if not found:
        raise NothingServed(f"--as-of {when}: the registry's history starts later; nothing was served then")
    return found


def build(reg: Registry, stage: str = "production", at: str = "HEAD", names: tuple[str, ...] = (),
          as_of: str | None = None) -> Manifest:
    if stage not in SERVABLE:
        raise UsageError(f"--stage {stage}: a manifest is made for {', '.join(SERVABLE)} only")
    if not at or "\n" in at:  # one request per line to cat-file below
        raise UsageError(f"--at {at!r}: no such commit, branch or tag in this registry")
    if as_of is not None:
        at = commit_as_of(reg, as_of, at)
    models: dict[str, ManifestModel] = {}
    cache = BlobCache(reg.root, "manifest-cache", f"manifest-2:{schemas.fingerprint()}")
    with git.CatFile(reg.root) as cat:
        # The commit and the models folder through the one cat-file process: no rev-parse, no ls-tree.
        [(commit, _)] = cat.read_many_with_ids([f"{at}^{{commit}}"])
        if commit is None:
            raise UsageError(f"--at {at}: no such commit, branch or tag in this registry")
        listing = git.parse_tree(cat.read(f"{commit}:{MODELS_DIR}/") or b"")  # "/": a folder only
        model_trees = {name: sha for name, (mode, sha) in listing.items() if mode == git.TREE_MODE}
        wanted = [n for n in sorted(model_trees) if MODEL_NAME_RE.fullmatch(n) and (not names or n in names)]
        remote = storage.remote_url(cat.read(f"{commit}:{storage.DVC_CONFIG}"))
        # Trees by id, then blobs by id: no path is resolved from the root more than once.
        trees = [git.parse_tree(t or b"") for t in cat.read_many([model_trees[n] for n in wanted])]
        stage_ids = [tree.get(stages.STAGES_FILE, ("", ""))[1] for tree in trees]
        stage_blobs = cat.read_many([i for i in stage_ids if i])
        blob_of = dict(zip([i for i in stage_ids if i], stage_blobs, strict=True))
        chosen: list[tuple[str, str, float | None, dict[str, tuple[str, str]]]] = []
        for name, tree, stage_id in zip(wanted, trees, stage_ids, strict=True):
            blob = blob_of.get(stage_id) if stage_id else None
            if blob is None:
                continue
            held = stages.parse(blob, f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}")
            version, traffic = _pick(held, stage)
            if version is None:
                continue
            if version not in tree:
                raise ValidationError.one(
                    f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}",
                    f"{stage} names {version}, which is not registered; fix stages.yaml", field=stage)
            chosen.append((name, version, traffic, tree))
        version_trees = [git.parse_tree(t or b"") for t in cat.read_many([tree[v][1] for _, v, _, tree in chosen])]
        # Card cores and DVC pointers, parsed once per blob id ever.
        needed: list[str] = []
        for (_, _, _, _), vtree in zip(chosen, version_trees, strict=True):
            for entry_name, (_, sha) in vtree.items():
                if (entry_name == CARD_FILE or entry_name.endswith(".dvc")) and cache.get(sha) is None:
                    needed.append(sha)
        fresh = dict(zip(needed, cat.read_many(needed), strict=True))
        for (name, version, traffic, _), vtree in zip(chosen, version_trees, strict=True):
            folder = f"{MODELS_DIR}/{name}/{version}"
            card_entry = vtree.get(CARD_FILE)
            if card_entry is None:
                raise ValidationError.one(f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}",
                                          f"{stage} names {version}, which has no card at {folder}/card.yaml",
                                          field=stage)
            core = _cached(cache, card_entry[1], fresh, partial(_card_core, path=f"{folder}/card.yaml"))
            artifacts = []
            for artifact in core["artifacts"]:
                url = None
                if artifact["storage"] == "dvc":
                    pointer_path = f"{folder}/{artifact['path']}.dvc"
                    pointer_entry = _entry_at(cat, vtree, artifact["path"] + ".dvc")
                    if pointer_entry is None:
                        raise ValidationError.one(pointer_path, "DVC pointer is missing for an artifact the card lists")
                    if pointer_entry[1] not in fresh and cache.get(pointer_entry[1]) is None:
                        fresh[pointer_entry[1]] = cat.read(pointer_entry[1])  # a nested one: read now
                    pointer = _cached(cache, pointer_entry[1], fresh, partial(_pointer_md5, path=pointer_path))
                    url = storage.object_url(remote, pointer["md5"])
                artifacts.append(ManifestArtifact(**artifact, url=url))
            signature = f"{folder}/signature.json" if "signature.json" in vtree else None
            models[name] = ManifestModel(version, traffic, folder, tuple(artifacts), signature)
    cache.save()
    return Manifest(commit, stage, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # type: ignore[arg-type]
                    models)


def _card_core(blob: bytes, path: str) -> dict[str, Any]:
    # The whole card is validated once per blob id; what serving needs is kept.
    from registry.files import cards

    card = cards.parse(blob, path)
    return {"name": card.name, "version": card.version, "artifacts": [a.as_dict() for a in card.artifacts]}


def _pointer_md5(blob: bytes, path: str) -> dict[str, Any]:
    return {"md5": storage.parse_pointer(blob, path).md5}


def _entry_at(cat: git.CatFile, vtree: dict[str, tuple[str, str]], path: str) -> tuple[str, str] | None:
    """(mode, sha) of the file at path (maybe nested, `onnx/model.onnx.dvc`) in a version's tree."""
    *folders, name = path.split("/")
    for part in folders:
        entry = vtree.get(part)
        if entry is None or entry[0] != git.TREE_MODE:
            return None
        vtree = git.parse_tree(cat.read(entry[1]) or b"")
    entry = vtree.get(name)
    return None if entry is None or entry[0] == git.TREE_MODE else entry


def _cached(cache: BlobCache, sha: str, fresh: dict[str, bytes | None],
            parse: Callable[[bytes], dict[str, Any]]) -> dict[str, Any]:
    hit = cache.get(sha)
    if hit is None:
        hit = parse(fresh.get(sha) or b"")
        cache.put(sha, hit)
    return hit  # type: ignore[no-any-return]


def _pick(held: stages.Stages, stage: str) -> tuple[str | None, float | None]:
    if stage == "production":
        return held.production, None
    if stage == "canary":
        return (held.canary.version, held.canary.traffic) if held.canary else (None, None)
    staging = sorted(held.staging, key=Version.parse)
    return (staging[-1] if staging else None), None

"""`registry manifest`: what a serving system needs for one stage, read from one commit's tree.

Nothing is checked out: model folders, stages, cards and pointers are read from git
objects through one `git cat-file --batch` process.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from registry import cards, git, stages, storage
from registry.errors import UsageError, ValidationError
from registry.names import MODEL_NAME_RE, Version
from registry.repo import MODELS_DIR, Registry

SERVABLE = ("production", "canary", "staging")


def build(reg: Registry, stage: str = "production", at: str = "HEAD", names: tuple[str, ...] = ()) -> dict[str, Any]:
    if stage not in SERVABLE:
        raise UsageError(f"--stage {stage}: a manifest is made for {', '.join(SERVABLE)} only")
    commit = git.rev_parse(at, reg.root)
    if commit is None:
        raise UsageError(f"--at {at}: no such commit, branch or tag in this registry")
    model_dirs = [
        e.path.split("/", 1)[1]
        for e in git.ls_tree(commit, reg.root, [f"{MODELS_DIR}/"], recursive=False)
        if e.kind == "tree"
    ]
    wanted = [n for n in model_dirs if MODEL_NAME_RE.fullmatch(n) and (not names or n in names)]
    models: dict[str, Any] = {}
    with git.CatFile(reg.root) as cat:
        remote = storage.remote_url(cat.read(f"{commit}:{storage.DVC_CONFIG}"))
        blobs = cat.read_many([f"{commit}:{MODELS_DIR}/{n}/{stages.STAGES_FILE}" for n in wanted])
        chosen: list[tuple[str, str, float | None]] = []
        for name, blob in zip(wanted, blobs, strict=True):
            if blob is None:
                continue
            held = stages.parse(blob, f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}")
            version, traffic = _pick(held, stage)
            if version is not None:
                chosen.append((name, version, traffic))
        card_blobs = cat.read_many([f"{commit}:{MODELS_DIR}/{n}/{v}/{cards.CARD_FILE}" for n, v, _ in chosen])
        parsed = []
        for (name, version, traffic), blob in zip(chosen, card_blobs, strict=True):
            path = f"{MODELS_DIR}/{name}/{version}/{cards.CARD_FILE}"
            if blob is None:
                raise ValidationError.one(
                    f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}",
                    f"{stage} names {version}, which has no card at {path}; fix stages.yaml", field=stage,
                )
            parsed.append((name, version, traffic, cards.parse(blob, path)))
        folder = {name: f"{MODELS_DIR}/{name}/{version}" for name, version, _, _ in parsed}
        pointer_specs = [
            f"{commit}:{folder[name]}/{a.path}.dvc"
            for name, _, _, card in parsed for a in card.artifacts if a.storage == "dvc"
        ]
        pointers = iter(cat.read_many(pointer_specs))
        signatures = cat.read_many([f"{commit}:{folder[name]}/signature.json" for name, _, _, _ in parsed])
        for (name, version, traffic, card), signature in zip(parsed, signatures, strict=True):
            artifacts = []
            for artifact in card.artifacts:
                entry = artifact.as_dict()
                entry["url"] = None
                if artifact.storage == "dvc":
                    pointer_path = f"{folder[name]}/{artifact.path}.dvc"
                    blob = next(pointers)
                    if blob is None:
                        raise ValidationError.one(pointer_path, "DVC pointer is missing for an artifact the card lists")
                    entry["url"] = storage.object_url(remote, storage.parse_pointer(blob, pointer_path).md5)
                artifacts.append(entry)
            model: dict[str, Any] = {"version": version}
            if traffic is not None:
                model["traffic"] = traffic
            model["path"] = folder[name]
            model["artifacts"] = artifacts
            model["signature"] = f"{folder[name]}/signature.json" if signature is not None else None
            models[name] = model
    return {
        "registry_commit": commit,
        "stage": stage,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "models": models,
    }


def _pick(held: stages.Stages, stage: str) -> tuple[str | None, float | None]:
    if stage == "production":
        return held.production, None
    if stage == "canary":
        return (held.canary.version, held.canary.traffic) if held.canary else (None, None)
    staging = sorted(held.staging, key=Version.parse)
    return (staging[-1] if staging else None), None

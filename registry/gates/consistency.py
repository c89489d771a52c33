"""consistency gate: card ↔ folder ↔ DVC pointer ↔ bytes (size and sha256); stages name registered versions."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from registry import cards, stages, storage
from registry.errors import RegistryError, ValidationError
from registry.gates import GateResult
from registry.repo import MODELS_DIR
from registry.validate import VERSION_FILES

if TYPE_CHECKING:
    from registry.check import CheckContext


def check_version(ctx: CheckContext, model: str, version: str) -> list[str]:
    """Problems of one version folder at head, each naming the file."""
    folder = f"{MODELS_DIR}/{model}/{version}"
    card_path = f"{folder}/{cards.CARD_FILE}"
    text = ctx.read(ctx.head, card_path)
    if text is None:
        return [f"{folder}: no card.yaml"]
    try:
        card = cards.parse(text, card_path)
    except ValidationError:
        return []  # the schema gate reports it, with lines
    problems = [str(p) for p in cards.folder_problems(card, model, version, card_path, text)]
    problems += [str(p) for p in cards.duplicate_artifact_problems(card, card_path, text)]
    entries = {e.path.rsplit("/", 1)[1]: e for e in ctx.files_at(ctx.head, folder)}
    listed = set(VERSION_FILES)
    local = None
    for artifact in card.artifacts:
        listed.add(artifact.path)
        file_path = f"{folder}/{artifact.path}"
        if artifact.storage == "git":
            entry = entries.get(artifact.path)
            if entry is None:
                problems.append(f"{file_path}: listed in the card as stored in git, but not in the commit")
                continue
            data = ctx.cat.read(entry.sha) or b""
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != artifact.size or digest != artifact.sha256:
                problems.append(f"{file_path}: is {len(data)} bytes with sha256 {digest}; "
                                f"the card says {artifact.size} bytes, {artifact.sha256}")
            continue
        pointer_path = file_path + ".dvc"
        listed.add(artifact.path + ".dvc")
        pointer_text = ctx.read(ctx.head, pointer_path)
        if pointer_text is None:
            problems.append(f"{pointer_path}: missing; the card stores {artifact.path} in DVC")
            continue
        try:
            pointer = storage.parse_pointer(pointer_text, pointer_path)
        except ValidationError as exc:
            problems += [str(p) for p in exc.problems]
            continue
        if pointer.size is not None and pointer.size != artifact.size:
            problems.append(f"{pointer_path}: size {pointer.size} disagrees with the card's {artifact.size}")
        if local is None:
            try:
                local = ctx.version_folder(model, version)
            except RegistryError as exc:
                problems.append(f"{file_path}: cannot fetch the bytes to verify them: {exc}")
                continue
        blob = local / artifact.path
        if not blob.is_file():
            problems.append(f"{file_path}: not available from DVC to verify")
            continue
        digest, size = storage.file_digest(blob)
        if size != artifact.size or digest != artifact.sha256:
            problems.append(f"{file_path}: is {size} bytes with sha256 {digest}; "
                            f"the card says {artifact.size} bytes, {artifact.sha256}")
    for extra in sorted(set(entries) - listed):
        problems.append(f"{folder}/{extra}: not listed in the card's artifacts")
    return problems


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    for model, version in ctx.new_versions:
        problems = check_version(ctx, model, version)
        if problems:
            results += [GateResult("consistency", model, version, "fail", p, p.split(":", 1)[0]) for p in problems]
        else:
            results.append(GateResult("consistency", model, version, "pass",
                                      "card, folder, pointers and bytes agree (size and sha256)"))
    for model in ctx.models:
        path = f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}"
        if not any(c.path == path for c in ctx.changes):
            continue
        held = ctx.stages_at(ctx.head, model)
        for version, stage in held.assignments():
            if ctx.read(ctx.head, f"{MODELS_DIR}/{model}/{version}/{cards.CARD_FILE}") is None:
                results.append(GateResult("consistency", model, version, "fail",
                                          f"{path}: {stage} names {model}@{version}, which is not registered", path))
    if not results:
        results.append(GateResult("consistency", None, None, "skip", "no version folder or stages file changed"))
    return results

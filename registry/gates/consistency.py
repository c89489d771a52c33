"""consistency gate: the one consistency rule (registry.queries.consistency) on what the PR changes, at head.

Every file the PR adds or changes under models/ must be a registry file or an artifact its
version's card lists (git tree modes: no symlinks, no submodules); each new version's card,
folder, DVC pointers and bytes (size and sha256) agree; a changed stages.yaml names only
registered versions. `registry validate` applies the same rule to the work tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from registry.errors import Problem, ValidationError
from registry.files import stages
from registry.files.cards import Artifact
from registry.gates.result import GateResult
from registry.queries import consistency
from registry.queries.consistency import CardFacts
from registry.repo import git, storage
from registry.repo.registry import MODELS_DIR

if TYPE_CHECKING:
    from registry.gates.run import CheckContext

class HeadTree:
    """The PR's head commit, as the consistency rule reads it (DVC bytes fetched as needed)."""

    require_bytes = True

    def __init__(self, ctx: CheckContext, paths: list[str]) -> None:
        self.ctx = ctx
        entries = git.ls_tree(ctx.head, ctx.reg.root, paths) if paths else []
        self._modes = {e.path: e.mode for e in entries}
        self._shas = {e.path: e.sha for e in entries}
        self._cards: dict[str, CardFacts | None] = {}

    def files(self) -> Mapping[str, str]:
        return self._modes

    def tracked(self, path: str) -> bool:
        return path in self._modes

    def read(self, path: str) -> bytes | None:
        if self._modes.get(path) not in consistency.REGULAR:
            return None
        return self.ctx.cat.read(self._shas[path])

    def card(self, path: str) -> CardFacts | None:
        if path not in self._cards:
            text = self.read(path)
            try:
                card = self.ctx.parse_card(text, path) if text is not None else None
            except ValidationError:
                card = None
            self._cards[path] = CardFacts(card.name, card.version, card.artifacts) if card else None
        return self._cards[path]

    def pointer_size(self, path: str) -> tuple[bool, int | None]:
        text = self.read(path)
        try:
            return (True, storage.parse_pointer(text, path).size) if text is not None else (False, None)
        except ValidationError:
            return False, None

    def assignments(self, model: str) -> list[tuple[str, str]] | None:
        path = f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}"
        text = self.read(path)
        if text is None:
            return None
        try:
            return stages.parse(text, path).assignments()
        except ValidationError:
            return None  # the schema gate reports it

    def dvc_digest(self, model: str, version: str, artifact: Artifact) -> tuple[str, int] | None:
        blob = self.ctx.version_folder(model, version) / artifact.path
        return storage.file_digest(blob) if blob.is_file() and not blob.is_symlink() else None


def run(ctx: CheckContext) -> list[GateResult]:
    changed = [c.path for c in ctx.changes if c.status != "D" and c.path.startswith(f"{MODELS_DIR}/")]
    models = sorted({p.split("/")[1] for p in changed if p.count("/") >= 2})
    tree = HeadTree(ctx, [f"{MODELS_DIR}/{m}/" for m in models] + [p for p in changed if p.count("/") == 1])
    folders = consistency.folders_of(tree.files())
    problems: list[Problem] = consistency.path_problems(tree, changed, folders)
    for model, version in ctx.new_versions:
        problems += consistency.version_problems(tree, model, version, folders)
    for model in sorted({m for m, _ in ctx.new_versions}):
        problems += consistency.model_problems(tree, model)
    staged = [m for m in models if any(c.path == f"{MODELS_DIR}/{m}/{stages.STAGES_FILE}" for c in ctx.changes)]
    for model in staged:
        problems += consistency.stages_problems(tree, model)
    results = []
    for problem in dict.fromkeys(problems):
        model_name, version_name = consistency.version_of(problem.path)
        results.append(GateResult("consistency", model_name, version_name, "fail", str(problem), problem.path,
                                  problem.line))
    failed = {(r.model, r.version) for r in results}
    for model, version in ctx.new_versions:
        if (model, version) not in failed:
            results.append(GateResult("consistency", model, version, "pass",
                                      "card, folder, pointers and bytes agree (size and sha256)"))
    for model in staged:
        if not any(r.model == model for r in results if r.status == "fail"):
            path = f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}"
            results.append(GateResult("consistency", model, None, "pass",
                                      f"{path} names only registered versions", path))
    if not results:
        results.append(GateResult("consistency", None, None, "skip", "no version folder or stages file changed"))
    return results

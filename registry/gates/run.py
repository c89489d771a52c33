"""`registry check`: the pull-request gates, on what changed between base and head.

Diff-aware: the models a PR touches are found from one `git diff` between the
merge base and head, and only those are checked. Stage changes are read as the
difference between base's current stages.yaml and head's, so a PR made from an
older main that would undo a promotion merged since then fails and says to rebase.
Policy (thresholds, trusted keys, lifecycle) comes from base: a PR cannot relax the
rules it is checked against.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

from registry.errors import Problem, UsageError, ValidationError
from registry.files import cards, config, schemas, stages, yamlio
from registry.files.config import RegistryConfig
from registry.files.names import MODEL_NAME_RE, Version
from registry.gates import summary
from registry.gates.result import NOT_AVAILABLE, GateResult
from registry.queries import consistency, validate
from registry.repo import git, tree
from registry.repo.blobcache import BlobCache
from registry.repo.registry import MODEL_FILE, MODELS_DIR, Registry

# Files that passed the schema check, by blob id, under $GIT_DIR/registry/ (bounded: it must not grow).
CHECK_CACHE = "check-cache"
CHECK_CACHE_LIMIT = 2048

T = TypeVar("T")

GATE_ORDER = ("schema", "consistency", "immutability", "lifecycle", "format", "scan", "signature",
              "metrics", "smoke", "latency", "approval")


@dataclass(frozen=True)
class StageChange:
    model: str
    version: str
    source: str
    target: str
    traffic: float | None = None


@dataclass(frozen=True)
class Change:
    """One changed path between the merge base and head: git's status letter and the path."""

    status: str
    path: str


@dataclass
class CheckContext:
    reg: Registry
    base: str
    head: str
    merge_base: str
    changes: list[Change]
    results: list[GateResult] = field(default_factory=list)
    # Metrics the metrics gate recomputed, per (model, version): the summary says which are measured.
    recomputed: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    _reader: tree.Reader | None = None
    _valid: BlobCache | None = None  # files known to pass the schema check
    _tmp: Path | None = None
    _folders: dict[tuple[str, str], Path] = field(default_factory=dict)
    _parsed: dict[str, Any] = field(default_factory=dict)  # "kind:blob id" -> what it parses to

    # -- reading trees: everything through one reader, only what the diff touches ---------

    @property
    def cat(self) -> tree.Reader:
        """The one reader (a `git cat-file --batch`): objects by id or ``rev:path``, tree listings."""
        if self._reader is None:
            self._reader = tree.Reader(self.reg.root)
        return self._reader

    def read(self, rev: str, path: str) -> bytes | None:
        return self.cat.at(rev).read(path)

    def schema_problems(self, kind: str, text: bytes, path: str) -> list[Problem]:
        """The schema check of `registry validate` on one file (validate.check_file), done once per
        content: a file that passed is remembered by blob id, so checking it again costs nothing."""
        blob = git.blob_id(text)
        if self._known_valid(kind, blob):
            return []
        problems = validate.check_file(kind, text, path).problems
        if not problems:
            self._remember_valid(kind, blob)
        return problems

    def _known_valid(self, kind: str, blob: str) -> bool:
        if self._valid is None:
            self._valid = BlobCache(self.reg.root, CHECK_CACHE, schemas.fingerprint(), limit=CHECK_CACHE_LIMIT)
        return bool(self._valid.get(f"{kind}:{blob}"))

    def _remember_valid(self, kind: str, blob: str) -> None:
        if self._known_valid(kind, blob):
            return
        assert self._valid is not None
        self._valid.put(f"{kind}:{blob}", True)

    def differing(self, pathspec: str) -> list[str]:
        """Paths matching a git pathspec whose content differs between base and head."""
        return git.changed_paths(self.base, self.head, self.reg.root, [pathspec])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._valid is not None:
            self._valid.save()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    @cached_property
    def config(self) -> config.RegistryConfig:
        text = self.read(self.base, config.CONFIG_FILE)
        if text is None:
            text = self.read(self.head, config.CONFIG_FILE) or b"{}"
        return self.parse_config(text)

    def parse_config(self, text: bytes) -> RegistryConfig:
        """config.parse of a registry.yaml, its schema check done once per content."""
        return self._parse_once("registry", text, config.CONFIG_FILE, config.parse, RegistryConfig.from_data)

    def stages_at(self, rev: str, model: str) -> stages.Stages:
        text = self.read(rev, f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}")
        if text is None:
            return stages.Stages()
        try:
            return stages.parse(text, f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}")
        except ValidationError:
            return stages.Stages()  # the schema gate reports it

    def card_at(self, rev: str, model: str, version: str) -> cards.Card | None:
        path = f"{MODELS_DIR}/{model}/{version}/{cards.CARD_FILE}"
        text = self.read(rev, path)
        if text is None:
            return None
        try:
            return self.parse_card(text, path)
        except ValidationError:
            return None

    def model_data(self, rev: str, model: str) -> dict[str, Any] | None:
        """The model's model.yaml at rev, validated (config.model_data; None when there is none);
        a ValidationError when it does not validate."""
        path = f"{MODELS_DIR}/{model}/{MODEL_FILE}"
        text = self.read(rev, path)
        if text is None:
            return None
        return dict(self._parse_once("model", text, path, config.model_data, lambda data: dict(data or {})))

    def parse_card(self, text: bytes, path: str) -> cards.Card:
        """cards.parse, once per content: a card known to pass the schema check is not checked again."""
        return self._parse_once("card", text, path, cards.parse, cards.Card.from_data)

    def _parse_once(self, kind: str, text: bytes, path: str, parse: Callable[[bytes, str], T],
                    build: Callable[[Any], T]) -> T:
        """parse(text, path) (YAML, then the schema, then build), once per content; where the
        file is known to pass the schema (validate.check_file), only YAML and build."""
        blob = git.blob_id(text)
        key = f"{kind}:{blob}"
        if key not in self._parsed:
            if self._known_valid(kind, blob):
                self._parsed[key] = build(yamlio.loads(text, path))
            else:
                self._parsed[key] = parse(text, path)  # a ValidationError is not remembered
                self._remember_valid(kind, blob)
        return cast(T, self._parsed[key])

    def files_at(self, rev: str, folder: str, *, recursive: bool = True) -> list[git.TreeEntry]:
        return self.cat.at(rev).ls(folder, recursive=recursive)

    # -- what changed --------------------------------------------------------------------

    @cached_property
    def models(self) -> list[str]:
        names = set()
        for change in self.changes:
            parts = change.path.split("/")
            if parts[0] == MODELS_DIR and len(parts) > 2:
                names.add(parts[1])
        return sorted(names)

    @cached_property
    def new_versions(self) -> list[tuple[str, str]]:
        """Versions whose card the PR adds."""
        found = []
        for change in self.changes:
            parts = change.path.split("/")
            if (change.status == "A" and len(parts) == 4 and parts[0] == MODELS_DIR
                    and parts[3] == cards.CARD_FILE and MODEL_NAME_RE.fullmatch(parts[1])
                    and Version.is_valid(parts[2])):
                found.append((parts[1], parts[2]))
        return sorted(found)

    @cached_property
    def stage_changes(self) -> list[StageChange]:
        """Each version whose stage differs between base's stages.yaml and head's."""
        result = []
        for model in self.models:
            path = f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}"
            if not any(c.path == path for c in self.changes) and \
                    self.read(self.base, path) == self.read(self.head, path):
                continue
            before, after = self.stages_at(self.base, model), self.stages_at(self.head, model)
            old = dict(before.assignments())
            new = dict(after.assignments())
            for version in sorted(set(old) | set(new), key=_version_key):
                source, target = old.get(version, "development"), new.get(version, "development")
                if source != target:
                    traffic = after.canary.traffic if target == "canary" and after.canary else None
                    result.append(StageChange(model, version, source, target, traffic))
        return result

    @cached_property
    def signed_versions(self) -> list[tuple[str, str]]:
        """Versions whose signature.json the PR adds or replaces (signing after review)."""
        found = set()
        for change in self.changes:
            parts = change.path.split("/")
            if (change.status in ("A", "M") and len(parts) == 4 and parts[0] == MODELS_DIR
                    and parts[3] == "signature.json" and Version.is_valid(parts[2])):
                found.add((parts[1], parts[2]))
        return sorted(found)

    def checked_versions(self) -> list[tuple[str, str, str | None]]:
        """(model, version, target stage or None for a registration) the model gates look at."""
        seen: dict[tuple[str, str], str | None] = {v: None for v in self.new_versions}
        for model, version in self.signed_versions:
            stage = self.stages_at(self.head, model).stage_of(version)
            seen.setdefault((model, version), stage if stage in ("staging", "canary", "production") else None)
        for change in self.stage_changes:
            if change.target in ("staging", "canary", "production"):
                seen[(change.model, change.version)] = change.target
        return [(m, v, t) for (m, v), t in sorted(seen.items())]

    # -- files of a version, for gates that read bytes -----------------------------------

    def version_folder(self, model: str, version: str) -> Path:
        """The version's files at head on disk: the work tree when it is head, else a copy."""
        key = (model, version)
        if key in self._folders:
            return self._folders[key]
        rel = f"{MODELS_DIR}/{model}/{version}"
        work = self.reg.root / rel
        entries = self.files_at(self.head, rel)
        if git.rev_parse("HEAD", self.reg.root) == self.head and work.is_dir() and \
                all(e.mode in consistency.REGULAR for e in entries) and \
                not any(p.startswith(rel + "/") for p in git.dirty_paths(self.reg.root)):
            self._folders[key] = work
            return work
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="registry-check-"))
        target = self._tmp / model / version
        if target.exists():  # an earlier gate's attempt that failed (a fetch): start again
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for entry in entries:
            if entry.mode not in consistency.REGULAR:
                continue  # a symlink or submodule is never followed (the consistency gate fails it)
            data = self.cat.read(entry.sha)
            if data is not None:
                local = target / entry.path[len(rel) + 1:]
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
        card = self.card_at(self.head, model, version)
        if card is not None:
            from registry.repo import storage

            for artifact in card.artifacts:
                if artifact.storage == "dvc" and not (target / artifact.path).exists():
                    (target / artifact.path).parent.mkdir(parents=True, exist_ok=True)
                    local = work / artifact.path
                    # Never through a symlink (a committed `onnx -> /etc` folder, now that paths nest).
                    if local.is_file() and local.resolve() == work.resolve() / artifact.path and \
                            local.stat().st_size == artifact.size:
                        shutil.copyfile(local, target / artifact.path)
                    else:
                        storage.fetch_at(self.reg.root, f"{rel}/{artifact.path}", self.head, target / artifact.path)
        self._folders[key] = target
        return target

    def _statuses(self, gate: str, model: str, version: str) -> list[str]:
        return [r.status for r in self.results if r.gate == gate and r.model == model and r.version == version]

    def passed(self, gate: str, model: str, version: str) -> bool:
        """Whether an earlier gate ran on this version and passed: a recorded "pass" and nothing else.

        No result, or a skip, is not a pass.
        """
        statuses = self._statuses(gate, model, version)
        return bool(statuses) and all(s == "pass" for s in statuses)

    def failed(self, gate: str, model: str, version: str) -> bool:
        """Whether an earlier gate recorded a failure for this version."""
        return "fail" in self._statuses(gate, model, version)


def _version_key(text: str) -> tuple[int, Any]:
    return (0, Version.parse(text)) if Version.is_valid(text) else (1, text)


@dataclass(frozen=True)
class Report:
    base: str
    head: str
    results: tuple[GateResult, ...]
    stage_diff: str
    card_diff: str
    changes: tuple[summary.ModelChange, ...] = ()

    @property
    def passed(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    @property
    def unfetched(self) -> bool:
        """Some gate failed because an artifact's bytes are not here (`registry fetch` first)."""
        return any(r.status == "fail" and f": {NOT_AVAILABLE}" in r.message for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "base": self.base, "head": self.head,
                "gates": [r.as_json() for r in self.results],
                "changes": [summary.as_json(c) for c in self.changes]}


def with_prerequisites(selected: tuple[str, ...]) -> tuple[str, ...]:
    """The selected gates and, transitively, every gate they declare in REQUIRES, in GATE_ORDER.

    `--gate smoke` cannot run a model that the scan gate has not looked at.
    """
    from registry.gates import requires

    wanted: set[str] = set()
    pending = list(selected)
    while pending:
        gate = pending.pop()
        if gate not in wanted:
            wanted.add(gate)
            pending.extend(requires(gate))
    return tuple(g for g in GATE_ORDER if g in wanted)


def context(reg: Registry, base: str, head: str = "HEAD") -> CheckContext:
    """What a check of the change from base to head looks at (`check`, and `fetch` for HEAD)."""
    base_sha = git.rev_parse(base, reg.root)
    if base_sha is None:
        raise UsageError(f"--base {base}: no such commit, branch or tag (fetch it first, e.g. git fetch origin)")
    head_sha = git.rev_parse(head, reg.root)
    if head_sha is None:
        raise UsageError("HEAD: the registry has no commit yet" if head == "HEAD"
                         else f"--head {head}: no such commit, branch or tag")
    merge_base, changed = git.diff_names(reg.root, base_sha, head_sha)
    return CheckContext(reg, base_sha, head_sha, merge_base, [Change(status, path) for status, path in changed])


def run(reg: Registry, base: str, head: str = "HEAD", gates: tuple[str, ...] = GATE_ORDER) -> Report:
    """Run the gates (and their prerequisites, always) on what changed between base and head."""
    gates = with_prerequisites(gates)
    ctx = context(reg, base, head)
    base_sha, head_sha, merge_base = ctx.base, ctx.head, ctx.merge_base
    from registry.gates import load

    try:
        for name in gates:
            ctx.results.extend(load(name)(ctx))
        stage_diff = git.diff_text(reg.root, base_sha, head_sha, f"{MODELS_DIR}/*/{stages.STAGES_FILE}")
        card_diff = git.diff_text(reg.root, merge_base, head_sha, f"{MODELS_DIR}/*/*/{cards.CARD_FILE}")
        described = summary.describe(ctx)
    finally:
        ctx.close()
    return Report(base_sha, head_sha, tuple(ctx.results), stage_diff, card_diff, described)


MAX_DIFF_LINE = 300
STATUS_ICON = {"pass": "✅", "fail": "❌", "skip": "⏭️"}


def markdown(report: Report) -> str:
    """The summary a reviewer reads in ten seconds ($GITHUB_STEP_SUMMARY)."""
    verdict = "✅ All gates passed" if report.passed else "❌ Gates failed"
    failed = [r for r in report.results if r.status == "fail"]
    lines = [f"## registry check: {verdict}", "",
             f"`{report.base[:8]}` → `{report.head[:8]}`: "
             f"{sum(r.status == 'pass' for r in report.results)} passed, {len(failed)} failed, "
             f"{sum(r.status == 'skip' for r in report.results)} skipped", ""]
    lines += ["| gate | model | status | details |", "|---|---|---|---|"]
    ordered = sorted(report.results, key=lambda r: (r.status != "fail", GATE_ORDER.index(r.gate) if r.gate in GATE_ORDER else 99))
    for r in ordered:
        target = f"{r.model}@{r.version}" if r.model and r.version else (r.model or "")
        lines.append(f"| {r.gate} | {summary.cell(target)} | {STATUS_ICON[r.status]} {r.status} | "
                     f"{summary.cell(r.message)} |")
    lines += summary.render(report.changes)
    if report.stage_diff.strip():
        lines += ["", "### Stage changes", "", *summary.fence(_diff_body(report.stage_diff), "diff")]
    if report.card_diff.strip():
        lines += ["", "<details><summary>Card changes</summary>", "",
                  *summary.fence(_diff_body(report.card_diff), "diff"), "", "</details>"]
    return "\n".join(lines) + "\n"


def _diff_body(diff: str) -> str:
    keep = []
    for line in diff.splitlines():
        if line.startswith(("diff --git", "index ", "new file mode", "deleted file mode")):
            continue
        if line.startswith("+++ ") or line.startswith("--- "):
            if line.startswith("+++ "):
                keep.append(f"# {line[6:] if line.startswith('+++ b/') else line[4:]}")
            continue
        if line.startswith("@@"):
            continue
        if line.startswith("+# yaml-language-server") or line.startswith("-# yaml-language-server"):
            continue
        if len(line) > MAX_DIFF_LINE:  # an input_example or a long description: the start says enough
            line = f"{line[:MAX_DIFF_LINE]} … ({len(line) - MAX_DIFF_LINE} more characters)"
        keep.append(line)
    return "\n".join(keep)


def write_outputs(report: Report, json_file: Path | None, summary_file: Path | None) -> None:
    import json

    if json_file is not None:
        yamlio.atomic_write(json_file, json.dumps(report.as_json(), indent=2) + "\n")
    if summary_file is not None:
        # $GITHUB_STEP_SUMMARY is appended to, as GitHub documents.
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(markdown(report))

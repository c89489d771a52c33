"""`registry verify-history`: every past stage change, re-checked against the policy of its day.

Main's first-parent history is walked once (the audit log's one `git log` stream). Each
commit that changed a stages.yaml or a merged version's files is checked as the pull
request gates would have checked it against its parent: base = the parent commit, so the
policy (transitions, require_signature, trusted keys, approvals) is the one in force
then, never today's and never the commit's own. The lifecycle, signature and
immutability decisions are the gates' own code, run on that (parent, commit) pair.
Approvals are checked against the forge's review records (git notes) where they exist;
a commit with neither a note nor a pull request is a direct push.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from registry.errors import UsageError, ValidationError
from registry.files import stages
from registry.gates.run import Change, CheckContext
from registry.queries import audit
from registry.repo import git
from registry.repo.registry import MODELS_DIR, Registry

HISTORY_GATES = ("immutability", "lifecycle", "signature")


@dataclass(frozen=True)
class Violation:
    commit: str
    pr: int | None
    model: str
    version: str
    rule: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "pr": self.pr, "model": self.model, "version": self.version,
                "rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Verification:
    violations: tuple[Violation, ...]
    checked: int  # stage changes checked
    commits: int  # commits that changed stages or merged versions
    unrecorded: int  # commits whose approvals could not be checked (no note, not a direct push)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "commits": self.commits, "unrecorded": self.unrecorded,
                "violations": [v.as_json() for v in self.violations]}


def _selected(reg: Registry, since: str | None, ref: str) -> tuple[str | None, set[str] | None]:
    """(earliest timestamp, or the commits after a REF), from --since."""
    if since is None:
        return None, None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", since, re.ASCII):
        from registry.queries.manifest import parse_time

        return parse_time(since, "--since").isoformat(), None
    base = git.rev_parse(since, reg.root)
    if base is None:
        raise UsageError(f"--since {since!r}: no such commit, branch or tag, and not a date (YYYY-MM-DD)")
    return None, git.commits_between(reg.root, base, ref)


def _touches(commit: audit._Commit) -> bool:
    for _, _, status, path in commit.changes:
        parts = path.split("/")
        if parts[0] == MODELS_DIR and (path.endswith(f"/{stages.STAGES_FILE}") or (len(parts) > 3 and status != "A")):
            return True
    return False


def verify(reg: Registry, since: str | None = None, ref: str = "HEAD") -> Verification:
    if git.rev_parse(ref, reg.root) is None:
        raise UsageError(f"{ref}: no such commit, branch or tag")
    earliest, after = _selected(reg, since, ref)
    from registry.repo import commitgraph

    commitgraph.ensure(reg.root, ref)
    commits = [c for c in audit._stream_commits(reg, [f"{MODELS_DIR}/"], ref)
               if _touches(c) and (after is None or c.sha in after)]
    if earliest is not None:
        import datetime as dt

        commits = [c for c in commits if dt.datetime.fromisoformat(c.timestamp) >= dt.datetime.fromisoformat(earliest)]
    violations: list[Violation] = []
    checked = unrecorded = 0
    with git.CatFile(reg.root) as cat:
        notes = audit.read_notes(reg, cat, [c.sha for c in commits])
        for commit in commits:
            found, moves, unchecked = _verify_commit(reg, commit, notes.get(commit.sha), cat)
            violations += found
            checked += moves
            unrecorded += unchecked
    return Verification(tuple(violations), checked, len(commits), unrecorded)


def _verify_commit(reg: Registry, commit: audit._Commit, note: dict[str, Any] | None,
                   cat: git.CatFile) -> tuple[list[Violation], int, int]:
    parent = commit.parents[0] if commit.parents else git.EMPTY_TREE
    pr = note["pr"] if note is not None and note.get("pr") is not None else audit.pr_number(commit.message)
    changes = [Change(status, path) for _, _, status, path in commit.changes]
    ctx = CheckContext(reg, parent, commit.sha, parent, changes)
    found: list[Violation] = []

    def violation(model: str | None, version: str | None, rule: str, message: str) -> None:
        found.append(Violation(commit.sha, pr, model or "", version or "", rule, message))

    try:
        try:
            ctx.config  # noqa: B018 (the policy in force: parsed here, so a broken one is one violation)
        except ValidationError as exc:
            violation(None, None, "policy", f"registry.yaml at the parent commit is invalid: {exc}")
            return found, len(ctx.stage_changes), 0
        from registry.gates import load

        for gate in HISTORY_GATES:
            ctx.results.extend(load(gate)(ctx))
        for result in ctx.results:
            if result.status == "fail":
                violation(result.model, result.version, result.gate, result.message)
        for change in ctx.stage_changes:
            if change.target != "development" and \
                    cat.read(f"{commit.sha}:{MODELS_DIR}/{change.model}/{change.version}/card.yaml") is None:
                violation(change.model, change.version, "registered",
                          f"{change.target} names {change.version}, which is not registered (no card)")
        unchecked = _approvals(ctx, commit, note, cat, violation)
    finally:
        ctx.close()
    return found, len(ctx.stage_changes), unchecked


def _approvals(ctx: CheckContext, commit: audit._Commit, note: dict[str, Any] | None, cat: git.CatFile,
               violation: Any) -> int:
    """Approvals for the strictest stage this commit moved a version into; 1 if they could not be checked."""
    needed = [(ctx.config.approvals(c.target), c) for c in ctx.stage_changes]
    needed = [(policy, c) for policy, c in needed if policy.min > 0]
    if not needed:
        return 0
    policy, change = max(needed, key=lambda pair: (pair[0].min, pair[0].no_self_approval))
    no_self = any(p.no_self_approval for p, _ in needed)
    reviews = f"{policy.min} approving review{'s' if policy.min != 1 else ''}"
    where = f"{change.target} needs {reviews}" + (" by someone other than the author" if no_self else "")
    branch_author = commit.author
    if len(commit.parents) > 1:
        raw = cat.read(commit.parents[1])
        if raw is not None:
            branch_author = audit._parse_commit_object(raw)[0]
    approval = audit.approval_of(commit.author, commit.parents, branch_author, note)
    if note is not None:
        count = (approval.reviews or 0) + (0 if no_self else approval.self_reviews)
        if count < policy.min:
            if approval.self_approved and no_self:
                violation(change.model, change.version, "self-approval",
                          f"approved only by its author (@{note['author']}); {where}")
            else:
                merged = f"merged by @{note['merged_by']} " if note.get("merged_by") else ""
                violation(change.model, change.version, "approvals",
                          f"{merged}with {count} approving review{'s' if count != 1 else ''}; {where}")
        return 0
    if len(commit.parents) == 1 and audit.pr_number(commit.message) is None:
        violation(change.model, change.version, "direct-push",
                  f"pushed to the branch without a pull request or review record; {where}")
        return 0
    if len(commit.parents) > 1 and approval.source == "none" and no_self:
        violation(change.model, change.version, "self-merge",
                  f"merged by its own author with no review record; {where}")
        return 0
    return 1

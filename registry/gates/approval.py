"""approval gate: who must approve this PR (from CODEOWNERS), and CODEOWNERS is up to date.

Approval itself is enforced by GitHub: branch protection with "require review from
code owners" plus the generated CODEOWNERS, read (as GitHub does) from the base branch.
This gate tells the reviewer who is needed and how many approvals the policy asks for,
and makes sure CODEOWNERS says what registry.yaml roles and model owners say. A new
model needs no CODEOWNERS edit: the catch-all rule (admins) covers it until
`registry codeowners` adds its own lines, in a pull request of its own.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from registry.errors import ValidationError
from registry.files import codeowners, config, yamlio
from registry.gates.result import GateResult
from registry.repo.registry import MODEL_FILE, MODELS_DIR

if TYPE_CHECKING:
    from registry.gates.run import CheckContext

NO_OWNERS = ("warning: no code owners are set, so nobody is required to approve; set roles.admin in "
             "registry.yaml (e.g. admin: ['@org/ml-admins']) and owners in each model.yaml, run "
             "`registry codeowners`, and turn on \"require review from code owners\" in branch protection")


def owners_for(rules: list[tuple[str, list[str]]], path: str) -> list[str]:
    """The owners of path under CODEOWNERS semantics: the last matching rule wins."""
    found: list[str] = []
    for pattern, owners in rules:
        if _matches(pattern, path):
            found = owners
    return found


def _matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    anchored = pattern.startswith("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) if anchored else ("/" + path).find("/" + pattern) >= 0
    if not any(c in pattern for c in "*?["):  # a literal: what fnmatch would say, without a regex each
        return path == pattern or (not anchored and path.rsplit("/", 1)[-1] == pattern)
    return fnmatch.fnmatch(path, pattern) or (not anchored and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern))


def _generate_at(ctx: CheckContext, rev: str, models: list[str] | None = None) -> str:
    """CODEOWNERS as `registry codeowners` writes it at rev; with `models`, only their lines (the
    lines of other models never match a path under those models' folders)."""
    return codeowners.generate(_roles_at(ctx, rev), _owners_at(ctx, rev, models))


def _roles_at(ctx: CheckContext, rev: str) -> dict[str, tuple[str, ...]]:
    text = ctx.read(rev, config.CONFIG_FILE) or b"{}"
    try:
        return ctx.parse_config(text).roles
    except ValidationError:  # the schema gate fails the file; CODEOWNERS is compared as for defaults
        return config.RegistryConfig.from_data({}).roles


def _owners_at(ctx: CheckContext, rev: str, models: list[str] | None = None) -> dict[str, list[str]]:
    """Each model's owners at rev (only `models`' when given). A model.yaml the head cannot be read
    for owners keeps the base's: a PR that breaks the file must not shrink who must approve
    (`_unreadable` reports it)."""
    names = models if models is not None else [
        e.path.split("/", 1)[1] for e in ctx.files_at(rev, MODELS_DIR, recursive=False) if e.kind == "tree"]
    blobs = ctx.cat.read_many([f"{rev}:{MODELS_DIR}/{n}/{MODEL_FILE}" for n in names])
    owners: dict[str, list[str]] = {}
    broken = []
    for name, blob in zip(names, blobs, strict=True):
        if blob is not None:
            try:
                owners[name] = codeowners.owners_of(yamlio.loads(blob), f"{MODELS_DIR}/{name}/{MODEL_FILE}")
            except ValidationError:
                broken.append(name)
    base = _owners_at(ctx, ctx.base, broken) if broken and rev != ctx.base else {}
    for name in broken:
        owners[name] = base.get(name, [])
    return owners


def _unreadable(ctx: CheckContext) -> list[GateResult]:
    """A changed model.yaml whose owners cannot be read: the base's owners stand, and the gate says so."""
    results = []
    for change in ctx.changes:
        parts = change.path.split("/")
        if len(parts) != 3 or parts[0] != MODELS_DIR or parts[2] != MODEL_FILE:
            continue
        blob = ctx.read(ctx.head, change.path)
        try:
            codeowners.owners_of(yamlio.loads(blob) if blob is not None else None, change.path)
        except ValidationError as exc:
            base = _owners_at(ctx, ctx.base, [parts[1]]).get(parts[1], [])
            results.append(GateResult(
                "approval", parts[1], None, "fail",
                f"{exc.problems[0].message}: owners unreadable, so the base branch's owners still apply "
                f"({', '.join(base) or 'none'}); fix the file", change.path, exc.problems[0].line))
    return results


def _stale(ctx: CheckContext) -> bool:
    """Whether this PR leaves CODEOWNERS disagreeing with roles or the owners of models it already lists."""
    edited = any(c.path == codeowners.CODEOWNERS_FILE for c in ctx.changes)
    touched_roles = any(c.path == config.CONFIG_FILE for c in ctx.changes) and \
        _roles_at(ctx, ctx.base) != _roles_at(ctx, ctx.head)
    # Owners of a model already on the base branch changed: its lines must follow in this PR.
    # Only a model whose model.yaml differs between base and head can have other owners there.
    touched_owners = False
    if any(c.path.startswith(f"{MODELS_DIR}/") and c.path.endswith(f"/{MODEL_FILE}") for c in ctx.changes):
        differing = ctx.differing(f"{MODELS_DIR}/*/{MODEL_FILE}")
        names = sorted({p.split("/")[1] for p in differing if p.count("/") == 2})
        base_owners = _owners_at(ctx, ctx.base, names)
        head_owners = _owners_at(ctx, ctx.head, names)
        touched_owners = any(name in base_owners and base_owners[name] != owners
                             for name, owners in head_owners.items())
    if not (edited or touched_roles or touched_owners):
        return False  # nothing here makes the file's state this PR's to fix (whatever it says)
    actual = (ctx.read(ctx.head, codeowners.CODEOWNERS_FILE) or b"").decode(errors="replace")
    return actual != _generate_at(ctx, ctx.head)  # an edit must be what `registry codeowners` writes


def run(ctx: CheckContext) -> list[GateResult]:
    return _unreadable(ctx) + _approvers(ctx)


def _approvers(ctx: CheckContext) -> list[GateResult]:
    if _stale(ctx):
        return [GateResult("approval", None, None, "fail",
                           f"{codeowners.CODEOWNERS_FILE} is out of date with registry.yaml roles and model owners; "
                           "run `registry codeowners` and commit the result", codeowners.CODEOWNERS_FILE)]
    # GitHub reads CODEOWNERS from the base branch: a PR cannot name its own approvers.
    enforced = ctx.read(ctx.base, codeowners.CODEOWNERS_FILE)
    text = enforced.decode(errors="replace") if enforced is not None else _generate_at(ctx, ctx.base, ctx.models)
    rules = codeowners.parse(text)
    needed: dict[str, list[str]] = {}
    for change in ctx.changes:
        owners = owners_for(rules, change.path)
        needed.setdefault(", ".join(owners), []).append(change.path)
    if not needed:
        return [GateResult("approval", None, None, "skip", "nothing changed")]
    counts = []
    for target in sorted({c.target for c in ctx.stage_changes}):
        wanted = ctx.config.approvals(target)
        if wanted.min:
            counts.append(f"{target} needs {wanted.min} approving review{'s' if wanted.min != 1 else ''}"
                          + (" by someone other than the author" if wanted.no_self_approval else ""))
    policy = f"; {'; '.join(counts)}" if counts else ""
    results = []
    for who, paths in sorted(needed.items()):
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        if not who:
            results.append(GateResult("approval", None, None, "pass", f"{shown}: {NO_OWNERS}{policy}"))
            continue
        results.append(GateResult("approval", None, None, "pass",
                                  f"needs approval from one of {who} for {shown} "
                                  f"(CODEOWNERS; enforced by branch protection){policy}"))
    return results

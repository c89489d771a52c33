"""Lifecycle ends and reversals: rollback, deprecate (with a sunset), archive.

Each is an ordinary stage change made through `promote` (the same lifecycle rules,
the same one-line stages.yaml diff, a branch for review), with its own branch name
and commit subject so that reviewers and the audit log read it for what it is.
"""

from __future__ import annotations

from registry.changes.promote import Promoted, promote
from registry.errors import UsageError
from registry.files.names import Version, check_model_name, check_version
from registry.queries import audit
from registry.repo.registry import Registry


def previous_production(reg: Registry, name: str) -> str:
    """The version that was in production before the current one, and can still return."""
    held = reg.stages(name)
    current = held.production
    history = [e for e in audit.log(reg, name=name) if e.to_stage == "production"]
    earlier = [e.version for e in reversed(history) if e.version != current]
    for version in earlier:
        if held.stage_of(version) == "deprecated":
            return version
    if earlier:
        raise UsageError(
            f"{name}: the earlier production versions ({', '.join(dict.fromkeys(earlier))}) are no longer "
            "deprecated (archived or moved); name one with --to if the lifecycle allows it"
        )
    raise UsageError(f"{name}: no earlier production version to roll back to")


def rollback(reg: Registry, name: str, reason: str, to: str | None = None, **options: object) -> Promoted:
    check_model_name(name)
    if not reg.has_model(name):
        raise UsageError(f"no model named {name!r} in this registry; see `registry ls`")
    if to is None:
        target = previous_production(reg, name)
    else:
        target = check_version(to)
        was = {e.version for e in audit.log(reg, name=name) if e.to_stage == "production"}
        if target not in was:
            raise UsageError(f"--to {target}: {name}@{target} was never in production; a rollback returns "
                             "to an earlier production version (use promote for anything else)")
        current = reg.stages(name).production
        if current and Version.parse(target) == Version.parse(current):
            raise UsageError(f"{name}@{target} is already in production")
    return promote(reg, name, target, "production", reason, branch_name=f"rollback/{name}/{target}",
                   subject=f"Roll back {name} to {target}", **options)  # type: ignore[arg-type]


def deprecate(reg: Registry, name: str, version: str, sunset: str, reason: str, **options: object) -> Promoted:
    return promote(reg, name, version, "deprecated", reason, sunset=sunset,
                   branch_name=f"deprecate/{name}/{version}",
                   subject=f"Deprecate {name}@{version} (sunset {sunset})", **options)  # type: ignore[arg-type]


def archive(reg: Registry, name: str, version: str, reason: str, **options: object) -> Promoted:
    return promote(reg, name, version, "archived", reason, branch_name=f"archive/{name}/{version}",
                   subject=f"Archive {name}@{version}", **options)  # type: ignore[arg-type]

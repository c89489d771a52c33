"""`registry promote`: move a version to another stage by editing stages.yaml on a branch."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from registry.changes import branches
from registry.errors import UsageError
from registry.files import stages, yamlio
from registry.files.names import ALL_STAGES, check_model_name, check_version
from registry.files.safetext import first_control, printable
from registry.files.stages import Deprecation, Stages
from registry.repo import git
from registry.repo.registry import Registry

VERBS = {"production": "Promote", "canary": "Promote", "staging": "Promote",
         "development": "Demote", "deprecated": "Deprecate", "archived": "Archive"}


@dataclass(frozen=True)
class Promoted:
    name: str
    version: str
    from_stage: str
    to_stage: str
    replaced: str | None  # the production version moved aside, if any
    branch: str | None
    commit: str
    stages: Stages
    warnings: tuple[str, ...] = ()


def plan(
    reg: Registry, name: str, version: str, to: str, *, traffic: float | None = None,
    sunset: str | None = None, reason: str | None = None,
) -> tuple[Stages, Stages, str, str | None]:
    """Check a stage change against the lifecycle; return (old, new, from_stage, replaced)."""
    check_model_name(name)
    check_version(version)
    if to not in ALL_STAGES:
        raise UsageError(f"unknown stage {to!r}: use one of {', '.join(ALL_STAGES)}")
    reg.require_version(name, version)
    card = reg.card(name, version)  # refuses an invalid card
    if "purged" in card.data and to not in ("archived", "development"):
        raise UsageError(f"{name}@{version} was purged by the retention policy on "
                         f"{card.data['purged'].get('date')}; its weights are gone, register a new version")
    if traffic is not None and to != "canary":
        raise UsageError("--traffic applies only to --to canary")
    if traffic is not None and not 0 < traffic < 1:
        raise UsageError(f"--traffic {traffic}: give a share between 0 and 1, e.g. 0.1")
    config = reg.config
    if to == "deprecated" and sunset:
        sunset = check_sunset(sunset, config.min_sunset_days)  # input first, then the lifecycle
    old = reg.stages(name)
    source = old.stage_of(version)
    redate = source == to == "deprecated" and sunset is not None
    if redate and old.deprecated[version] == Deprecation(sunset, reason):
        raise UsageError(f"{name}@{version} is already deprecated with sunset {sunset}; nothing to do")
    if source == to and not redate:
        raise UsageError(f"{name}@{version} is already in {to}; nothing to do")
    if not redate and not config.allows(source, to):
        allowed = ", ".join(config.transitions.get(source, ())) or "nothing"
        raise UsageError(
            f"{name}@{version} is in {source}; {source} → {to} is not allowed by registry.yaml "
            f"(lifecycle.transitions: from {source} to {allowed})"
        )
    replaced = None
    new = old
    if to == "canary" and old.canary and old.canary.version != version:
        raise UsageError(
            f"{name}@{old.canary.version} holds canary; promote it or move it back to staging first"
        )
    default_sunset = (dt.date.today() + dt.timedelta(days=config.min_sunset_days)).isoformat()
    if to == "production" and old.production and old.production != version:
        replaced = old.production
        aside = default_sunset if config.on_replace == "deprecated" else None
        new = new.with_stage(replaced, config.on_replace, sunset=aside)
    if to == "deprecated" and not sunset:
        sunset = default_sunset
    new = new.with_stage(
        version, to, traffic=traffic, sunset=sunset if to == "deprecated" else None,
        reason=reason if to == "deprecated" else None,
    )
    return old, new, source, replaced


def check_sunset(text: str, min_days: int, today: dt.date | None = None) -> str:
    """A sunset date at least the policy's minimum ahead (deprecation.min_sunset_days)."""
    try:
        date = dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--sunset {text!r}: use an ISO date, YYYY-MM-DD") from None
    earliest = (today or dt.date.today()) + dt.timedelta(days=min_days)
    if date < earliest:
        raise UsageError(
            f"--sunset {text}: must be at least {min_days} days ahead (on or after {earliest.isoformat()}), "
            "per registry.yaml deprecation.min_sunset_days, so that consumers have time to move"
        )
    return date.isoformat()


def promote(
    reg: Registry,
    name: str,
    version: str,
    to: str,
    reason: str,
    *,
    traffic: float | None = None,
    no_branch: bool = False,
    push: bool = False,
    author: tuple[str, str] | None = None,
    sunset: str | None = None,
    branch_name: str | None = None,
    subject: str | None = None,
) -> Promoted:
    """Commit the stage change; author=(name, email) makes someone else the commit's author
    (the REST API's token user), otherwise git's configured identity is used."""
    reason = " ".join(reason.split())
    if not reason:
        raise UsageError("--reason is required: say why, for the audit log")
    control = first_control(reason)
    if control is not None:  # it goes into a commit message that terminals and reviewers will show
        raise UsageError(f"--reason: character {printable(reason[control])} at position {control + 1} is a control "
                         "or bidirectional-override character; write the reason as plain text")
    _old, new, source, replaced = plan(reg, name, version, to, traffic=traffic, sunset=sunset, reason=reason)
    dirty = git.dirty_paths(reg.root)
    if dirty:
        raise UsageError(
            f"the registry has uncommitted changes ({', '.join(dirty[:3])}); commit or stash them first"
        )
    branch = None if no_branch else (branch_name or f"promote/{name}/{version}-to-{to}")
    if branch and git.rev_parse(f"refs/heads/{branch}", reg.root):
        raise UsageError(f"branch {branch} already exists; delete it or finish that promotion first")
    path = reg.model_dir(name) / stages.STAGES_FILE
    original_text = path.read_bytes() if path.exists() else None

    def restore() -> None:
        if original_text is None:
            path.unlink(missing_ok=True)
        else:
            yamlio.atomic_write(path, original_text)

    with branches.change_on_branch(reg.root, branch, restore):
        yamlio.atomic_write(path, new.to_text())
        message = commit_message(name, version, to, reason, traffic, subject)
        commit = git.commit_paths(reg.root, [reg.rel(path)], message, env=_identity(author))
    if push:
        branches.push(reg.root, branch, "The promotion")
    return Promoted(name, version, source, to, replaced, branch, commit, new,
                    unsigned_warning(reg, name, version, to))


def unsigned_warning(reg: Registry, name: str, version: str, to: str) -> tuple[str, ...]:
    """Warn when the target stage requires a signature the version does not have yet: the
    signature gate would fail the pull request, and signing in the same PR fixes it."""
    from registry.files import config
    from registry.files.layout import MODEL_FILE

    if (reg.version_dir(name, version) / "signature.json").exists():
        return ()
    model_file = reg.model_dir(name) / MODEL_FILE
    own = config.model_data(model_file.read_bytes() if model_file.is_file() else None, reg.rel(model_file))
    task = own.get("task") or reg.card(name, version).data.get("task")
    policy = config.effective_policy(reg.config, str(task) if task else None, to, own.get("policy"))
    if policy is None or not policy.require_signature:
        return ()
    return (f"{to} requires a signature (the effective {to} policy: registry.yaml, its task and model.yaml) and "
            f"{name}@{version} is unsigned, so the signature gate will fail this pull request; "
            f"sign it in the same PR: registry sign {name}@{version} --key KEY --no-branch [--push]",)


def _identity(author: tuple[str, str] | None) -> dict[str, str] | None:
    if author is None:
        return None
    import os

    name, email = author
    return dict(os.environ, GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email,
                GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)


def commit_message(name: str, version: str, to: str, reason: str, traffic: float | None = None,
                   subject: str | None = None) -> str:
    share = f" ({traffic:.0%} traffic)" if traffic is not None else ""
    subject = subject or f"{VERBS[to]} {name}@{version} to {to}{share}"
    return f"{subject}\n\nReason: {reason}\n"

"""registry.yaml: the registry's lifecycle and policy, parsed into typed values with defaults."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import yamlio
from registry.errors import ValidationError
from registry.layout import CONFIG_FILE as CONFIG_FILE

DEFAULT_TRANSITIONS: dict[str, list[str]] = {
    "development": ["staging", "archived"],
    "staging": ["canary", "production", "development", "archived"],
    "canary": ["production", "staging", "archived"],
    "production": ["deprecated"],
    "deprecated": ["production", "archived"],
}

DEFAULT_POLICY: dict[str, dict[str, Any]] = {
    "staging": {
        "metrics": {"accuracy": {"min": 0.80}},
        "latency": {"p50_ms": 50, "p99_ms": 200, "runs": 50},
        "smoke_timeout_s": 60,
        "require_signature": False,
    },
    "production": {
        "metrics": {"accuracy": {"min": 0.90}},
        "max_regression": {"accuracy": {"absolute": 0.01}},
        "latency": {"p50_ms": 20, "p99_ms": 100, "runs": 100},
        "smoke_timeout_s": 60,
        "require_signature": True,
        "approvals": {"min": 1, "no_self_approval": True},
    },
}

# Approving reviews a stage change needs (verify-history checks them against the forge's
# records in git notes; branch protection enforces them on GitHub). Production by default.
DEFAULT_APPROVALS: dict[str, dict[str, Any]] = {"production": {"min": 1, "no_self_approval": True}}

# The file `registry init` writes: every key with its default, so admins see what to tune.
DEFAULT_CONFIG: dict[str, Any] = {
    "lifecycle": {"transitions": DEFAULT_TRANSITIONS, "on_replace": "deprecated"},
    "policy": DEFAULT_POLICY,
    "deprecation": {"min_sunset_days": 90},
    "retention": {"keep_latest": 3, "purge_unstaged_after_days": 7},
    "storage": {"git_max_bytes": 1048576},
    "scan": {"allow_globals": []},
    "trusted_keys": [],
    "roles": {"admin": [], "data-scientist": [], "developer": [], "viewer": []},
    # record_approvals: the main-branch workflow stores each merged PR's reviews as git notes.
    "audit": {"record_approvals": False},
}


def default_approvals(stage: str) -> dict[str, Any]:
    return dict(DEFAULT_APPROVALS.get(stage, {"min": 0, "no_self_approval": False}))


@dataclass(frozen=True)
class ApprovalPolicy:
    min: int = 0
    no_self_approval: bool = False


@dataclass(frozen=True)
class StagePolicy:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    max_regression: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    smoke_timeout_s: float = 60
    require_signature: bool = False
    approvals: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegistryConfig:
    transitions: dict[str, tuple[str, ...]]
    on_replace: str
    policy: dict[str, StagePolicy]
    min_sunset_days: int
    keep_latest: int
    purge_unstaged_after_days: int
    git_max_bytes: int
    allow_globals: tuple[str, ...]
    trusted_keys: tuple[str, ...]
    roles: dict[str, tuple[str, ...]]
    record_approvals: bool = False

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> RegistryConfig:
        data = data or {}
        lifecycle = data.get("lifecycle", {})
        transitions = lifecycle.get("transitions", DEFAULT_TRANSITIONS)
        policies = data.get("policy", DEFAULT_POLICY)
        return cls(
            transitions={k: tuple(v) for k, v in transitions.items()},
            on_replace=lifecycle.get("on_replace", "deprecated"),
            policy={stage: StagePolicy(**p) for stage, p in policies.items()},
            min_sunset_days=data.get("deprecation", {}).get("min_sunset_days", 90),
            keep_latest=data.get("retention", {}).get("keep_latest", 3),
            purge_unstaged_after_days=data.get("retention", {}).get("purge_unstaged_after_days", 7),
            git_max_bytes=data.get("storage", {}).get("git_max_bytes", 1048576),
            allow_globals=tuple(data.get("scan", {}).get("allow_globals", [])),
            trusted_keys=tuple(data.get("trusted_keys", [])),
            roles={k: tuple(v) for k, v in data.get("roles", DEFAULT_CONFIG["roles"]).items()},
            record_approvals=bool((data.get("audit") or {}).get("record_approvals", False)),
        )

    def allows(self, source: str, target: str) -> bool:
        return target in self.transitions.get(source, ())

    def approvals(self, stage: str) -> ApprovalPolicy:
        """policy.<stage>.approvals over the defaults (production: min 1, no self-approval)."""
        given = self.policy[stage].approvals if stage in self.policy else {}
        merged = {**default_approvals(stage), **given}
        return ApprovalPolicy(int(merged["min"]), bool(merged["no_self_approval"]))


def parse(text: str | bytes, path: str = CONFIG_FILE) -> RegistryConfig:
    from registry import schemas

    data = yamlio.loads(text, path)
    problems = schemas.validate("registry", data, path, text)
    if problems:
        raise ValidationError(problems)
    return RegistryConfig.from_data(data)


def load(root: Path) -> RegistryConfig:
    path = root / CONFIG_FILE
    return parse(yamlio.read_bytes(path, CONFIG_FILE), CONFIG_FILE)


def default_text() -> str:
    header = yamlio.schema_header(f"{yamlio.REPO_SCHEMA_DIR}/registry.schema.json")
    intro = (
        "# Registry configuration. Every key is optional; a missing key takes the default shown.\n"
        "# Lifecycle: a version in no stage is in development.\n"
    )
    return header + intro + yamlio.dumps(copy.deepcopy(DEFAULT_CONFIG))

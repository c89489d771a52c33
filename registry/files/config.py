"""registry.yaml: the registry's lifecycle and policy, parsed into typed values with defaults."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from registry.errors import ValidationError
from registry.files import yamlio
from registry.files.layout import CONFIG_FILE as CONFIG_FILE

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
    # Live traffic: gated like production (against the production version), on a bounded share.
    "canary": {
        "metrics": {"accuracy": {"min": 0.90}},
        "max_regression": {"accuracy": {"absolute": 0.01}},
        "require_signature": True,
        "max_traffic": 0.5,
    },
}
# The largest |claimed - recomputed| difference a metric may show on an evaluation set.
DEFAULT_TOLERANCE = 0.005
DEFAULT_EVALUATION: dict[str, Any] = {"tolerance": DEFAULT_TOLERANCE, "sets": []}

# Approving reviews a stage change needs (verify-history checks them against the forge's
# records in git notes; branch protection enforces them on GitHub). Production by default.
DEFAULT_APPROVALS: dict[str, dict[str, Any]] = {"production": {"min": 1, "no_self_approval": True}}

# The file `registry init` writes: every key with its default, so admins see what to tune.
DEFAULT_CONFIG: dict[str, Any] = {
    "lifecycle": {"transitions": DEFAULT_TRANSITIONS, "on_replace": "deprecated"},
    "policy": {**DEFAULT_POLICY, "tasks": {}, "drift": {}},
    "evaluation": DEFAULT_EVALUATION,
    "deprecation": {"min_sunset_days": 90},
    "retention": {"keep_latest": 3, "purge_unstaged_after_days": 7},
    "storage": {"git_max_bytes": 1048576},
    "scan": {"allow_globals": [], "profiles": []},
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
    max_traffic: float | None = None  # canary: the largest share of live traffic
    approvals: dict[str, Any] = field(default_factory=dict)


# Keys of registry.yaml's `policy` that are not a stage's rules.
NOT_STAGES = ("tasks", "drift")


def stage_policies(data: dict[str, Any] | None) -> dict[str, StagePolicy]:
    """registry.yaml's `policy`, each stage's keys over that stage's defaults.

    A missing key takes its default (as for every key of registry.yaml): a registry that
    sets only production's thresholds keeps production's signature rule and canary's gates.
    Turning a default off is explicit (`require_signature: false`, `max_regression: {}`).
    """
    given = {k: v for k, v in (data or {}).items() if k not in NOT_STAGES}
    return {stage: StagePolicy(**{**DEFAULT_POLICY.get(stage, {}), **given.get(stage, {})})
            for stage in dict.fromkeys([*DEFAULT_POLICY, *given])}


def _lower(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _stricter_bounds(base: dict[str, float], own: dict[str, float]) -> dict[str, float]:
    """One metric's bounds, both at once: the higher min, the lower max."""
    merged = dict(base)
    for bound, limit in own.items():
        if bound not in merged:
            merged[bound] = limit
        else:
            merged[bound] = max(merged[bound], limit) if bound == "min" else min(merged[bound], limit)
    return merged


def stricter(policy: StagePolicy, own: dict[str, Any]) -> StagePolicy:
    """A model.yaml's stage rules applied to the registry's stage policy: they only tighten it.

    A min only goes up, a max, a latency limit, smoke_timeout_s and max_traffic only down,
    require_signature only to true; metrics, regression checks and latency limits the registry
    does not set are added; a regression tolerance only shrinks (given both an absolute and a
    relative one, the gate allows the smaller of the two). Nothing here can loosen a rule.
    """
    metrics = {k: dict(v) for k, v in policy.metrics.items()}
    for metric, bounds in (own.get("metrics") or {}).items():
        metrics[metric] = _stricter_bounds(metrics.get(metric, {}), bounds)
    regression = {k: dict(v) for k, v in policy.max_regression.items()}
    for metric, tolerance in (own.get("max_regression") or {}).items():
        merged = regression.setdefault(metric, {})
        for kind, value in tolerance.items():
            merged[kind] = min(merged[kind], value) if kind in merged else value
    latency = dict(policy.latency)
    for key, value in (own.get("latency") or {}).items():
        if key == "runs":
            latency[key] = max(int(latency.get(key, value)), value)
        else:
            latency[key] = min(latency.get(key, value), value)
    timeout = own.get("smoke_timeout_s")
    return replace(
        policy, metrics=metrics, max_regression=regression, latency=latency,
        smoke_timeout_s=policy.smoke_timeout_s if timeout is None else min(policy.smoke_timeout_s, timeout),
        require_signature=policy.require_signature or bool(own.get("require_signature", False)),
        max_traffic=_lower(policy.max_traffic, own.get("max_traffic")))


def effective_policy(config: RegistryConfig, task: str | None, stage: str,
                     model_policy: dict[str, Any] | None) -> StagePolicy | None:
    """The policy a version of `task` is checked against for `stage`; every gate asks here.

    registry.yaml's policy.<stage>; then the keys of policy.tasks.<task>.<stage> replace that
    stage's keys (a regression task replaces `metrics` and `max_regression` that name
    accuracy); then the model's own rules (model.yaml's policy.<stage>, from the base
    branch) tighten the result (`stricter`). None: nothing applies to that stage.
    """
    policy = config.policy.get(stage)
    override = config.task_policy.get(task or "", {}).get(stage)
    if override is not None:
        policy = replace(policy or StagePolicy(**DEFAULT_POLICY.get(stage, {})), **override)
    own = (model_policy or {}).get(stage)
    if own is not None:
        policy = stricter(policy or StagePolicy(), own)
    return policy


@dataclass(frozen=True)
class DriftPolicy:
    """policy.drift: how far each metric may fall on new data below the card (`registry evaluate`)."""

    max_drop: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> DriftPolicy:
        return cls({str(k): float(v) for k, v in ((data or {}).get("max_drop") or {}).items()})

    def stricter(self, own: DriftPolicy) -> DriftPolicy:
        """A model.yaml's drift rules applied: an allowance only shrinks, a metric only joins."""
        merged = dict(self.max_drop)
        for metric, allowed in own.max_drop.items():
            merged[metric] = min(merged.get(metric, allowed), allowed)
        return DriftPolicy(merged)


def effective_drift(config: RegistryConfig, task: str | None, model_policy: dict[str, Any] | None) -> DriftPolicy:
    """The drift policy for a version of `task`, resolved as `effective_policy` resolves a stage's:
    registry.yaml's policy.drift; policy.tasks.<task>.drift replaces it; the model's own
    model.yaml policy.drift tightens the result."""
    drift = config.drift
    override = config.task_policy.get(task or "", {}).get("drift")
    if override is not None:
        drift = DriftPolicy.from_data(override)
    own = (model_policy or {}).get("drift")
    if own is not None:
        drift = drift.stricter(DriftPolicy.from_data(own))
    return drift


@dataclass(frozen=True)
class EvalSet:
    """A pinned evaluation set the metrics gate recomputes the card's metrics on."""

    path: str  # repository path of the data file (or of the file a DVC pointer tracks)
    hash: str | None  # sha256 the data must have, when pinned
    metrics: tuple[str, ...]  # () = every metric the card claims
    tolerance: float
    declared_in: str  # the file that asks for it: registry.yaml, model.yaml (base) or the card

    @classmethod
    def from_data(cls, data: dict[str, Any], tolerance: float, declared_in: str) -> EvalSet:
        pinned = str(data["data"].get("hash", "")).removeprefix("sha256:")
        return cls(data["data"]["path"], pinned or None, tuple(data.get("metrics") or ()),
                   min(tolerance, float(data.get("tolerance", tolerance))), declared_in)


@dataclass(frozen=True)
class Evaluation:
    """Which evaluation sets a version is recomputed on, and how closely its card must agree.

    Read from registry.yaml and model.yaml on the base branch; a card may only add to it
    (`stricter`): more sets, more metrics, a smaller tolerance, never fewer or a larger one.
    """

    tolerance: float = DEFAULT_TOLERANCE
    sets: tuple[EvalSet, ...] = ()

    @classmethod
    def from_data(cls, data: dict[str, Any] | None, declared_in: str,
                  within: Evaluation | None = None) -> Evaluation:
        """`evaluation:` of registry.yaml or model.yaml; within: the policy it can only tighten."""
        data = data or {}
        tolerance = float(data.get("tolerance", DEFAULT_TOLERANCE if within is None else within.tolerance))
        if within is not None:
            tolerance = min(tolerance, within.tolerance)
        added = tuple(EvalSet.from_data(s, tolerance, declared_in) for s in data.get("sets") or ())
        return cls(tolerance, added).stricter(within) if within is not None else cls(tolerance, added)

    def stricter(self, other: Evaluation | None) -> Evaluation:
        """Both policies at once: every set of either, the smaller tolerance; a set named twice
        (same path) keeps the first one's data and pin, the union of metrics, the smaller tolerance."""
        if other is None:
            return self
        tolerance = min(self.tolerance, other.tolerance)
        merged: dict[str, EvalSet] = {}
        for item in (*other.sets, *self.sets):
            first = merged.get(item.path)
            if first is None:
                merged[item.path] = replace(item, tolerance=min(item.tolerance, tolerance))
            else:
                metrics = () if not first.metrics or not item.metrics else \
                    tuple(dict.fromkeys((*first.metrics, *item.metrics)))
                merged[item.path] = replace(first, metrics=metrics,
                                            tolerance=min(first.tolerance, item.tolerance, tolerance))
        return Evaluation(tolerance, tuple(merged.values()))

    def with_card(self, card_evaluation: dict[str, Any] | None, card_path: str) -> Evaluation:
        """The card's own `evaluation:` added: its set, and its tolerance if smaller."""
        given = dict(card_evaluation or {})
        tolerance = min(self.tolerance, float(given.get("tolerance", self.tolerance)))
        sets = (EvalSet.from_data(given, tolerance, card_path),) if given.get("data") else ()
        return Evaluation(tolerance, sets).stricter(self)


@dataclass(frozen=True)
class RegistryConfig:
    transitions: dict[str, tuple[str, ...]]
    on_replace: str
    policy: dict[str, StagePolicy]
    evaluation: Evaluation
    min_sunset_days: int
    keep_latest: int
    purge_unstaged_after_days: int
    git_max_bytes: int
    allow_globals: tuple[str, ...]
    trusted_keys: tuple[str, ...]
    roles: dict[str, tuple[str, ...]]
    record_approvals: bool = False
    # policy.tasks: task -> stage -> the stage keys it replaces (see effective_policy)
    task_policy: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    scan_profiles: tuple[str, ...] = ()  # scan.profiles: opt-in allow-lists (registry.artifacts.scan)
    drift: DriftPolicy = field(default_factory=DriftPolicy)  # policy.drift (registry evaluate)

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> RegistryConfig:
        """The configuration a (schema-valid) registry.yaml gives: every key it leaves out takes
        its value from DEFAULT_CONFIG, the one place defaults are written."""
        data = data or {}

        def key(section: str, name: str) -> Any:
            return (data.get(section) or {}).get(name, DEFAULT_CONFIG[section][name])

        transitions = key("lifecycle", "transitions")
        return cls(
            transitions={k: tuple(v) for k, v in transitions.items()},
            on_replace=key("lifecycle", "on_replace"),
            policy=stage_policies(data.get("policy")),
            evaluation=Evaluation.from_data(data.get("evaluation"), CONFIG_FILE),
            min_sunset_days=key("deprecation", "min_sunset_days"),
            keep_latest=key("retention", "keep_latest"),
            purge_unstaged_after_days=key("retention", "purge_unstaged_after_days"),
            git_max_bytes=key("storage", "git_max_bytes"),
            allow_globals=tuple(key("scan", "allow_globals")),
            trusted_keys=tuple(data.get("trusted_keys", DEFAULT_CONFIG["trusted_keys"])),
            roles={k: tuple(v) for k, v in data.get("roles", DEFAULT_CONFIG["roles"]).items()},
            record_approvals=bool(key("audit", "record_approvals")),
            task_policy=dict(key("policy", "tasks") or {}),
            scan_profiles=tuple(key("scan", "profiles")),
            drift=DriftPolicy.from_data((data.get("policy") or {}).get("drift")),
        )

    def allows(self, source: str, target: str) -> bool:
        return target in self.transitions.get(source, ())

    def approvals(self, stage: str) -> ApprovalPolicy:
        """policy.<stage>.approvals over the defaults (production: min 1, no self-approval)."""
        given = self.policy[stage].approvals if stage in self.policy else {}
        merged = {**default_approvals(stage), **given}
        return ApprovalPolicy(int(merged["min"]), bool(merged["no_self_approval"]))


def parse(text: str | bytes, path: str = CONFIG_FILE) -> RegistryConfig:
    from registry.files import schemas

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


def model_data(text: str | bytes | None, path: str) -> dict[str, Any]:
    """A model.yaml, validated ({} when there is none); a ValidationError when it does not validate."""
    if text is None:
        return {}
    from registry.files import schemas

    data = yamlio.loads(text, path)
    problems = schemas.validate("model", data, path, text)
    if problems:
        raise ValidationError(problems)
    return dict(data or {})


def model_evaluation(data: dict[str, Any] | None, path: str, registry: Evaluation) -> Evaluation:
    """The evaluation policy for one model: registry.yaml's, tightened by its model.yaml's
    (data: the validated model.yaml, from model_data; None when there is none)."""
    if data is None:
        return registry
    return Evaluation.from_data(data.get("evaluation"), path, within=registry)

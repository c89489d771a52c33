"""`registry evaluate`: a version's metrics recomputed on new labelled data and compared with its card.

"Monitor it in production": the model that serves is run on data labelled since, the way the
metrics gate recomputes a card on a pinned evaluation set (`metrics.run_model_on`: the
sandbox, the version's declared environment, metrics computed here from its raw
predictions), and each metric's drop below the card's value is set against
`policy.drift.max_drop` (registry.yaml, replaced per task by `policy.tasks.<task>.drift`,
tightened by the model's model.yaml; `config.effective_drift`). For a lower-is-better
metric (rmse, mae, mse, a loss) the drop is its rise: `metrics.lower_is_better`, as the gate
reads a regression.

Everything is read at HEAD: the card, registry.yaml, model.yaml and stages.yaml. As in
`registry check`, the model runs only after the scan and format gates passed on its files.
This is not one of `registry check`'s gates (GATE_ORDER does not name it).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files import config
from registry.files.cards import CARD_FILE, Artifact
from registry.files.promtext import label_value
from registry.gates import format as format_gate
from registry.gates import scan as scan_gate
from registry.gates.common import EnvironmentFailure, base_model_data, policy_task, stage_policy
from registry.gates.metrics import lower_is_better, run_model_on
from registry.gates.run import CheckContext
from registry.repo import git, storage
from registry.repo.registry import MODELS_DIR, Registry

DATA_SUFFIXES = (".npz", ".csv")
# Stages whose policy tells a metric's direction; a version in none of them is read as production's.
POLICY_STAGES = ("staging", "canary", "production")
SLACK = 1e-12  # a drop equal to the allowance passes, whatever the float rounding


@dataclass(frozen=True)
class MetricDrift:
    metric: str
    card: float
    now: float
    lower_is_better: bool
    allowed: float | None  # policy.drift.max_drop for this metric; None: no limit

    @property
    def change(self) -> float:
        return self.now - self.card

    @property
    def drop(self) -> float:
        """How much worse the metric is now than on the card (negative: better)."""
        return self.change if self.lower_is_better else -self.change

    @property
    def exceeded(self) -> bool:
        return self.allowed is not None and self.drop > self.allowed + SLACK

    def as_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "card": self.card, "now": self.now, "change": self.change,
                "drop": self.drop, "allowed": self.allowed, "lower_is_better": self.lower_is_better,
                "exceeded": self.exceeded}


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: str
    data: str
    metrics: tuple[MetricDrift, ...]
    max_drop: dict[str, float] = field(default_factory=dict)
    message: str = ""  # the runner's summary: how many examples were scored

    @property
    def has_policy(self) -> bool:
        return any(m.allowed is not None for m in self.metrics)

    @property
    def exceeded(self) -> bool:
        return any(m.exceeded for m in self.metrics)

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "data": self.data,
                "exceeded": self.exceeded, "max_drop": dict(self.max_drop),
                "metrics": [m.as_json() for m in self.metrics]}

    def prometheus(self) -> str:
        """The node-exporter textfile: card and evaluated values, each metric's drop, the verdict."""
        who = f'model="{label_value(self.model)}",version="{label_value(self.version)}"'
        lines = ["# HELP registry_model_metric A model version's metric: as its card claims it (source=\"card\") "
                 "or as `registry evaluate` measured it on new data (source=\"evaluated\").",
                 "# TYPE registry_model_metric gauge"]
        for m in self.metrics:
            for source, value in (("card", m.card), ("evaluated", m.now)):
                lines.append(f'registry_model_metric{{{who},metric="{label_value(m.metric)}",source="{source}"}} '
                             f"{_number(value)}")
        lines += ["# HELP registry_model_drift How much worse a metric is on new data than on the card "
                  "(positive: worse; for a lower-is-better metric, its rise).",
                  "# TYPE registry_model_drift gauge"]
        lines += [f'registry_model_drift{{{who},metric="{label_value(m.metric)}"}} {_number(m.drop)}'
                  for m in self.metrics]
        lines += ["# HELP registry_model_drift_exceeded 1 when a metric dropped by more than policy.drift.max_drop "
                  "allows, else 0.",
                  "# TYPE registry_model_drift_exceeded gauge",
                  f"registry_model_drift_exceeded{{{who}}} {int(self.exceeded)}"]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ("NaN" if math.isnan(value) else
                                                            ("+Inf" if value > 0 else "-Inf"))


class _VersionContext(CheckContext):
    """A check context at HEAD whose only checked version is the one evaluated (no target stage),
    so the scan and format gates run on exactly its files."""

    evaluated: tuple[str, str] = ("", "")

    def checked_versions(self) -> list[tuple[str, str, str | None]]:
        return [(*self.evaluated, None)]


def check_data_file(data_file: Path) -> None:
    """Refuse, before anything runs, a data file that cannot be evaluation data."""
    if data_file.suffix not in DATA_SUFFIXES:
        raise UsageError(f"--data {data_file}: use an .npz (arrays x and y) or a .csv (a header with a label column)")
    if not data_file.is_file():
        raise UsageError(f"--data {data_file}: " + ("not a regular file" if data_file.exists() else "no such file"))


def evaluate(reg: Registry, model: str, version: str, data_file: Path,
             metric_names: tuple[str, ...] = ()) -> DriftReport:
    """Run model@version (at HEAD) on data_file and compare its metrics with the card's.

    Raises UsageError for a bad argument (the data file's name, a metric the card does not
    claim or that cannot be recomputed) and RegistryError when the version is not there, its
    files do not pass the scan or format gate, or the model or the data fail.
    """
    check_data_file(data_file)
    head = git.rev_parse("HEAD", reg.root)
    if head is None:
        raise RegistryError("the registry has no commit yet")
    ctx = _VersionContext(reg, head, head, head, [])
    ctx.evaluated = (model, version)
    try:
        return _evaluate(ctx, model, version, data_file, metric_names)
    finally:
        ctx.close()


def _evaluate(ctx: _VersionContext, model: str, version: str, data_file: Path,
              metric_names: tuple[str, ...]) -> DriftReport:
    from registry.runner.metrics import METRICS

    card_path = f"{MODELS_DIR}/{model}/{version}/{CARD_FILE}"
    text = ctx.read(ctx.head, card_path)
    if text is None:
        if not ctx.files_at(ctx.head, f"{MODELS_DIR}/{model}", recursive=False):
            raise RegistryError(f"{model}: no such model in the registry (`registry ls` lists them)")
        raise RegistryError(f"{model}@{version}: no such version ({card_path} is not in the registry at HEAD; "
                            f"`registry show {model}` lists its versions)")
    card = ctx.parse_card(text, card_path)  # a ValidationError names file, line and field
    names = _metric_names(model, version, card.metrics, metric_names, METRICS)
    if not card.data.get("entrypoint"):
        raise RegistryError(f"{card_path}: names no entrypoint, so the model cannot be run on new data "
                            "(docs/model-code.md: predict.py with load and predict)")

    own = base_model_data(ctx, model)  # HEAD's model.yaml; a ValidationError if it does not validate
    drift = config.effective_drift(ctx.config, policy_task(ctx, model, version), own.get("policy"))
    stage = ctx.stages_at(ctx.head, model).stage_of(version)
    policy = stage_policy(ctx, model, version, stage if stage in POLICY_STAGES else "production")

    _materialise(ctx, model, version, card.artifacts)
    _cleared(ctx, model, version)
    with tempfile.TemporaryDirectory(prefix="registry-evaluate-") as tmp:
        local = Path(tmp) / data_file.name
        shutil.copyfile(data_file, local)  # the sandbox reads a private copy, never the caller's path
        result = run_model_on(ctx, model, version, card, local, names)
    if isinstance(result, EnvironmentFailure):
        raise RegistryError(f"{model}@{version}: {result.message}")
    if result.status != "pass":
        raise RegistryError(f"evaluating {model}@{version} on {data_file}: {result.message}")
    measured = tuple(
        MetricDrift(name, float(card.metrics[name]), float(result.metrics[name]),
                    lower_is_better(name, policy), drift.max_drop.get(name))
        for name in names)
    return DriftReport(model, version, str(data_file), measured, dict(drift.max_drop), result.message)


def _metric_names(model: str, version: str, claimed: Mapping[str, float], asked: tuple[str, ...],
                  known: Mapping[str, Any]) -> list[str]:
    """The metrics to recompute: those asked for, else every one the card claims that can be."""
    for name in asked:
        if name not in claimed:
            raise UsageError(f"--metric {name}: the card of {model}@{version} claims no {name} "
                             f"(it has {', '.join(claimed) or 'no metrics'})")
        if name not in known:
            raise UsageError(f"--metric {name}: cannot be recomputed from predictions (known: {', '.join(known)})")
    if asked:
        return list(dict.fromkeys(asked))
    names = [name for name in claimed if name in known]
    if not names:
        raise RegistryError(f"{model}@{version}: none of the card's metrics ({', '.join(claimed) or 'none'}) can be "
                            f"recomputed from predictions (known: {', '.join(known)})")
    return names


def _materialise(ctx: CheckContext, model: str, version: str, artifacts: tuple[Artifact, ...]) -> None:
    """Pull the version's DVC-tracked files into the work tree when some are not there (a fresh
    clone), as `registry fetch` does for a pull request: the gates read them from there."""
    folder = ctx.reg.root / MODELS_DIR / model / version
    if all((folder / a.path).is_file() for a in artifacts if a.storage == "dvc"):
        return
    pointers = [e.path for e in ctx.files_at(ctx.head, f"{MODELS_DIR}/{model}/{version}") if e.path.endswith(".dvc")]
    if pointers:
        storage.pull(ctx.reg.root, pointers)


def _cleared(ctx: CheckContext, model: str, version: str) -> None:
    """The scan and format gates on the version's files; the model runs only when both passed."""
    ctx.results += scan_gate.run(ctx)
    ctx.results += format_gate.run(ctx)
    if ctx.passed("scan", model, version) and ctx.passed("format", model, version):
        return
    failed = [f"{r.gate}: {r.message}" for r in ctx.results if r.status != "pass"]
    raise RegistryError(f"{model}@{version} is not run: its files did not pass the scan and format gates\n"
                        + "\n".join(failed))

"""latency gate: P50 and P99 of predict on the input example against the target stage's limits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import RegistryError
from registry.gates.common import MODEL_RUN_PREREQUISITES, cleared, environment_python, stage_policy
from registry.gates.result import GateResult

if TYPE_CHECKING:
    from registry.gates.run import CheckContext

REQUIRES = (*MODEL_RUN_PREREQUISITES, "smoke")


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    for model, version, target in ctx.checked_versions():
        try:
            policy = stage_policy(ctx, model, version, target)
        except RegistryError as exc:  # base's model.yaml does not validate: fail closed
            results.append(GateResult("latency", model, version, "fail", f"cannot read the policy: {exc}"))
            continue
        if policy is None or not policy.latency:
            why = f"the {target} policy sets no latency limit" if target else "no target stage"
            results.append(GateResult("latency", model, version, "skip", why))
            continue
        card = ctx.card_at(ctx.head, model, version)
        if card is None:
            continue
        blocked = cleared(ctx, "latency", model, version)
        if blocked:
            results.append(blocked)
            continue
        entrypoint = card.data.get("entrypoint")
        if not entrypoint:
            results.append(GateResult("latency", model, version, "skip", "the card names no entrypoint"))
            continue
        if not ctx.passed("smoke", model, version):
            status = "skip" if ctx.failed("smoke", model, version) else "fail"
            results.append(GateResult("latency", model, version, status, "not run: the smoke gate did not pass"))
            continue
        runs = int(policy.latency.get("runs", 50))
        try:
            folder = ctx.version_folder(model, version)
        except RegistryError as exc:
            results.append(GateResult("latency", model, version, "fail", f"cannot fetch the artifacts: {exc}"))
            continue
        python, problem = environment_python(folder, model, version, card.data.get("environment"))
        if problem:
            results.append(problem.of("latency"))
            continue
        from registry.runner import run as runner  # numpy: only when a model runs

        timeout = max(float(policy.smoke_timeout_s), 1.0) * 2
        outcome = runner.latency(folder, entrypoint, card.data.get("input_example"), runs, timeout, python)
        file = f"models/{model}/{version}/{entrypoint}"
        if outcome.status != "pass" or outcome.p50_ms is None or outcome.p99_ms is None:
            results.append(GateResult("latency", model, version, outcome.status, f"{file}: {outcome.message}", file))
            continue
        over = [f"{name} {value:.2f} ms exceeds the {target} limit {limit} ms"
                for name, value, limit in (("p50", outcome.p50_ms, policy.latency.get("p50_ms")),
                                           ("p99", outcome.p99_ms, policy.latency.get("p99_ms")))
                if limit is not None and value > limit]
        if over:
            results += [GateResult("latency", model, version, "fail", f"{file}: {o} ({runs} runs)", file) for o in over]
        else:
            results.append(GateResult("latency", model, version, "pass", f"{file}: {outcome.message}", file))
    if not results:
        results.append(GateResult("latency", None, None, "skip", "no version to time"))
    return results

"""smoke gate: the model loads and predicts on its input example, in a sandboxed subprocess.

Runs only after the scan and format gates passed for the version (a recorded pass, not
the absence of a failure): nothing that could run code on load is ever loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import RegistryError
from registry.gates.common import MODEL_RUN_PREREQUISITES, cleared, environment_python, stage_policy
from registry.gates.result import GateResult

if TYPE_CHECKING:
    from registry.gates.run import CheckContext

REQUIRES = MODEL_RUN_PREREQUISITES
DEFAULT_TIMEOUT_S = 60.0


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    for model, version, target in ctx.checked_versions():
        card = ctx.card_at(ctx.head, model, version)
        if card is None:
            continue
        blocked = cleared(ctx, "smoke", model, version)
        if blocked:
            results.append(blocked)
            continue
        try:
            policy = stage_policy(ctx, model, version, target)
        except RegistryError as exc:  # base's model.yaml does not validate: fail closed
            results.append(GateResult("smoke", model, version, "fail", f"cannot read the policy: {exc}"))
            continue
        timeout = float(policy.smoke_timeout_s) if policy else DEFAULT_TIMEOUT_S
        try:
            folder = ctx.version_folder(model, version)
        except RegistryError as exc:
            results.append(GateResult("smoke", model, version, "fail", f"cannot fetch the artifacts: {exc}"))
            continue
        example = card.data.get("input_example")
        entrypoint = card.data.get("entrypoint")
        onnx = next((a.path for a in card.artifacts if a.path.endswith(".onnx")), None)
        if not entrypoint and not onnx:
            results.append(GateResult("smoke", model, version, "skip",
                                      "the card names no entrypoint and there is no ONNX artifact to run"))
            continue
        # Nothing is built for a version that has nothing to run on (the runner says so).
        environment = card.data.get("environment") if example is not None else None
        python, problem = environment_python(folder, model, version, environment)
        if problem:
            results.append(problem.of("smoke"))
            continue
        from registry.runner import run as runner  # numpy: only when a model runs

        if entrypoint:
            outcome = runner.smoke(folder, entrypoint, example, timeout, python)
        else:
            assert onnx is not None
            outcome = runner.onnx_smoke(folder, onnx, example, timeout, python)
        file = f"models/{model}/{version}/{entrypoint or onnx}"
        message = outcome.message.removeprefix(f"{entrypoint or onnx}: ")  # the runner names it too
        where = f" (in its environment, {environment})" if python is not None else ""
        results.append(GateResult("smoke", model, version, outcome.status, f"{file}{where}: {message}", file))
    if not results:
        results.append(GateResult("smoke", None, None, "skip", "no version to run"))
    return results

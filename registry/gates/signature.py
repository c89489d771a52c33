"""signature gate: the version's signature verifies against a key registry.yaml trusts (on base)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import RegistryError
from registry.gates.common import stage_policy
from registry.gates.result import GateResult
from registry.repo.registry import MODELS_DIR
from registry.signing.bundle import verify_folder
from registry.signing.keys import keys_in_commit
from registry.signing.manifest import SIGNATURE_FILE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from registry.gates.run import CheckContext


def trusted_keys(ctx: CheckContext) -> tuple[list[ec.EllipticCurvePublicKey], list[str]]:
    """Keys named by base's registry.yaml, read from base's tree (a PR cannot add its own key)."""
    return keys_in_commit(ctx.config.trusted_keys, lambda path: ctx.read(ctx.base, path),
                          "the base commit")


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    keys, key_problems = trusted_keys(ctx) if ctx.checked_versions() else ([], [])
    for model, version, target in ctx.checked_versions():
        try:
            policy = stage_policy(ctx, model, version, target)
        except RegistryError as exc:  # base's model.yaml does not validate: fail closed
            results.append(GateResult("signature", model, version, "fail", f"cannot read the policy: {exc}"))
            continue
        required = bool(policy and policy.require_signature)
        why = f"the {target} policy requires a signature" if required else "no signature is required"
        path = f"{MODELS_DIR}/{model}/{version}/{SIGNATURE_FILE}"
        if ctx.read(ctx.head, path) is None:
            status = "fail" if required else "skip"
            hint = f"; sign it with `registry sign {model}@{version} --key KEY`" if required else ""
            results.append(GateResult("signature", model, version, status, f"unsigned; {why}{hint}", path))
            continue
        if not keys:
            status = "fail" if required else "skip"
            detail = "; ".join(key_problems) or "registry.yaml lists no trusted_keys"
            results.append(GateResult("signature", model, version, status, f"cannot verify: {detail}", path))
            continue
        try:
            folder = ctx.version_folder(model, version)
            verify_folder(folder, model, version, keys)
        except RegistryError as exc:
            # Name the folder as the registry does, not the temporary copy it may have been read from.
            message = str(exc).replace(str(ctx.version_folder(model, version)), path.rsplit("/", 1)[0])
            results.append(GateResult("signature", model, version, "fail", message, path))
            continue
        results.append(GateResult("signature", model, version, "pass", "signature verifies against a trusted key", path))
    if not results:
        results.append(GateResult("signature", None, None, "skip", "no version to verify"))
    return results

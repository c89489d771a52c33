"""A KServe InferenceService (serving.kserve.io/v1beta1) for a model in a V2 repository (formats/v2.py).

`storage_uri` is where the V2 repository that `write_model` wrote is stored (`s3://bucket/models`,
`gs://…`, `pvc://claim/models`); the model served is `<storage_uri>/<name>/<version>`, the
folder with its `model-settings.json`. With a canary, the InferenceService names the canary
version and `canaryTrafficPercent` (KServe's canary rollout: the new revision gets that share,
the revision rolled out before it the rest), so apply the plain one first to make `version`
that earlier revision. The runtime is a KServe ServingRuntime that runs MLServer with the
model's dependencies (see the docs: the registry's runtime file runs in MLServer).
"""

from __future__ import annotations

import re

from registry.errors import UsageError
from registry.files import yamlio
from registry.files.names import check_model_name, check_version

__all__ = ["MODEL_FORMAT", "inference_service"]

MODEL_FORMAT = "registry"  # the modelFormat a ServingRuntime for these folders declares
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _percent(traffic: float) -> int:
    if isinstance(traffic, bool) or not isinstance(traffic, int | float) or not 0 <= traffic <= 1:
        raise UsageError(f"canary traffic {traffic!r}: give a share between 0 and 1")
    return round(traffic * 100)


def inference_service(name: str, version: str, storage_uri: str, *, canary_version: str | None,
                      canary_traffic: float | None, runtime: str = "mlserver") -> str:
    """The InferenceService YAML serving `name@version`, or its canary at `canary_traffic` (0..1)."""
    check_model_name(name)
    check_version(version)
    if not _DNS_1035.fullmatch(name):
        raise UsageError(f"model {name!r}: a KServe InferenceService name must start with a letter "
                         "and end with a letter or digit (DNS-1035); serve it under another name")
    if not storage_uri.strip() or any(c.isspace() for c in storage_uri):
        raise UsageError(f"storage URI {storage_uri!r}: give the URI of the V2 repository (s3://bucket/models)")
    if (canary_version is None) != (canary_traffic is None):
        raise UsageError("a canary needs both its version and its traffic share")
    served = version
    labels = {"registry.model": name, "registry.version": version}
    predictor: dict[str, object] = {}
    if canary_version is not None and canary_traffic is not None:
        check_version(canary_version)
        predictor["canaryTrafficPercent"] = _percent(canary_traffic)
        labels["registry.canary-version"] = served = canary_version
    root = storage_uri.rstrip("/")
    predictor["model"] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": runtime,
        "protocolVersion": "v2",
        "storageUri": f"{root}/{name}/{served}",
    }
    document = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": labels},
        "spec": {"predictor": predictor},
    }
    return yamlio.dumps(document)

"""The TorchServe handler that `build_mar` puts in every `.mar`: it serves a version's own `predict.py`.

This file runs inside TorchServe's Python worker, not in the registry: it imports only the
standard library. `build_mar` copies it into the archive as `registry_handler.py` beside
the version's files and `registry_model.json` (the card's entrypoint, model and version).

TorchServe calls the module-level `handle(data, context)`: once with `data=None` when the
worker starts (then `load(path)` runs, with the extracted archive, the version folder as
signed, as `path` and first on `sys.path`), then with a batch of requests. Each request
body is the model's input as JSON, exactly what `predict(model, inputs)` gets in the
smoke gate (docs/model-code.md), and each answer is the prediction as JSON (NumPy arrays
and tensors through `.tolist()`, pandas through `.to_numpy()`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

CONFIG_FILE = "registry_model.json"
ENTRYPOINT_MODULE = "registry_entrypoint"

_state: dict[str, Any] = {}


def _model_dir(context: Any) -> str:
    properties = getattr(context, "system_properties", None) or {}
    return str(properties.get("model_dir") or os.path.dirname(os.path.abspath(__file__)))


def _initialize(context: Any) -> None:
    folder = _model_dir(context)
    with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    entry = os.path.realpath(os.path.join(folder, config["entrypoint"]))
    if os.path.dirname(entry) != os.path.realpath(folder):
        raise ValueError(f"entrypoint {config['entrypoint']!r} is not a file of the version folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(ENTRYPOINT_MODULE, entry)
    if spec is None or spec.loader is None:
        raise ImportError(f"{config['entrypoint']} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[ENTRYPOINT_MODULE] = module
    spec.loader.exec_module(module)
    for name in ("load", "predict"):
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"{config['entrypoint']}: {name}() missing (define load(path) and predict(model, inputs))")
    _state.update(config=config, module=module, model=module.load(folder))


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """JSON-ready copy of a prediction (the same conversions as the registry's gates)."""
    if depth > 64:
        raise TypeError("nested more than 64 levels deep")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [to_jsonable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("a dict with non-string keys")
        return {key: to_jsonable(item, depth + 1) for key, item in value.items()}
    for convert in ("tolist", "to_numpy"):
        method = getattr(value, convert, None)
        if callable(method):
            converted = method()
            if convert == "to_numpy":
                converted = converted.tolist()
            if converted is not value:
                return to_jsonable(converted, depth + 1)
    raise TypeError(f"the prediction is not JSON-serialisable: {type(value).__module__}.{type(value).__qualname__}")


def decode(row: Any) -> Any:
    """The input of one request: its JSON body (already decoded by TorchServe for application/json)."""
    body = row.get("body", row.get("data")) if isinstance(row, dict) else row
    if isinstance(body, bytes | bytearray):
        body = json.loads(body.decode("utf-8"))
    return body


def handle(data: Any, context: Any) -> list[Any] | None:
    """TorchServe's entry point: initialise on `data=None`, else one prediction per request."""
    if data is None:
        _initialize(context)
        return None
    if "module" not in _state:
        _initialize(context)
    module, model = _state["module"], _state["model"]
    return [to_jsonable(module.predict(model, decode(row))) for row in data]

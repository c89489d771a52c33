"""The MLServer runtime a V2 model folder ships as `registry_runtime.py`: runs a version's `predict.py`.

This file is copied, byte for byte, into every model folder `formats.v2.write_model` writes,
and is imported by MLServer (its `model-settings.json` says
`"implementation": "registry_runtime.RegistryRuntime"`), in MLServer's own Python: it
imports nothing from the registry, only the standard library and `mlserver`. The registry
imports it too, for the same conversions (`request_body`), without MLServer: the MLModel
subclass is made only when `RegistryRuntime` is first asked for. It keeps to Python 3.9
(MLServer 1.7's oldest): isinstance takes tuples, not `X | Y`.

- `load()` imports the version's entrypoint (`parameters.extra.entrypoint`, below the
  folder `parameters.uri` names) under a module name of its own and calls its
  `load(path)` with the version folder. Helper modules beside `predict.py` are imported
  while the folder is first on `sys.path` and then leave `sys.modules`, so that two
  versions loaded side by side each get their own (import helpers at the top of
  `predict.py`, not inside `predict()`).
- `predict()` turns V2 inputs into what `predict(model, inputs)` takes, as the built-in
  server does: one input -> its `data` reshaped to `shape` as nested lists; several ->
  a dict name -> nested list; a `BYTES` input with `parameters.content_type = "json"` is
  the JSON text of one value. The result becomes V2 outputs: a dict is one output per
  key, anything else one output `output0`; a rectangular array of numbers, booleans or
  strings is `shape` + flat data (FP64, INT64, BOOL, BYTES), anything else one `BYTES`
  element holding its JSON text. `model_version` is the registry version (also for the
  unversioned `current/` folder: `parameters.extra.registry_version`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Mapping
from functools import cache
from typing import Any

__all__ = ["input_value", "output_tensors", "request_body", "tensor"]


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, (list, tuple)):
        return [leaf for item in data for leaf in _flatten(item)]
    return [data]


def _reshape(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def input_value(name: str, shape: list[int], data: Any, parameters: Mapping[str, Any] | None) -> Any:
    """One V2 input as the nested lists (or JSON value) predict gets."""
    flat = _flatten(data)
    if (parameters or {}).get("content_type") == "json":
        if len(flat) != 1:
            raise ValueError(f"input {name!r}: a JSON input holds one element, not {len(flat)}")
        return json.loads(_text(flat[0]))
    if len(flat) != math.prod(shape):
        raise ValueError(f"input {name!r}: shape {shape} holds {math.prod(shape)} values, data has {len(flat)}")
    flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
    return flat[0] if not shape else _reshape(flat, shape)


def jsonable(value: Any) -> Any:
    """What predict returned, as JSON-like values (NumPy/PyTorch `.tolist()`, pandas `.to_numpy()`)."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _shape(value: Any) -> list[int] | None:
    if not isinstance(value, list):
        return None if isinstance(value, Mapping) else []
    if not value:
        return [0]
    inner = [_shape(item) for item in value]
    if inner[0] is None or any(s != inner[0] for s in inner):
        return None
    return [len(value), *inner[0]]


def _datatype(flat: list[Any]) -> str | None:
    if all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "FP64"
    if all(isinstance(v, str) for v in flat):
        return "BYTES"
    return None


def tensor(name: str, value: Any) -> dict[str, Any]:
    """One V2 tensor (`name`, `shape`, `datatype`, `data`) for a JSON-like value."""
    shape = _shape(value)
    if shape is not None:
        flat = _flatten(value)
        datatype = _datatype(flat) if flat else "FP64"
        if datatype is not None:
            return {"name": name, "shape": shape, "datatype": datatype, "data": flat}
    return {"name": name, "shape": [1], "datatype": "BYTES", "data": [json.dumps(value)],
            "parameters": {"content_type": "json"}}


def output_tensors(output: Any) -> list[dict[str, Any]]:
    output = jsonable(output)
    if isinstance(output, Mapping) and output:
        return [tensor(str(key), value) for key, value in output.items()]
    return [tensor("output0", output)]


def described(exc: BaseException, path: str) -> str:
    """`predict.py raised ValueError: bad shape (line 7, in predict)`, as the gates say it."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == os.path.realpath(path):
            where = f" (line {frame.lineno}, in {frame.name})"
    return f"{os.path.basename(path)} raised {type(exc).__name__}: {exc}{where}"


def _import_entrypoint(folder: str, entrypoint: str, label: str) -> tuple[Any, Any]:
    """(what load(folder) returned, predict) of the entrypoint, its helpers kept out of sys.modules."""
    path = os.path.realpath(os.path.join(folder, entrypoint))
    if not path.startswith(os.path.realpath(folder) + os.sep) or not os.path.isfile(path):
        raise ValueError(f"entrypoint {entrypoint!r} is not a file inside {folder}")
    # A module of the same name already imported (another model's helper, or one of the
    # server's own) would answer the entrypoint's `import helper`: set it aside meanwhile.
    own = {entry[:-3] if entry.endswith(".py") else entry for entry in os.listdir(folder)
           if entry.endswith(".py") or os.path.isdir(os.path.join(folder, entry))}
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules)
                if name.split(".", 1)[0] in own}
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(label, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "load", None)) or not callable(getattr(module, "predict", None)):
            raise ValueError(f"{entrypoint} must define load(path) and predict(model, inputs)")
        model = module.load(folder)
    finally:
        sys.path.remove(folder)
        inside = os.path.realpath(folder) + os.sep
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if file and os.path.realpath(file).startswith(inside):
                del sys.modules[name]
        sys.modules.update(shadowed)
    return model, module.predict


def request_body(example: Any) -> dict[str, Any]:
    """The V2 infer body for a card's `input_example`: a map is one input per key, anything else `input0`."""
    if isinstance(example, Mapping) and example:
        return {"inputs": [tensor(str(key), value) for key, value in example.items()]}
    return {"inputs": [tensor("input0", example)]}


@cache
def _runtime_class() -> type:
    """The MLModel subclass, made on first use, so that the registry imports this module without MLServer."""
    from mlserver import MLModel  # type: ignore[import-not-found, unused-ignore]
    from mlserver.errors import MLServerError  # type: ignore[import-not-found, unused-ignore]
    from mlserver.types import InferenceResponse, ResponseOutput  # type: ignore[import-not-found, unused-ignore]
    from mlserver.utils import get_model_uri  # type: ignore[import-not-found, unused-ignore]

    class RegistryRuntime(MLModel):  # type: ignore[misc, unused-ignore]
        """A registry version folder behind MLServer: `load(path)` once, `predict(model, inputs)` per request."""

        async def load(self) -> bool:
            folder = await get_model_uri(self.settings)
            extra = self.settings.parameters.extra or {}
            self._version = self.version or extra.get("registry_version")
            label = "registry_entry_" + re.sub(r"\W", "_", f"{self.name}_{self._version}_{id(self)}")
            self._entrypoint = os.path.join(folder, str(extra.get("entrypoint", "predict.py")))
            try:
                self._model, self._predict = _import_entrypoint(folder, str(extra.get("entrypoint", "predict.py")), label)
            except Exception as exc:
                raise MLServerError(described(exc, self._entrypoint), status_code=500) from exc
            return True

        async def predict(self, payload: Any) -> Any:
            try:
                values = {item.name: input_value(item.name, list(item.shape), item.data.root,
                                                 item.parameters.model_dump() if item.parameters else None)
                          for item in payload.inputs}
            except (ValueError, TypeError) as exc:
                raise MLServerError(str(exc), status_code=400) from exc
            inputs = next(iter(values.values())) if len(values) == 1 else values
            try:
                result = self._predict(self._model, inputs)
            except Exception as exc:
                raise MLServerError(described(exc, self._entrypoint), status_code=500) from exc
            return InferenceResponse(model_name=self.name, model_version=self._version,
                                     outputs=[ResponseOutput(**t) for t in output_tensors(result)])

    return RegistryRuntime


def __getattr__(name: str) -> Any:
    # MLServer imports `registry_runtime.RegistryRuntime`: the class is made then, with MLServer there.
    if name == "RegistryRuntime":
        return _runtime_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Open Inference Protocol (V2) bodies <-> the JSON a model's `predict(model, inputs)` takes and returns.

Requests (`POST /v2/models/{m}/infer`), `{"inputs": [...]}`:

- V2 tensors: a non-empty list of objects that each have `name` and `data` (and `shape`,
  `datatype`). One tensor: predict gets its `data` reshaped to `shape` as nested lists
  (data may be flat, row-major, or already nested). Several: a dict name -> nested list.
- anything else under `inputs` (`{"inputs": [[0.1, 0.2]]}`, a map, a string) is handed
  to predict as it is: the card's `input_example` form, so that a client that already
  speaks the model's own JSON needs no V2 wrapping.

Responses: `{"model_name", "model_version", "outputs": [...]}`. A dict returned by
predict is one output per key; anything else is one output named `output0`. A
rectangular array of numbers, booleans or strings becomes `shape` + flat row-major
`data` with FP64/INT64/BOOL/BYTES; anything else (ragged lists, nested maps) is one
`BYTES` element holding its JSON text, with `"parameters": {"content_type": "json"}`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["BadRequest", "model_inputs", "outputs"]


class BadRequest(ValueError):
    """The body is not an inference request; the message says what is wrong."""


def _is_tensor(item: Any) -> bool:
    return isinstance(item, Mapping) and "name" in item and "data" in item


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [leaf for item in data for leaf in _flatten(item)]
    return [data]


def _reshape(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0]
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _tensor_value(tensor: Mapping[str, Any]) -> Any:
    name, data, shape = tensor["name"], tensor["data"], tensor.get("shape")
    if shape is None:
        return data
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    flat = _flatten(data)
    if len(flat) != math.prod(shape):
        raise BadRequest(f"input {name!r}: shape {shape} holds {math.prod(shape)} values, data has {len(flat)}")
    if not shape:  # a scalar
        return flat[0]
    return _reshape(flat, shape)


def model_inputs(body: Any) -> Any:
    """What predict gets for a request body (see the module docstring)."""
    if not isinstance(body, Mapping) or "inputs" not in body:
        raise BadRequest('the body must be a JSON object with "inputs" (V2 tensors, or the model\'s own JSON)')
    inputs = body["inputs"]
    if isinstance(inputs, list) and inputs and all(_is_tensor(item) for item in inputs):
        if len(inputs) == 1:
            return _tensor_value(inputs[0])
        names = [str(item["name"]) for item in inputs]
        if len(set(names)) != len(names):
            raise BadRequest("two inputs have the same name")
        return {str(item["name"]): _tensor_value(item) for item in inputs}
    return inputs


def _shape(value: Any) -> list[int] | None:
    """The shape of a rectangular nested list, or None when ragged or holding maps."""
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
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        return "FP64"
    if all(isinstance(v, str) for v in flat):
        return "BYTES"
    return None


def _output(name: str, value: Any) -> dict[str, Any]:
    shape = _shape(value)
    if shape is not None:
        flat = _flatten(value)
        datatype = _datatype(flat) if flat else "FP64"
        if datatype is not None:
            return {"name": name, "shape": shape, "datatype": datatype, "data": flat}
    return {"name": name, "shape": [1], "datatype": "BYTES", "data": [json.dumps(value)],
            "parameters": {"content_type": "json"}}


def outputs(output: Any) -> list[dict[str, Any]]:
    """The V2 `outputs` list for what predict returned."""
    if isinstance(output, Mapping) and output:
        return [_output(str(key), value) for key, value in output.items()]
    return [_output("output0", output)]

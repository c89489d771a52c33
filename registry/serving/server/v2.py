"""Open Inference Protocol (V2) bodies <-> the JSON a model's `predict(model, inputs)` takes and returns.

The tensor conversions are `registry.serving.formats.v2_runtime`'s, the module the V2 adapter
ships into MLServer's model folders: the built-in server and MLServer answer alike.

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

from collections.abc import Mapping
from typing import Any

from registry.serving.formats.v2_runtime import input_value, output_tensors

__all__ = ["BadRequest", "model_inputs", "outputs"]


class BadRequest(ValueError):
    """The body is not an inference request; the message says what is wrong."""


def _is_tensor(item: Any) -> bool:
    return isinstance(item, Mapping) and "name" in item and "data" in item


def _tensor_value(tensor: Mapping[str, Any]) -> Any:
    name, data, shape = tensor["name"], tensor["data"], tensor.get("shape")
    if shape is None:
        return data
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    parameters = tensor.get("parameters")
    try:
        return input_value(str(name), shape, data, parameters if isinstance(parameters, Mapping) else None)
    except ValueError as exc:  # a count that does not fit the shape, or JSON text that is not JSON
        raise BadRequest(str(exc)) from None


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


def outputs(output: Any) -> list[dict[str, Any]]:
    """The V2 `outputs` list for what predict returned."""
    return output_tensors(output)

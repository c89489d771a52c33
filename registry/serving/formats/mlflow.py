"""A version folder as an MLflow pyfunc model: `mlflow.pyfunc.load_model(out).predict(...)` runs its entrypoint.

The layout MLflow's python_function flavor loads (mlflow/pyfunc/__init__.py, `load_model`):

    out/MLmodel                     flavors.python_function: loader_module, code, data, env, python_version;
                                    signature and saved_input_example_info from the card; metadata
    out/code/registry_pyfunc_<id>.py   the loader module (registry/serving/formats/pyfunc_loader.py); <id>
                                    from its bytes: MLflow imports a module name once per process
    out/code/registry_pyfunc.json   its settings: model, version, entrypoint, the input example's shape
    out/data/                       the version folder: card.yaml, the artifacts, signature.json
    out/requirements.txt            the card's `environment` file, verbatim (when it names one)
    out/python_env.yaml             for `mlflow models serve --env-manager virtualenv`
    out/input_example.json, out/serving_input_example.json   the card's input_example (when present)

Code-based (`loader_module`), not a pickled `python_model`: nothing is cloudpickled, so the
model loads with any MLflow 2 or 3 and any Python that runs the version's own code.
The output appears whole or not at all: it is built in a temp folder beside `out`, then renamed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files import yamlio

LOADER_SOURCE = Path(__file__).with_name("pyfunc_loader.py")
SETTINGS_FILE = "registry_pyfunc.json"
CODE_DIR = "code"
DATA_DIR = "data"
EXAMPLE_FILE = "input_example.json"
SERVING_EXAMPLE_FILE = "serving_input_example.json"

# MLflow's column types (mlflow.types.DataType), and the NumPy names a card may use for them.
COLUMN_TYPES = {name: name for name in ("boolean", "integer", "long", "float", "double", "string",
                                        "binary", "datetime")} | {
    "bool": "boolean", "int32": "integer", "int64": "long", "float32": "float", "float64": "double",
    "str": "string", "bytes": "binary"}
# Tensor element types (a spec with a `shape`): NumPy dtype names, and MLflow's column names for them.
TENSOR_TYPES = {"boolean": "bool", "integer": "int32", "long": "int64", "float": "float32", "double": "float64",
                "string": "str", "binary": "bytes"} | {
    name: name for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                            "float16", "float32", "float64", "str", "bytes", "object")}


class ExportError(RegistryError):
    """A version cannot be written in the asked format; the message says why and what to do."""


def write_pyfunc(folder: Path, card: Mapping[str, Any], out: Path, *, name: str, version: str) -> Path:
    """Write the version in `folder` (verified, never changed) as an MLflow pyfunc model folder at `out`.

    `out` must be missing or an empty folder. Returns `out`.
    """
    entrypoint = card.get("entrypoint")
    if not entrypoint:
        raise ExportError(f"{name}@{version}: the card names no entrypoint; an MLflow pyfunc model runs "
                          "the version's predict.py (docs/model-code.md): register a version with one")
    if not (folder / str(entrypoint)).is_file():
        raise ExportError(f"{name}@{version}: the entrypoint {entrypoint} is not in the version folder")
    environment = card.get("environment")
    if environment and not (folder / str(environment)).is_file():
        raise ExportError(f"{name}@{version}: the environment {environment} is not in the version folder")
    signature = _signature(card.get("signature"), f"{name}@{version}")
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _copy_folder(folder, building / DATA_DIR)
        code = building / CODE_DIR
        code.mkdir()
        source = LOADER_SOURCE.read_bytes()
        loader_module = f"registry_pyfunc_{hashlib.sha256(source).hexdigest()[:12]}"
        (code / f"{loader_module}.py").write_bytes(source)
        example = card.get("input_example")
        settings = {"name": name, "version": version, "entrypoint": str(entrypoint),
                    "example_shape": example_shape(example)}
        (code / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        flavor: dict[str, Any] = {"loader_module": loader_module, "code": CODE_DIR, "data": DATA_DIR,
                                  "env": {"virtualenv": "python_env.yaml"},
                                  "python_version": platform.python_version()}
        dependencies = []
        if environment:
            shutil.copyfile(folder / str(environment), building / "requirements.txt")
            dependencies = ["-r requirements.txt"]
        (building / "python_env.yaml").write_text(yamlio.dumps(
            {"python": platform.python_version(), "build_dependencies": ["pip"], "dependencies": dependencies}),
            encoding="utf-8")
        mlmodel: dict[str, Any] = {
            "artifact_path": DATA_DIR,
            "flavors": {"python_function": flavor},
            "metadata": {"registry.name": name, "registry.version": version},
            "model_uuid": uuid.uuid4().hex,
            "utc_time_created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
        if signature is not None:
            mlmodel["signature"] = signature
        if example is not None:
            # MLflow 3's layout: the example as JSON; "ndarray" (read back as arrays of the signature's
            # dtypes, all a tensor signature accepts) for tensor inputs, else "json_object" (as it is).
            tensors = signature is not None and '"tensor-spec"' in str(signature["inputs"])
            (building / EXAMPLE_FILE).write_text(json.dumps(example), encoding="utf-8")
            (building / SERVING_EXAMPLE_FILE).write_text(json.dumps({"inputs": example}, indent=2), encoding="utf-8")
            mlmodel["saved_input_example_info"] = {"artifact_path": EXAMPLE_FILE,
                                                   "type": "ndarray" if tensors else "json_object",
                                                   "serving_input_path": SERVING_EXAMPLE_FILE}
        (building / "MLmodel").write_text(yamlio.dumps(mlmodel), encoding="utf-8")
        publish(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out


def check_out(out: Path) -> None:
    """Refuse an output that exists and is not an empty folder (nothing is ever overwritten)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: the folder is not empty; give a new or empty folder "
                         "(nothing is overwritten)")


def publish(building: Path, out: Path) -> None:
    """Rename a finished folder onto `out` (missing or empty): one rename, whole or not at all."""
    try:
        os.replace(building, out)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot be written ({exc.strerror}); give a new or empty folder") from None


def example_shape(example: Any) -> str | None:
    """How an input example is laid out, for the loader to hand predict() the same shape back."""
    if isinstance(example, Mapping):
        return "columns" if any(isinstance(v, list) for v in example.values()) else "mapping"
    if isinstance(example, list) and example:
        if all(isinstance(v, Mapping) for v in example):
            return "records"
        if all(isinstance(v, list) for v in example):
            return "rows"
        return "values"
    return None


def _signature(spec: Any, ref: str) -> dict[str, str | None] | None:
    """The card's `signature` as MLmodel's: `inputs`/`outputs` as JSON strings of MLflow column or tensor specs."""
    if not spec:
        return None
    result: dict[str, str | None] = {"inputs": None, "outputs": None, "params": None}
    for side in ("inputs", "outputs"):
        entries = spec.get(side)
        if entries:
            specs = [_spec(entry, f"{ref}: card.yaml signature.{side}[{i}]") for i, entry in enumerate(entries)]
            if len({"tensor-spec" in s for s in specs}) > 1:
                raise ExportError(f"{ref}: card.yaml signature.{side} mixes tensors (with a shape) and columns "
                                  "(without); MLflow takes one kind per side")
            if side == "inputs" and len(specs) == 1 and "tensor-spec" in specs[0]:
                del specs[0]["name"]  # one tensor: MLflow then takes a bare array (a name asks for a map)
            result[side] = json.dumps(specs)
    return result if result["inputs"] else None


def _spec(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    kind = str(entry["type"])
    if "shape" in entry:
        dtype = TENSOR_TYPES.get(kind)
        if dtype is None:
            raise ExportError(f"{where}: type {kind!r} is not a tensor type MLflow knows; use one of "
                              f"{', '.join(sorted(set(TENSOR_TYPES.values())))}")
        shape = [-1 if n is None else n for n in entry["shape"]]
        return {"name": entry["name"], "type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}
    column = COLUMN_TYPES.get(kind)
    if column is None:
        raise ExportError(f"{where}: type {kind!r} is not a column type MLflow knows; use one of "
                          f"{', '.join(sorted(set(COLUMN_TYPES.values())))} (or give a shape for a tensor)")
    return {"name": entry["name"], "type": column, "required": True}


def _copy_folder(folder: Path, dest: Path) -> None:
    """Copy the version's regular files; a symlink (never in a verified folder) is refused."""
    dest.mkdir(parents=True)
    for source in sorted(folder.rglob("*")):
        relative = source.relative_to(folder)
        if source.is_symlink():
            raise ExportError(f"{folder}: {relative.as_posix()} is a symlink; refused")
        target = dest / relative
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

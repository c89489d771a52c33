"""The MLflow `loader_module` that `registry export --format mlflow` ships as `code/registry_pyfunc.py`.

MLflow's python_function flavor loads a model by importing the module the MLmodel file names
and calling its `_load_pyfunc(data_path)`; the object returned answers `predict(model_input,
params=None)`. This module is that loader for a registry version: it imports the version's
entrypoint (docs/model-code.md: `load(path)` and `predict(model, inputs)`) from `data/` (the
version folder, first on `sys.path` as the gates run it) and hands `predict` its inputs in the
shape of the card's `input_example` (MLflow turns inputs into a pandas DataFrame when the
signature has named columns; that is turned back here).

It is copied into exported models and runs where only MLflow is installed: standard library
only, nothing from `registry`. Its settings are `code/registry_pyfunc.json` of the model being
loaded, found from `data_path` (not from this module's `__file__`: MLflow imports a loader module
once per process, so a second exported model would otherwise read the first one's settings).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any

SETTINGS_FILE = "registry_pyfunc.json"


def _load_pyfunc(data_path: str, model_config: Any = None) -> RegistryModel:
    """MLflow's entry point (python_function flavor, `loader_module`): the version's model, loaded."""
    settings = json.loads((Path(data_path).parent / "code" / SETTINGS_FILE).read_text(encoding="utf-8"))
    return RegistryModel(Path(data_path), settings)


class RegistryModel:
    """A version's entrypoint behind MLflow's pyfunc interface."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.name = str(settings.get("name", ""))
        self.version = str(settings.get("version", ""))
        self.example_shape = settings.get("example_shape")
        folder = folder.resolve()
        entrypoint = folder / str(settings["entrypoint"])
        if entrypoint.parent != folder or not entrypoint.is_file():
            raise FileNotFoundError(f"{self.name}@{self.version}: no entrypoint {settings['entrypoint']!r} in {folder}")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))  # files beside predict.py import, as in the gates
        # A name of its own: two exported models in one process never share a module.
        spec = importlib.util.spec_from_file_location(f"_registry_entrypoint_{uuid.uuid4().hex}", entrypoint)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {entrypoint}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._predict = module.predict
        self._model = module.load(str(folder))

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        return self._predict(self._model, as_example(model_input, self.example_shape))


def as_example(data: Any, shape: Any) -> Any:
    """A pandas DataFrame back in the shape of the card's input_example; anything else as it is.

    shape: "mapping" (one map of scalars), "columns" (a map of lists), "records" (a list of
    maps), "values" (a list of scalars) or "rows" (a list of lists, the default).
    """
    if not (hasattr(data, "columns") and hasattr(data, "to_dict") and hasattr(data, "to_numpy")):
        return data
    if shape == "mapping" and len(data) == 1:
        return data.to_dict(orient="records")[0]
    if shape in ("mapping", "columns"):
        return data.to_dict(orient="list")
    if shape == "records":
        return data.to_dict(orient="records")
    if shape == "values" and len(data.columns) == 1:
        return data.iloc[:, 0].tolist()
    return data.to_numpy().tolist()

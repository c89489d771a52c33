"""The metrics gate's side of the runner: a model's predictions on a pinned evaluation set, scored here.

The metrics are computed in this process from the model's raw predictions against the
pinned labels; numbers the model's code might report are never read.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.runner.run import Status, entrypoint_problem, no_environment_hint, run_child
from registry.runner.sandbox import with_notes

__all__ = ["METRICS", "EvalResult", "MetricError", "compute_metrics", "evaluate"]

Label = int | float | str
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class EvalResult:
    status: Status
    message: str
    metrics: dict[str, float]


class MetricError(ValueError):
    """Labels or predictions that a metric cannot be computed on."""


def _canonical(label: Any) -> Label:
    """One spelling per class: True, 1 and 1.0 are the same label."""
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if isinstance(label, int | float | str):
        return label
    raise MetricError(f"a label must be a number or a string, got {type(label).__name__}")


def _is_binary(y_true: Sequence[Label], y_pred: Sequence[Label]) -> bool:
    return set(y_true) | set(y_pred) <= {0, 1}


def _per_class(y_true: Sequence[Label], y_pred: Sequence[Label], cls: Label) -> tuple[float, float, float]:
    tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == cls and p == cls)
    fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != cls and p == cls)
    fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == cls and p != cls)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _classes(y_true: Sequence[Label], y_pred: Sequence[Label]) -> list[Label]:
    return sorted(set(y_true) | set(y_pred), key=lambda c: (isinstance(c, str), str(c)))


def _macro(index: int) -> Callable[[Sequence[Label], Sequence[Label]], float]:
    def metric(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
        scores = [_per_class(y_true, y_pred, c)[index] for c in _classes(y_true, y_pred)]
        return sum(scores) / len(scores)

    return metric


def _auto(index: int) -> Callable[[Sequence[Label], Sequence[Label]], float]:
    def metric(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
        if _is_binary(y_true, y_pred):
            return _per_class(y_true, y_pred, 1)[index]
        return _macro(index)(y_true, y_pred)

    return metric


def _accuracy(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    return sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p) / len(y_true)


def _numeric(y_true: Sequence[Label], y_pred: Sequence[Label]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if any(isinstance(v, str) for v in (*y_true, *y_pred)):
        raise MetricError("regression metrics need numeric labels and predictions")
    return np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)


def _mae(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    t, p = _numeric(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def _mse(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    t, p = _numeric(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def _rmse(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    return math.sqrt(_mse(y_true, y_pred))


def _r2(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    t, p = _numeric(y_true, y_pred)
    total = float(np.sum((t - t.mean()) ** 2))
    if total == 0:
        raise MetricError("r2 is undefined when every label is the same")
    return 1.0 - float(np.sum((t - p) ** 2)) / total


# precision/recall/f1 are those of class 1 when every label and prediction is 0 or 1
# (bools and 0.0/1.0 count), the unweighted mean over classes (macro, the classes
# being those in labels or predictions) otherwise; `*_macro` is always the macro
# mean. A class never predicted has precision 0 (as scikit-learn's zero_division=0).
METRICS: dict[str, Callable[[Sequence[Label], Sequence[Label]], float]] = {
    "accuracy": _accuracy,
    "precision": _auto(0),
    "recall": _auto(1),
    "f1": _auto(2),
    "precision_macro": _macro(0),
    "recall_macro": _macro(1),
    "f1_macro": _macro(2),
    "mae": _mae,
    "mse": _mse,
    "rmse": _rmse,
    "r2": _r2,
}


def compute_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
    """The named metrics of predictions against labels. Raises MetricError."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise MetricError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    if len(y_true) != len(y_pred):
        raise MetricError(f"{len(y_pred)} predictions for {len(y_true)} labels")
    if not y_true:
        raise MetricError("no labels")
    truth = [_canonical(v) for v in y_true]
    predicted = [_canonical(v) for v in y_pred]
    return {name: METRICS[name](truth, predicted) for name in names}


@dataclass(frozen=True)
class _EvalSet:
    inputs_file: Path  # an .npz the child reads with allow_pickle=False
    inputs_key: str
    labels: list[Any]


_INTEGER = re.compile(r"[+-]?\d+")


def _csv_label(text: str) -> Label:
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _load_npz(data_file: Path) -> _EvalSet:
    try:
        with np.load(data_file, allow_pickle=False) as data:
            missing = [key for key in ("x", "y") if key not in data.files]
            if missing:
                raise MetricError(f"{data_file.name} has no array {' or '.join(missing)} (needs x and y)")
            x_shape, y = data["x"].shape, data["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, MetricError):
            raise
        raise MetricError(f"{data_file.name} is not a readable .npz without pickles: {exc}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise MetricError(f"{data_file.name}: y must be one label per example, has shape {y.shape}")
    if not x_shape or x_shape[0] != len(y):
        raise MetricError(f"{data_file.name}: x has shape {x_shape} for {len(y)} labels in y")
    return _EvalSet(data_file, "x", y.tolist())


def _load_csv(data_file: Path, scratch: Path) -> _EvalSet:
    try:
        with data_file.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MetricError(f"{data_file.name} cannot be read as CSV: {exc}") from None
    if not rows or LABEL_COLUMN not in [name.strip() for name in rows[0]]:
        raise MetricError(f"{data_file.name} has no {LABEL_COLUMN!r} column in its header")
    header = [name.strip() for name in rows[0]]
    label_at = header.index(LABEL_COLUMN)
    if len(header) < 2:
        raise MetricError(f"{data_file.name} has no feature columns beside {LABEL_COLUMN!r}")
    features: list[list[float]] = []
    labels: list[Label] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise MetricError(f"{data_file.name}:{line}: {len(row)} fields, the header has {len(header)}")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError as exc:
            raise MetricError(f"{data_file.name}:{line}: features must be numbers: {exc}") from None
        labels.append(_csv_label(row[label_at]))
    if not labels:
        raise MetricError(f"{data_file.name} has no rows")
    inputs = scratch / "inputs.npz"
    np.savez(inputs, x=np.asarray(features, dtype=np.float64))
    return _EvalSet(inputs, "x", labels)


def _predictions(raw: Any, count: int) -> list[Any]:
    if not isinstance(raw, list):
        kind = "null" if raw is None else type(raw).__name__
        raise MetricError(f"predict() returned a single {kind}; expected {count} labels, one per example")
    if len(raw) != count:
        raise MetricError(f"predict() returned {len(raw)} predictions for {count} examples")
    flat: list[Any] = []
    for item in raw:
        if isinstance(item, list):
            if len(item) != 1:
                raise MetricError(
                    f"predict() returned {len(item)} values per example; expected one label per example"
                )
            item = item[0]
        if isinstance(item, list | dict) or item is None:
            raise MetricError(f"predict() returned {json.dumps(item)[:50]} as a label; expected a number or a string")
        flat.append(item)
    return flat


def evaluate(
    folder: Path, entrypoint: str | None, data_file: Path, metric_names: list[str], timeout_s: float,
    python: Path | None = None,
) -> EvalResult:
    """Recompute metrics on a pinned evaluation set from the model's own predictions.

    `data_file` is an `.npz` with arrays `x` (inputs, first axis = examples) and `y`
    (labels), or a `.csv` with a header, a `label` column and numeric feature columns.
    `predict(model, x)` is called once with all inputs as a NumPy array (float64 rows
    for a CSV) and must return one label per example (a list or array of length n, or
    shape (n, 1)). The metrics are computed here from those predictions. With `python` (a
    declared environment's interpreter) the child needs NumPy there too, to read the inputs.
    """
    unknown = [name for name in metric_names if name not in METRICS]
    if unknown:
        return EvalResult("fail", f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})", {})
    if entrypoint is None:
        return EvalResult("skip", "the card names no entrypoint", {})
    problem = entrypoint_problem(folder, entrypoint)
    if problem:
        return EvalResult("fail", problem, {})
    if not data_file.is_file():
        return EvalResult("fail", f"evaluation set {data_file} not found", {})
    with tempfile.TemporaryDirectory(prefix="registry-eval-") as scratch:
        try:
            if data_file.suffix == ".npz":
                eval_set = _load_npz(data_file)
            elif data_file.suffix == ".csv":
                eval_set = _load_csv(data_file, Path(scratch))
            else:
                return EvalResult("fail", f"evaluation set {data_file.name}: use .npz (x, y) or .csv (label column)", {})
        except MetricError as exc:
            return EvalResult("fail", str(exc), {})
        request = {
            "mode": "predict_file",
            "folder": str(folder.resolve()),
            "entrypoint": entrypoint,
            "inputs_file": str(eval_set.inputs_file.resolve()),
            "inputs_key": eval_set.inputs_key,
        }
        outcome = run_child(request, timeout_s, python)
    if outcome.reply is None:
        return EvalResult("fail", no_environment_hint(outcome.failure, python) or "no result", {})
    try:
        predictions = _predictions(outcome.reply.get("predictions"), len(eval_set.labels))
        metrics = compute_metrics(eval_set.labels, predictions, metric_names)
    except MetricError as exc:
        return EvalResult("fail", f"{entrypoint}: {exc}", {})
    shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
    message = f"{shown} on {len(predictions)} examples of {data_file.name}, computed from the model's predictions"
    return EvalResult("pass", with_notes(message), metrics)

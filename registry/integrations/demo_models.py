"""The demo's two real models, trained on scikit-learn's bundled digits data set.

v1 is a logistic regression, v2 a small multi-layer perceptron. Both are exported
to safetensors with a NumPy-only entrypoint (no pickle, no scikit-learn needed to
serve), and the hold-out split is saved as an .npz that the registry pins with DVC
so that the metrics gate recomputes accuracy instead of trusting the card.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import UsageError

LOGISTIC_PREDICT = '''\
"""Digits classifier (multinomial logistic regression). NumPy only."""
import numpy as np
from safetensors.numpy import load_file


def load(path):
    return load_file(f"{path}/model.safetensors")


def predict(model, inputs):
    x = np.asarray(inputs, dtype=np.float32) / 16.0
    return np.argmax(x @ model["coef"].T + model["intercept"], axis=1).tolist()
'''

MLP_PREDICT = '''\
"""Digits classifier (one hidden ReLU layer). NumPy only."""
import numpy as np
from safetensors.numpy import load_file


def load(path):
    return load_file(f"{path}/model.safetensors")


def predict(model, inputs):
    x = np.asarray(inputs, dtype=np.float32) / 16.0
    hidden = np.maximum(x @ model["w0"] + model["b0"], 0.0)
    return np.argmax(hidden @ model["w1"] + model["b1"], axis=1).tolist()
'''


@dataclass(frozen=True)
class Trained:
    label: str
    algorithm: str
    tensors: dict[str, np.ndarray]
    predict_source: str
    accuracy: float
    hyperparameters: dict[str, Any]


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise UsageError("the demo trains its models with scikit-learn: pip install 'gitops-registry[demo]'") from None
    return sklearn


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and hold-out splits of the 8x8 digits (1797 images, bundled with scikit-learn)."""
    _sklearn()
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _c_order(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """safetensors writes an array's memory as it lies: scikit-learn's Fortran-ordered
    coefficients would be read back transposed, so export C-ordered copies."""
    return {name: np.ascontiguousarray(value) for name, value in tensors.items()}


def _accuracy(predict_source: str, tensors: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the exported model through its own entrypoint code, on the bytes serving will load."""
    from safetensors.numpy import load, save

    tensors = load(save(tensors))
    namespace: dict[str, Any] = {}
    exec(compile(predict_source, "predict.py", "exec"), namespace)  # our own source, not user input
    return float(np.mean(np.asarray(namespace["predict"](tensors, x)) == y))


def train_logistic(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Trained:
    _sklearn()
    from sklearn.linear_model import LogisticRegression

    params = {"C": 0.02, "max_iter": 100}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(**params).fit(x / 16.0, y)
    tensors = _c_order({"coef": model.coef_.astype(np.float32), "intercept": model.intercept_.astype(np.float32)})
    return Trained("v1", "logistic-regression", tensors, LOGISTIC_PREDICT,
                   _accuracy(LOGISTIC_PREDICT, tensors, x_test, y_test), params)


def train_mlp(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Trained:
    _sklearn()
    from sklearn.neural_network import MLPClassifier

    hidden = 64
    params: dict[str, Any] = {"hidden_layer_sizes": [hidden], "max_iter": 200, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=200, random_state=0).fit(x / 16.0, y)
    tensors = _c_order({"w0": model.coefs_[0].astype(np.float32), "b0": model.intercepts_[0].astype(np.float32),
                        "w1": model.coefs_[1].astype(np.float32), "b1": model.intercepts_[1].astype(np.float32)})
    return Trained("v2", "mlp", tensors, MLP_PREDICT, _accuracy(MLP_PREDICT, tensors, x_test, y_test), params)


def write_holdout(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)

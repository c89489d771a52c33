"""The model runner: real child processes on real model folders, nothing mocked."""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.runner.metrics import MetricError, compute_metrics, evaluate
from registry.runner.run import (
    OUTPUT_CAP_BYTES,
    RunResult,
    latency,
    onnx_smoke,
    percentile,
    smoke,
)

WEIGHTS = np.array([[1.0], [-2.0], [0.5]], dtype=np.float32)

LINEAR = """\
import numpy as np
from safetensors.numpy import load_file


def load(path):
    return load_file(f"{path}/model.safetensors")


def predict(model, inputs):
    return np.asarray(inputs, dtype=np.float32) @ model["w"] + model["b"]
"""

CLASSIFIER = """\
import numpy as np
from safetensors.numpy import load_file


def load(path):
    return load_file(f"{path}/model.safetensors")


def predict(model, inputs):
    scores = np.asarray(inputs, dtype=np.float32) @ model["w"] + model["b"]
    return (scores[:, 0] > 0).astype(np.int64)
"""


def model_folder(tmp_path: Path, code: str, name: str = "predict.py") -> Path:
    folder = tmp_path / "models" / "credit" / "1.0.0"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": WEIGHTS, "b": np.array([0.25], dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / name).write_text(textwrap.dedent(code), encoding="utf-8")
    return folder


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie waiting for init to reap it is dead too
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- smoke -------------------------------------------------------------------------


def test_smoke_runs_a_safetensors_linear_model(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, LINEAR)
    result = smoke(folder, "predict.py", [[1.0, 1.0, 2.0]], timeout_s=30)
    assert result.status == "pass", result.message
    assert json.loads(result.output_preview or "") == [[0.25]]  # 1 - 2 + 1 + 0.25
    assert result.seconds > 0
    assert not (folder / "__pycache__").exists()  # the version folder is left as it was


def test_smoke_names_the_exception_and_the_line_of_the_users_file(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, """\
        def load(path):
            return None


        def predict(model, inputs):
            raise ValueError("expected 8 features, got 3")
        """)
    result = smoke(folder, "predict.py", [1, 2, 3], timeout_s=30)
    assert result.status == "fail"
    assert result.message == "predict.py raised ValueError: expected 8 features, got 3 (line 6, in predict)"


def test_smoke_reports_the_line_that_called_into_a_library(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, """\
        import numpy as np

        def load(path):
            return np.zeros((2, 2))

        def predict(model, inputs):
            return model @ np.asarray(inputs)
        """)
    result = smoke(folder, "predict.py", [1, 2, 3], timeout_s=30)
    assert result.status == "fail"
    assert result.message.startswith("predict.py raised ValueError: matmul")
    assert result.message.endswith("(line 7, in predict)")


def test_smoke_reports_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "def load(path):\n    return 1\n\ndef predict(model, inputs)\n    pass\n")
    result = smoke(folder, "predict.py", [1], timeout_s=30)
    assert result.status == "fail"
    assert result.message.startswith("predict.py raised SyntaxError")
    assert "(line 4" in result.message


def marked_processes(marker: str) -> list[tuple[int, int]]:
    """(pid, parent pid) of the live processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode("utf-8", "replace") and is_alive(int(entry.name)):
                    found.append((int(entry.name), int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])))
            except (OSError, IndexError, ValueError):
                continue
    return found


def test_smoke_times_out_and_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The child may write nowhere the test can read: the test finds the helper it starts
    # (and the child, the helper's parent) by a marker on the helper's command line.
    marker = f"registry-test-helper-{os.getpid()}-{tmp_path.name}"
    folder = model_folder(tmp_path, f"""\
        import subprocess, sys, time

        def load(path):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
            return None

        def predict(model, inputs):
            time.sleep(10)
        """)
    results: list[RunResult] = []
    running = threading.Thread(target=lambda: results.append(smoke(folder, "predict.py", [1], timeout_s=1)))
    running.start()
    seen: list[tuple[int, int]] = []
    while not seen and running.is_alive():
        seen = marked_processes(marker)
        time.sleep(0.01)
    running.join()
    result = results[0]
    assert result.status == "fail"
    assert result.message == "timed out after 1 s"
    assert len(seen) == 1, "the helper was seen running"
    helper, child = seen[0]
    assert not is_alive(child)
    deadline = time.monotonic() + 5  # the helper is reaped by init, not by us
    while is_alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(helper)


def test_smoke_child_sees_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    folder = model_folder(tmp_path, """\
        import os, sys

        def load(path):
            return None

        def predict(model, inputs):
            return {
                "leaked": sorted(k for k in os.environ if k.startswith(("AWS", "GIT", "PYTHONPATH"))),
                "home_is_cwd": os.environ["HOME"] == os.getcwd(),
                "cwd": os.getcwd(),
                "user_site": sys.flags.no_user_site,
                "hash": hash("abc"),
                "stdin": sys.stdin.read() if sys.stdin else None,
            }
        """)
    first = smoke(folder, "predict.py", [1], timeout_s=30)
    second = smoke(folder, "predict.py", [1], timeout_s=30)
    assert first.status == "pass", first.message
    seen = json.loads(first.output_preview or "")
    assert seen["leaked"] == []
    assert seen["home_is_cwd"] is True
    assert not seen["cwd"].startswith(str(tmp_path)) and seen["cwd"] != os.environ["HOME"]
    assert seen["user_site"] == 1
    assert seen["stdin"] == ""
    assert json.loads(second.output_preview or "")["hash"] == seen["hash"]  # PYTHONHASHSEED=0
    assert "hunter2" not in first.message + (first.output_preview or "")


def test_smoke_result_survives_junk_on_stdout_and_stderr(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, """\
        import sys

        def load(path):
            print('{"ok": false, "error": "forged"}')
            return None

        def predict(model, inputs):
            sys.stdout.write("x" * 1_000_000)
            sys.stderr.write("noise\\n" * 100_000)
            print(b"\\xff\\xfe")
            return [1, 2]
        """)
    result = smoke(folder, "predict.py", [1], timeout_s=30)
    assert result.status == "pass", result.message
    assert result.output_preview == "[1, 2]"
    assert OUTPUT_CAP_BYTES < 1_000_000


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import os\ndef load(path):\n    os._exit(3)\ndef predict(model, inputs):\n    pass\n",
         "exited with code 3 before reporting a result"),
        ("import os, signal\ndef load(path):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
         "def predict(model, inputs):\n    pass\n",
         "killed by signal 9 (out of memory?)"),
        ("import sys\ndef load(path):\n    sys.exit(4)\ndef predict(model, inputs):\n    pass\n",
         "predict.py called sys.exit(4) (line 3, in load)"),
        ("def predict(model, inputs):\n    return 1\n",
         "predict.py: load() missing (define load(path))"),
        ("def load(path):\n    return 1\n",
         "predict.py: predict() missing (define predict(model, inputs))"),
        ("def load(path):\n    return 1\ndef predict(model, inputs):\n    return object()\n",
         "predict(): output is not JSON-serialisable (got builtins.object)"),
    ],
    ids=["os-exit", "sigkill", "sys-exit", "no-load", "no-predict", "unserialisable"],
)
def test_smoke_failures_say_what_happened(tmp_path: Path, code: str, message: str) -> None:
    folder = model_folder(tmp_path, code)
    result = smoke(folder, "predict.py", [1], timeout_s=30)
    assert result.status == "fail"
    assert result.message == message


def test_smoke_accepts_numpy_outputs_and_refuses_bad_entrypoints(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, """\
        import numpy as np
        def load(path):
            return None
        def predict(model, inputs):
            return {"labels": np.arange(3), "score": np.float32(0.5), "pair": (1, "a")}
        """)
    result = smoke(folder, "predict.py", [1], timeout_s=30)
    assert result.status == "pass", result.message
    assert json.loads(result.output_preview or "") == {"labels": [0, 1, 2], "score": 0.5, "pair": [1, "a"]}

    assert smoke(folder, "missing.py", [1], 30).message.startswith("entrypoint missing.py not found")
    assert "inside the version folder" in smoke(folder, "../predict.py", [1], 30).message
    assert smoke(folder, None, [1], 30).status == "skip"
    assert smoke(folder, "predict.py", None, 30).status == "skip"


def test_onnx_smoke_skips_without_onnxruntime(tmp_path: Path) -> None:
    if __import__("importlib").util.find_spec("onnxruntime") is not None:
        pytest.skip("onnxruntime is installed here")
    (tmp_path / "model.onnx").write_bytes(b"not really")
    result = onnx_smoke(tmp_path, "model.onnx", [[1.0]], timeout_s=30)
    assert (result.status, result.message) == ("skip", "onnxruntime not installed")


def test_onnx_smoke_runs_a_model_with_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(tmp_path / "model.onnx"))
    result = onnx_smoke(tmp_path, "model.onnx", [[1.0, 2.5]], timeout_s=30)
    assert result.status == "pass", result.message
    assert json.loads(result.output_preview or "") == {"y": [[2.0, 5.0]]}
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert onnx_smoke(tmp_path, "broken.onnx", [[1.0, 2.5]], timeout_s=30).status == "fail"


# --- latency -----------------------------------------------------------------------


def test_latency_measures_each_predict_call(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, """\
        import time
        def load(path):
            time.sleep(0.3)  # loading is not timed
            return None
        def predict(model, inputs):
            time.sleep(0.005)
            return 0
        """)
    result = latency(folder, "predict.py", [1], runs=10, timeout_s=30)
    assert result.status == "pass", result.message
    assert result.runs == 10
    assert result.p50_ms is not None and result.p99_ms is not None
    assert 5 <= result.p50_ms <= result.p99_ms < 300


def test_latency_reports_a_failing_model(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "def load(path):\n    return 1\ndef predict(model, inputs):\n    return 1 / 0\n")
    result = latency(folder, "predict.py", [1], runs=5, timeout_s=30)
    assert (result.status, result.p50_ms, result.runs) == ("fail", None, 0)
    assert result.message == "predict.py raised ZeroDivisionError: division by zero (line 4, in predict)"


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([3, 1, 2], 99) == 3
    assert percentile([7], 50) == 7
    for p in (50, 90, 99):
        sample = [5, 1, 9, 3, 3, 8, 2]
        assert percentile(sample, p) == np.percentile(sample, p, method="inverted_cdf")


# --- evaluate ----------------------------------------------------------------------


def eval_set(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    truth = (x @ np.array([1.0, -1.5, 0.5]) > 0).astype(np.int64)  # not the model's weights
    path = tmp_path / "eval.npz"
    np.savez(path, x=x, y=truth)
    predicted = ((x @ WEIGHTS)[:, 0] + 0.25 > 0).astype(np.int64)
    return path, truth, predicted


def test_evaluate_computes_metrics_from_the_models_predictions(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, CLASSIFIER + '\nMETRICS = {"accuracy": 1.0}\nprint("accuracy: 1.0")\n')
    data, truth, predicted = eval_set(tmp_path)
    result = evaluate(folder, "predict.py", data, ["accuracy", "f1"], timeout_s=30)
    assert result.status == "pass", result.message
    accuracy = float(np.mean(truth == predicted))
    assert 0.5 < accuracy < 1.0
    assert result.metrics["accuracy"] == pytest.approx(accuracy)
    tp = int(np.sum((truth == 1) & (predicted == 1)))
    f1 = 2 * tp / (2 * tp + np.sum((truth == 0) & (predicted == 1)) + np.sum((truth == 1) & (predicted == 0)))
    assert result.metrics["f1"] == pytest.approx(f1)
    assert "on 200 examples of eval.npz" in result.message


def test_evaluate_reads_a_csv_with_a_label_column(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, """\
        def load(path):
            return None
        def predict(model, inputs):
            return ["cat" if row[0] > 0 else "dog" for row in inputs]
        """)
    data = tmp_path / "eval.csv"
    data.write_text("size,label,weight\n1.0,cat,3\n-1,dog,2\n2,dog,1\n-3,dog,0.5\n", encoding="utf-8")
    result = evaluate(folder, "predict.py", data, ["accuracy", "recall"], timeout_s=30)
    assert result.status == "pass", result.message
    assert result.metrics == {"accuracy": 0.75, "recall": pytest.approx((1.0 + 2 / 3) / 2)}


def test_evaluate_fails_clearly_on_a_wrong_shape(tmp_path: Path) -> None:
    data, _, _ = eval_set(tmp_path)
    folder = model_folder(tmp_path, CLASSIFIER.replace(".astype(np.int64)", ".astype(np.int64)[:-1]"))
    result = evaluate(folder, "predict.py", data, ["accuracy"], timeout_s=30)
    assert result.status == "fail"
    assert result.message == "predict.py: predict() returned 199 predictions for 200 examples"
    assert result.metrics == {}

    model_folder(tmp_path, "def load(path):\n    return None\ndef predict(model, inputs):\n    return inputs\n")
    result = evaluate(folder, "predict.py", data, ["accuracy"], timeout_s=30)
    assert result.message == "predict.py: predict() returned 3 values per example; expected one label per example"


def test_evaluate_refuses_unknown_metrics_and_bad_data(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, CLASSIFIER)
    data, _, _ = eval_set(tmp_path)
    result = evaluate(folder, "predict.py", data, ["accuracy", "auc_roc"], timeout_s=30)
    assert result.status == "fail"
    assert result.message.startswith("unknown metric auc_roc (known: accuracy, ")
    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, x=np.zeros((3, 3)))
    assert evaluate(folder, "predict.py", no_y, ["accuracy"], 30).message == "no_y.npz has no array y (needs x and y)"
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.zeros((1, 3)), y=np.array([{"a": 1}], dtype=object))
    assert "without pickles" in evaluate(folder, "predict.py", pickled, ["accuracy"], 30).message


def test_compute_metrics_binary_macro_and_regression() -> None:
    binary = compute_metrics([1, 0, 1, 1, 0], [True, 0, 0, 1, 1], ["accuracy", "precision", "recall", "f1"])
    assert binary == pytest.approx({"accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    multi = compute_metrics([0, 1, 2, 2], [0, 2, 2, 2], ["precision", "recall"])
    # class 0: p 1 r 1; class 1: p 0 r 0; class 2: p 2/3 r 1
    assert multi == pytest.approx({"precision": (1 + 0 + 2 / 3) / 3, "recall": (1 + 0 + 1) / 3})
    regression = compute_metrics([1.5, 2.5, 3.0], [1.0, 2.5, 4.0], ["mae", "rmse", "r2"])
    assert regression["mae"] == pytest.approx(0.5)
    assert regression["rmse"] == pytest.approx(np.sqrt((0.25 + 1) / 3))
    with pytest.raises(MetricError, match="numeric"):
        compute_metrics(["a"], ["b"], ["mae"])

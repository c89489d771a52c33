"""`registry export`: a registered version, checked against its card, in the layouts other servers load."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from registry import api
from registry.integrations import export as exporting
from registry.serving.formats import mlflow as pyfunc
from tests.conftest import Result, git

PREDICT = """\
import json
import os

import numpy as np


def load(path):
    with open(os.path.join(path, "config.json")) as handle:
        scale = json.load(handle)["scale"]
    with open(os.path.join(path, "weights.bin"), "rb") as handle:
        weights = np.frombuffer(handle.read(16), dtype=np.float32)
    return scale, weights


def predict(model, inputs):
    scale, weights = model
    return (np.asarray(inputs, dtype=np.float32) @ weights * scale).tolist()
"""

CARD = """\
description: Scores applications
framework: numpy
task: regression
metrics: {rmse: 0.2}
entrypoint: predict.py
environment: requirements.txt
input_example: [[0.5, 1.0, 1.5, 2.0], [1.0, 0.0, 0.0, 1.0]]
signature:
  inputs: [{name: features, type: float32, shape: [null, 4]}]
  outputs: [{name: score, type: double}]
"""
WEIGHTS = np.arange(1, 9, dtype=np.float32).tobytes() + b"\0"  # binary: DVC-tracked
EXAMPLE = [[0.5, 1.0, 1.5, 2.0], [1.0, 0.0, 0.0, 1.0]]


def _register(reg: api.Registry, inputs: Path, name: str, version: str, card: str, files: dict[str, bytes]) -> None:
    folder = inputs / f"{name}-{version}"
    folder.mkdir(parents=True)
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    (folder / "card.yaml").write_text(card)
    reg.register(name, version, folder / "card.yaml", [folder / f for f in files], no_branch=True)


@pytest.fixture
def reg(registry_dir: Path, tmp_path: Path) -> api.Registry:
    """scorer@1.0.0 (predict.py, config.json, requirements.txt in git; weights.bin in DVC), also canary
    at 25%; scorer@1.1.0, whose signature names a type MLflow does not have; plain@1.0.0 (no entrypoint)."""
    registry = api.open(registry_dir)
    _register(registry, tmp_path / "inputs", "scorer", "1.0.0", CARD,
              {"predict.py": PREDICT.encode(), "config.json": b'{"scale": 2}\n', "requirements.txt": b"numpy\n",
               "weights.bin": WEIGHTS})
    registry.promote("scorer", "1.0.0", "staging", "test", no_branch=True)
    registry.promote("scorer", "1.0.0", "canary", "test", no_branch=True, traffic=0.25)
    _register(registry, tmp_path / "inputs", "scorer", "1.1.0",
              CARD.replace("type: float32", "type: float-ish").replace("environment: requirements.txt\n", ""),
              {"predict.py": PREDICT.encode(), "config.json": b'{"scale": 3}\n', "weights.bin": WEIGHTS})
    _register(registry, tmp_path / "inputs", "plain", "1.0.0",
              "description: d\nframework: numpy\ntask: t\nmetrics: {}\n", {"weights.bin": WEIGHTS})
    return registry


def _expected(reg: api.Registry, inputs: Any) -> Any:
    """What the version's own predict.py answers, run from the registry's work tree."""
    import importlib.util

    folder = reg.version_dir("scorer", "1.0.0")
    spec = importlib.util.spec_from_file_location("scorer_predict_direct", folder / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.predict(module.load(str(folder)), inputs)


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir())


def _cache_object(reg: api.Registry, data: bytes) -> Path:
    import hashlib

    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return reg.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_an_mlflow_export_loads_in_mlflow_and_predicts_what_predict_py_answers(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "exports" / "scorer-mlflow"
    result = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(out), cwd=reg.root)
    assert result.code == 0, result.err
    assert f"Exported scorer@1.0.0 as mlflow to {out}" in result.out
    assert (out / "data" / "weights.bin").read_bytes() == WEIGHTS
    assert (out / "requirements.txt").read_text() == "numpy\n"
    assert not list((out / "data").rglob("*.dvc"))  # the artifacts themselves, not their pointers
    assert _beside(out) == ["scorer-mlflow"]  # no temp folder left beside it
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    assert json.loads(mlmodel["signature"]["inputs"]) == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]
    assert mlmodel["metadata"] == {"registry.name": "scorer", "registry.version": "1.0.0"}

    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc", reason="MLflow is not installed (pip install "
                                        "'gitops-registry[mlflow]' pandas)")
    model = mlflow_pyfunc.load_model(str(out))
    example = model.input_example
    assert isinstance(example, np.ndarray) and example.dtype == np.float32 and example.tolist() == EXAMPLE
    assert model.predict(example) == _expected(reg, np.asarray(EXAMPLE, dtype=np.float32)) == [30.0, 10.0]
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 4)


def test_an_export_reads_dvc_artifacts_from_the_remote_when_the_cache_lacks_them(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    shutil.rmtree(reg.root / ".dvc" / "cache")
    (reg.version_dir("scorer", "1.0.0") / "weights.bin").unlink()  # not checked out either
    out = tmp_path / "out"
    result = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(out), "--json", cwd=reg.root)
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["format"] == "mlflow" and answer["registry_commit"] == git(reg.root, "rev-parse", "HEAD").strip()
    assert "data/weights.bin" in answer["files"] and (out / "data" / "weights.bin").read_bytes() == WEIGHTS


def test_a_tampered_dvc_cache_object_is_refused_naming_the_artifact_and_nothing_is_exported(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    cached = _cache_object(reg, WEIGHTS)
    assert cached.is_file()
    cached.chmod(cached.stat().st_mode | stat.S_IWUSR)
    cached.write_bytes(WEIGHTS[:-2] + b"\x01\0")  # same size, other bytes
    out = tmp_path / "out"
    for fmt in ("mlflow", "kserve"):
        result = cli("export", "scorer@1.0.0", "--format", fmt, "--out", str(out), "--storage-uri", "s3://b/m",
                     cwd=reg.root)
        assert result.code == 1, result.out
        assert result.err.startswith("error: scorer@1.0.0: weights.bin: sha256 is ")
        assert "the copy in the DVC cache or remote is not the registered artifact" in result.err
        assert "Traceback" not in result.err
        assert not out.exists() and os.listdir(tmp_path).count("out") == 0
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.")]  # no temp folder left


def test_a_non_empty_out_is_refused_and_left_as_it_is(reg: api.Registry, cli: Callable[..., Result],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(out), cwd=reg.root)
    assert result.code == 2
    assert result.err == f"error: --out {out}: the folder is not empty; give a new or empty folder (nothing is overwritten)\n"
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    result = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(tmp_path / "file"), cwd=reg.root)
    assert result.code == 2 and "exists and is not a folder" in result.err
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(empty), cwd=reg.root)
    assert result.code == 0, result.err
    assert (empty / "MLmodel").is_file()


@pytest.mark.parametrize(("args", "code", "message"), [
    (("nope@1.0.0", "--format", "mlflow"), 2, "error: no model named 'nope' in this registry; see `registry ls`\n"),
    (("scorer@9.9.9", "--format", "mlflow"), 2,
     "error: scorer@9.9.9 is not registered; see `registry show scorer` for its versions\n"),
    (("scorer", "--format", "mlflow"), 2, "error: scorer: give a version, NAME@VERSION (e.g. scorer@1.0.0)\n"),
    (("Bad/../x@1.0.0", "--format", "mlflow"), 2, "error: invalid model name 'Bad/../x'"),
    (("scorer@1.0.0", "--format", "onnx"), 2, "Invalid value for '--format': 'onnx' is not one of"),
    (("scorer@1.0.0", "--format", "mlflow", "--at", "nowhere"), 2,
     "error: --at nowhere: no such commit, branch or tag in this registry\n"),
    (("scorer@1.1.0", "--format", "mlflow"), 1,
     "error: scorer@1.1.0: card.yaml signature.inputs[0]: type 'float-ish' is not a tensor type MLflow knows"),
    (("plain@1.0.0", "--format", "mlflow"), 1,
     "error: plain@1.0.0: the card names no entrypoint; an MLflow pyfunc model runs the version's predict.py"),
])
def test_bad_input_gets_one_clear_message_and_writes_nothing(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path, args: tuple[str, ...], code: int,
        message: str) -> None:
    out = tmp_path / "out"
    result = cli("export", *args, "--out", str(out), cwd=reg.root)
    assert result.code == code, (result.out, result.err)
    assert message in result.err and "Traceback" not in result.err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".out.")]


def test_an_older_commit_exports_the_version_as_it_was_then(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    before = git(reg.root, "rev-parse", "HEAD").strip()
    git(reg.root, "rm", "--quiet", "-r", "models/plain")
    git(reg.root, "commit", "--quiet", "-m", "Remove plain")
    gone = cli("export", "plain@1.0.0", "--format", "mlflow", "--out", str(tmp_path / "a"), cwd=reg.root)
    assert gone.code == 2 and "no model named 'plain'" in gone.err
    source = exporting.read_source(reg, "plain", "1.0.0", before)
    assert source.commit == before and set(source.pointers) == {"weights.bin"}


def test_a_kserve_export_needs_the_uri_it_will_be_uploaded_to(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    # The DVC remote holds content-addressed objects, not a folder KServe could load a model from.
    out = tmp_path / "kserve"
    result = cli("export", "scorer@1.0.0", "--format", "kserve", "--out", str(out), cwd=reg.root)
    assert result.code == 2 and "--format kserve needs --storage-uri" in result.err
    assert not out.exists() and "Traceback" not in result.err


def test_the_pyfunc_signature_and_example_follow_the_card(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "predict.py").write_text("def load(path):\n    return None\n\n\ndef predict(model, inputs):\n"
                                       "    return inputs\n")
    card = {"entrypoint": "predict.py", "input_example": [{"age": 30, "city": "Oslo"}],
            "signature": {"inputs": [{"name": "age", "type": "int64"}, {"name": "city", "type": "string"}],
                          "outputs": [{"name": "p", "type": "double"}]}}
    out = pyfunc.write_pyfunc(folder, card, tmp_path / "m", name="m", version="1.0.0")
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    assert json.loads(mlmodel["signature"]["inputs"]) == [
        {"name": "age", "type": "long", "required": True}, {"name": "city", "type": "string", "required": True}]
    assert mlmodel["saved_input_example_info"]["type"] == "json_object"
    assert json.loads((out / "input_example.json").read_text()) == card["input_example"]
    assert not (out / "requirements.txt").exists()
    with pytest.raises(pyfunc.ExportError, match=r"signature.inputs\[0\]: type 'tensor\?' is not a column type"):
        pyfunc.write_pyfunc(folder, {**card, "signature": {"inputs": [{"name": "x", "type": "tensor?"}]}},
                            tmp_path / "m2", name="m", version="1.0.0")
    assert not (tmp_path / "m2").exists()

    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc", reason="MLflow is not installed")
    model = mlflow_pyfunc.load_model(str(out))
    # MLflow makes a DataFrame of named columns; predict.py gets the records back, as the example has them.
    assert model.predict([{"age": 41, "city": "Bergen"}, {"age": 7, "city": "Oslo"}]) == [
        {"age": 41, "city": "Bergen"}, {"age": 7, "city": "Oslo"}]


def test_two_exported_models_in_one_process_each_run_their_own_code(tmp_path: Path) -> None:
    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc", reason="MLflow is not installed")
    models = []
    for answer in ("first", "second"):
        folder = tmp_path / answer
        folder.mkdir()
        (folder / "predict.py").write_text(f"def load(path):\n    return {answer!r}\n\n\n"
                                           "def predict(model, inputs):\n    return [model, inputs]\n")
        out = pyfunc.write_pyfunc(folder, {"entrypoint": "predict.py"}, tmp_path / f"{answer}-out",
                                  name=answer, version="1.0.0")
        models.append(mlflow_pyfunc.load_model(str(out)))
    assert [m.predict([1]) for m in models] == [["first", [1]], ["second", [1]]]


# The other formats' builders are other modules' (registry/serving/formats/{mar,v2,kserve}.py);
# `registry export` calls them by their names. These run once they are installed.

def test_a_mar_export_is_the_archive_the_torchserve_adapter_builds(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    pytest.importorskip("registry.serving.formats.mar", reason="the .mar builder is not in this build")
    out = tmp_path / "mar"
    result = cli("export", "scorer@1.0.0", "--format", "mar", "--out", str(out), cwd=reg.root)
    assert result.code == 0, result.err
    archives = list(out.glob("*.mar"))
    assert len(archives) == 1 and archives[0].name.startswith("scorer")
    import zipfile

    with zipfile.ZipFile(archives[0]) as archive:
        assert any(n.endswith("weights.bin") and archive.read(n) == WEIGHTS for n in archive.namelist())


def test_a_v2_export_is_the_model_repository_layout(reg: api.Registry, cli: Callable[..., Result],
                                                     tmp_path: Path) -> None:
    pytest.importorskip("registry.serving.formats.v2", reason="the V2 layout builder is not in this build")
    out = tmp_path / "repository"
    result = cli("export", "scorer@1.0.0", "--format", "v2", "--out", str(out), cwd=reg.root)
    assert result.code == 0, result.err
    assert (out / "scorer").is_dir()
    assert [p.read_bytes() for p in (out / "scorer").rglob("weights.bin")] == [WEIGHTS]


def test_a_kserve_export_is_the_verified_v2_folder_and_an_inference_service_naming_where_it_goes(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    pytest.importorskip("registry.serving.formats.kserve", reason="the KServe renderer is not in this build")
    source = exporting.read_source(reg, "scorer", "1.0.0", "HEAD")
    assert source.stages.canary is not None and source.stages.canary.version == "1.0.0"
    out = tmp_path / "kserve"
    result = cli("export", "scorer@1.0.0", "--format", "kserve", "--out", str(out), "--storage-uri",
                 "s3://bucket/models/", cwd=reg.root)
    assert result.code == 0, result.err
    service = yaml.safe_load((out / exporting.KSERVE_FILE).read_text())
    assert service["kind"] == "InferenceService"
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://bucket/models/scorer/1.0.0"
    assert predictor["canaryTrafficPercent"] == 25  # scorer@1.0.0 is the canary, at 0.25
    # What the URI names is in the export, verified: upload DIR there.
    assert [p.read_bytes() for p in (out / "scorer" / "1.0.0").rglob("weights.bin")] == [WEIGHTS]
    assert (out / "scorer" / "1.0.0" / "model-settings.json").is_file()


def test_the_loader_module_runs_the_entrypoint_without_mlflow(reg: api.Registry, cli: Callable[..., Result],
                                                              tmp_path: Path) -> None:
    """What MLflow calls (`_load_pyfunc(data_path)`, then `predict`), called here directly."""
    from registry.serving.formats import pyfunc_loader

    out = tmp_path / "out"
    assert cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(out), cwd=reg.root).code == 0
    [shipped] = (out / "code").glob("registry_pyfunc_*.py")
    source = Path(pyfunc_loader.__file__).read_bytes()
    assert shipped.read_bytes() == source and b"from registry" not in source and b"import registry" not in source
    model = pyfunc_loader._load_pyfunc(str(out / "data"))
    assert (model.name, model.version) == ("scorer", "1.0.0")
    assert model.predict(EXAMPLE) == _expected(reg, EXAMPLE) == [30.0, 10.0]


def test_a_dataframe_goes_back_to_the_shape_of_the_input_example() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    from registry.serving.formats.pyfunc_loader import as_example

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    assert as_example(frame, "rows") == [[1.0, 3.0], [2.0, 4.0]]
    assert as_example(frame, "records") == [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 4.0}]
    assert as_example(frame, "columns") == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
    assert as_example(frame.head(1), "mapping") == {"a": 1.0, "b": 3.0}
    assert as_example(frame[["a"]], "values") == [1.0, 2.0]
    assert as_example([[1, 2]], "records") == [[1, 2]]  # not a DataFrame: as it is
    assert pyfunc.example_shape({"a": 1}) == "mapping" and pyfunc.example_shape({"a": [1]}) == "columns"
    assert pyfunc.example_shape([{"a": 1}]) == "records" and pyfunc.example_shape([1, 2]) == "values"
    assert pyfunc.example_shape([[1]]) == "rows" and pyfunc.example_shape("text") is None


def test_with_trusted_keys_only_a_version_signed_by_one_of_them_is_exported(
        reg: api.Registry, cli: Callable[..., Result], tmp_path: Path) -> None:
    from registry.signing.bundle import sign_folder
    from registry.signing.keys import generate_keypair, key_id, load_public_keys, read_private_key

    generate_keypair(tmp_path / "release")
    generate_keypair(tmp_path / "rogue")
    folder = reg.version_dir("scorer", "1.0.0")
    sign_folder(folder, "scorer", "1.0.0", read_private_key(tmp_path / "release.key"))
    git(reg.root, "add", str(folder / "signature.json"))
    git(reg.root, "commit", "--quiet", "-m", "Sign scorer@1.0.0")
    out = tmp_path / "out"
    for keys, ref, message in (("rogue.pub", "scorer@1.0.0", "error: scorer@1.0.0: "),
                               ("release.pub", "plain@1.0.0", "error: plain@1.0.0: models/plain/1.0.0/signature.json: "
                                                              "not signed (no signature file); nothing was exported")):
        refused = cli("export", ref, "--format", "mlflow", "--out", str(out), "--trusted-keys",
                      str(tmp_path / keys), cwd=reg.root)
        assert refused.code == 1 and refused.err.startswith(message) and "nothing was exported" in refused.err
        assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".out.")]
    bad = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(out), "--trusted-keys",
              str(tmp_path / "none.pub"), cwd=reg.root)
    assert bad.code == 2 and bad.err.startswith("error: --trusted-keys: ") and not out.exists()
    done = cli("export", "scorer@1.0.0", "--format", "mlflow", "--out", str(out), "--trusted-keys",
               str(tmp_path / "release.pub"), "--json", cwd=reg.root)
    assert done.code == 0, done.err
    [release] = load_public_keys(tmp_path / "release.pub")
    assert json.loads(done.out)["signed_by"] == key_id(release)
    assert (out / "data" / "signature.json").is_file()

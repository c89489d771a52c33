"""scikit-learn models: .skops files are checked by their declared types without being
loaded; pickles and joblib files pass only with the opt-in `sklearn` scan profile, and
a function reference (os.system, numpy.log1p) still needs `scan.allow_globals`."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from registry.artifacts import scan
from registry.errors import ValidationError
from registry.files import config
from tests.conftest import Result, git
from tests.gates.conftest import check, failures, gated, register  # noqa: F401 - gated: a fixture

pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")
skops_io = pytest.importorskip("skops.io")

PROFILE = ["sklearn"]


class SystemCall:
    """A pickle whose loading calls os.system (never loaded here)."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("touch /tmp/registry-sklearn-pwned",))


def _models() -> dict[str, object]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.RandomState(0)
    features = rng.rand(40, 3)
    labels = (features[:, 0] > 0.5).astype(int)
    return {
        "logistic": LogisticRegression().fit(features, labels),
        "forest": RandomForestClassifier(n_estimators=3, random_state=0).fit(features, labels),
        "pipeline": Pipeline([("scale", StandardScaler()), ("svc", SVC())]).fit(features, labels),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model as .skops, .joblib and .pkl: {"forest.joblib": path, ...}."""
    folder = tmp_path_factory.mktemp("sklearn")
    files: dict[str, Path] = {}
    for name, model in _models().items():
        for suffix in ("skops", "joblib", "pkl"):
            path = folder / f"{name}.{suffix}"
            if suffix == "skops":
                skops_io.dump(model, path)
            elif suffix == "joblib":
                joblib.dump(model, path)
            else:
                path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
            files[path.name] = path
    return files


def _messages(report: scan.ScanReport) -> list[str]:
    return [str(finding) for finding in report.findings]


# -- skops -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["logistic", "pipeline"])
def test_skops_file_passes_by_its_declared_types(saved: dict[str, Path], name: str) -> None:
    report = scan.scan_file(saved[f"{name}.skops"])
    assert report.safe, _messages(report)
    assert report.kind == "skops"
    assert scan.identify_file(saved[f"{name}.skops"]) == "skops"


def test_skops_forest_names_the_type_skops_does_not_trust_until_the_profile(
    saved: dict[str, Path],
) -> None:
    """skops itself does not trust sklearn.tree._tree.Tree by default: the finding names
    it; the sklearn profile lists it."""
    report = scan.scan_file(saved["forest.skops"])
    assert [f.global_name for f in report.findings] == ["sklearn.tree._tree.Tree"]
    assert report.findings[0].member == "schema.json"
    assert scan.scan_file(saved["forest.skops"], profiles=PROFILE).safe


def _skops_with(schema_patch: Callable[[dict[str, object]], None], source: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "schema.json":
                schema = json.loads(data)
                schema_patch(schema)
                data = json.dumps(schema).encode()
            dst.writestr(info.filename, data)
    return out.getvalue()


def test_skops_file_declaring_os_system_fails_even_with_the_profile(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    """A schema whose estimator parameter is a FunctionNode for os.system: skops.io.load
    with the untrusted types trusted would hand it to the estimator. (Passed as a plain
    zip of text and arrays before skops files were recognised.)"""

    def patch(schema: dict[str, object]) -> None:
        content = schema["content"]
        assert isinstance(content, dict)
        params = content["content"]
        assert isinstance(params, dict)
        params["C"] = {"__class__": "system", "__module__": "os", "__loader__": "FunctionNode",
                       "__id__": 1}

    path = tmp_path / "model.bin"  # recognised by its bytes, not its name
    path.write_bytes(_skops_with(patch, saved["logistic.skops"]))
    for profiles in ([], PROFILE):
        report = scan.scan_file(path, profiles=profiles)
        assert report.kind == "skops"
        assert [f.global_name for f in report.findings] == ["os.system"], _messages(report)


def test_skops_file_with_an_unreadable_schema_fails(saved: dict[str, Path], tmp_path: Path) -> None:
    def patch(schema: dict[str, object]) -> None:
        schema["__loader__"] = "NoSuchNode"

    path = tmp_path / "broken.skops"
    path.write_bytes(_skops_with(patch, saved["logistic.skops"]))
    report = scan.scan_file(path)
    assert not report.safe
    assert "malformed skops file" in _messages(report)[0]


# -- pickles and joblib with the profile ---------------------------------------------------


@pytest.mark.parametrize("name", ["logistic", "forest", "pipeline"])
@pytest.mark.parametrize("suffix", ["joblib", "pkl"])
def test_pickle_and_joblib_fail_without_the_profile_and_pass_with_it(
    saved: dict[str, Path], name: str, suffix: str
) -> None:
    path = saved[f"{name}.{suffix}"]
    refused = scan.scan_file(path)
    assert not refused.safe
    assert any(f.global_name and f.global_name.startswith("sklearn.") for f in refused.findings)
    allowed = scan.scan_file(path, profiles=PROFILE)
    assert allowed.safe, _messages(allowed)
    assert allowed.kind == ("joblib" if suffix == "joblib" else "pickle")


def test_a_pickle_referencing_os_system_fails_with_the_profile_on(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression()
    model.payload = SystemCall()  # type: ignore[attr-defined]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(model))
    report = scan.scan_file(path, profiles=PROFILE)
    assert {f.global_name for f in report.findings} == {"posix.system"}
    joblib_path = tmp_path / "evil.joblib"
    joblib.dump(model, joblib_path)
    assert {f.global_name for f in scan.scan_file(joblib_path, profiles=PROFILE).findings} == {
        "posix.system"
    }
    assert not Path("/tmp/registry-sklearn-pwned").exists()


def test_function_transformer_needs_its_function_in_allow_globals(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "log1p.joblib"
    joblib.dump(FunctionTransformer(func=np.log1p).fit(np.ones((3, 2))), path)
    report = scan.scan_file(path, profiles=PROFILE)
    assert [f.global_name for f in report.findings] == ["numpy.log1p"]
    assert scan.scan_file(path, ["numpy.log1p"], profiles=PROFILE).safe


def test_the_profile_lists_classes_and_is_pinned_to_a_version_range() -> None:
    import sklearn

    text = (Path(scan.__file__).parent.parent / "profiles" / "sklearn.txt").read_text()
    assert "# generated-with: scikit-learn " in text
    header = next(line for line in text.splitlines() if line.startswith("# scikit-learn: "))
    entries = scan.profile_entries("sklearn")
    assert "sklearn.linear_model._logistic.LogisticRegression" in entries
    assert "sklearn.tree._tree.Tree" in entries
    assert not {"numpy.log1p", "numpy.mean", "posix.system", "builtins.eval"} & set(entries)
    # The profile's entries pass the same checks as scan.allow_globals.
    scan.allow_list(entries)
    low, high = header.removeprefix("# scikit-learn: ").split(",")
    version = tuple(int(p) for p in sklearn.__version__.split(".")[:2])
    if not (
        tuple(int(p) for p in low.removeprefix(">=").split(".")) <= version
        < tuple(int(p) for p in high.removeprefix("<").split("."))
    ):
        pytest.skip(f"installed scikit-learn {sklearn.__version__} is outside {header}")


# -- registry.yaml, `registry scan` and the gates ------------------------------------------


def test_unknown_profile_is_refused_with_file_line_and_field() -> None:
    with pytest.raises(ValidationError) as caught:
        config.parse("storage:\n  git_max_bytes: 10\nscan:\n  profiles: [sklearn, torchvision]\n")
    assert str(caught.value).startswith("registry.yaml:4: scan.profiles[1]: 'torchvision'")
    with pytest.raises(ValidationError) as unknown:
        scan.allow_list(profiles=["torchvision"])
    assert unknown.value.problems[0].field == "scan.profiles"


def _set_profiles(repo: Path, profiles: list[str]) -> None:
    path = repo / "registry.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("scan", {})["profiles"] = profiles
    path.write_text(yaml.safe_dump(data))
    git(repo, "add", "registry.yaml")
    git(repo, "commit", "--quiet", "-m", "scan profiles")


def test_registry_scan_reads_the_profile_from_registry_yaml(
    registry_dir: Path, saved: dict[str, Path], cli: Callable[..., Result]
) -> None:
    path = str(saved["forest.joblib"])
    before = cli("scan", path, cwd=registry_dir)
    assert before.code == 1 and "sklearn.ensemble._forest.RandomForestClassifier" in before.out
    _set_profiles(registry_dir, PROFILE)
    after = cli("scan", path, cwd=registry_dir)
    assert after.code == 0, after.out
    assert "(joblib)" in after.out


def test_scan_and_format_gates_with_the_profile(
    gated: Path, tmp_path: Path, saved: dict[str, Path], cli: Callable[..., Result]  # noqa: F811 - the fixture
) -> None:
    git(gated, "switch", "--quiet", "main")
    _set_profiles(gated, PROFILE)
    register(cli, gated, tmp_path, "1.1.0", sign=True,
             extra=[saved["pipeline.joblib"], saved["logistic.skops"]])
    report = check(cli, gated, tmp_path)
    assert "scan" not in failures(report)
    messages = {g["message"] for g in report["gates"]}  # type: ignore[attr-defined]
    assert "models/m/1.1.0/pipeline.joblib: joblib, nothing executable" in messages
    assert "models/m/1.1.0/logistic.skops: skops, nothing executable" in messages
    assert any(m.startswith("models/m/1.1.0/logistic.skops: skops;") for m in messages)


def test_a_skops_schema_is_checked_inside_any_zip_skops_would_load(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    """skops.io.load reads a top-level schema.json from any zip: one beside a .pt2
    archive's members is checked too."""

    def patch(schema: dict[str, object]) -> None:
        schema["__module__"], schema["__class__"] = "os", "system"
        schema["__loader__"] = "FunctionNode"
        schema.pop("content", None)

    skops_zip = _skops_with(patch, saved["logistic.skops"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("model/archive_format", b"pt2")
        archive.writestr("model/models/model.json", b"{}")
        with zipfile.ZipFile(io.BytesIO(skops_zip)) as source:
            for info in source.infolist():
                archive.writestr(info.filename, source.read(info))
    path = tmp_path / "model.pt2"
    path.write_bytes(out.getvalue())
    report = scan.scan_file(path, profiles=PROFILE)
    assert report.kind == "pt2"
    assert "os.system" in {f.global_name for f in report.findings}, _messages(report)


def test_joblib_structured_arrays_of_plain_numbers_are_stepped_over(tmp_path: Path) -> None:
    """A tree's nodes are a structured array joblib writes raw (refused as "structured"
    before, so no forest could pass); one with an object field is still refused."""
    plain = np.zeros(3, dtype=[("left", "<i8"), ("threshold", "<f8"), ("flag", "u1")])
    path = tmp_path / "nodes.joblib"
    joblib.dump({"nodes": plain}, path)
    report = scan.scan_file(path)
    assert report.safe, _messages(report)
    assert report.kind == "joblib"
    with_object = np.array([(1, "x")], dtype=[("a", "<i8"), ("b", "O")])
    joblib.dump({"nodes": with_object}, path)
    assert not scan.scan_file(path).safe

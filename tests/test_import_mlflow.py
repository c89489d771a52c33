"""`registry import mlflow` against a real MLflow registry: SQLite backend, local artifact root, in tmp_path."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Result, git

pytestmark = [
    # MLflow's own code: its SQLAlchemy store uses a loader SQLAlchemy 2.1 deprecates, and the
    # test sets legacy stages on purpose (the importer must read registries that still use them).
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:``mlflow.tracking.client.MlflowClient.transition_model_version_stage`` is deprecated:FutureWarning"),
]

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed: pip install 'gitops-registry[mlflow]'")

from mlflow import MlflowClient  # noqa: E402
from mlflow.models import Model  # noqa: E402

from registry.errors import RegistryError  # noqa: E402
from registry.integrations.importers.mlflow import flat_names, map_stages, registry_name  # noqa: E402

CREDIT = "Credit Approval"
FRAUD = "fraud_detector"
SUNSET = (dt.date.today() + dt.timedelta(days=90)).isoformat()


@dataclass
class Store:
    uri: str
    client: MlflowClient
    experiment: str
    artifacts: Path
    runs: dict[str, str]


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLflow's schema, made once per worker: its migrations take seconds, a copy takes none."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    # Made before any test's environment: name the database explicitly everywhere.
    MlflowClient(tracking_uri=f"sqlite:///{path}", registry_uri=f"sqlite:///{path}").search_experiments()
    return path


def new_store(folder: Path, template: Path) -> Store:
    folder.mkdir()
    shutil.copyfile(template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("credit", artifact_location=(folder / "artifacts").as_uri())
    return Store(uri, client, experiment, folder / "artifacts", {})


def model_files(folder: Path, run_id: str, *, weights: float, nested: bool, logged_model_id: str | None = None,
                artifact_path: str = "model") -> Path:
    """What an MLflow sklearn-style model folder holds, with a small (safe) pickle for the weights."""
    folder.mkdir(parents=True)
    (folder / "model.pkl").write_bytes(pickle.dumps({"coef": [weights, -weights, 0.25], "intercept": 0.1}))
    (folder / "conda.yaml").write_text("name: mlflow-env\ndependencies:\n- python=3.11\n")
    (folder / "requirements.txt").write_text("mlflow-skinny\nnumpy\n")
    if nested:
        (folder / "data").mkdir()
        (folder / "data" / "weights.bin").write_bytes(bytes(range(256)) * 8)
    model = Model(run_id=run_id, artifact_path=artifact_path, model_id=logged_model_id)
    model.add_flavor("python_function", loader_module="mlflow.sklearn", model_path="model.pkl")
    model.add_flavor("sklearn", pickled_model="model.pkl", sklearn_version="1.5.2")
    model.save(str(folder / "MLmodel"))
    return folder


def log_run(store: Store, key: str, params: dict[str, str], metrics: list[tuple[str, float, int]],
            tags: dict[str, str]) -> str:
    run = store.client.create_run(store.experiment, tags=tags)
    run_id = run.info.run_id
    for name, value in params.items():
        store.client.log_param(run_id, name, value)
    for name, value, step in metrics:
        store.client.log_metric(run_id, name, value, step=step)
    store.runs[key] = run_id
    return run_id


def version_from_run(store: Store, tmp: Path, name: str, run_id: str, **options: Any) -> str:
    """MLflow 2 style: the model is a run artifact; the version's source is its location."""
    store.client.log_artifacts(run_id, str(model_files(tmp, run_id, **options)), "model")
    source = f"{store.client.get_run(run_id).info.artifact_uri}/model"
    return str(store.client.create_model_version(name, source, run_id=run_id).version)


def version_from_logged_model(store: Store, tmp: Path, name: str, run_id: str, tags: dict[str, str] | None = None,
                              description: str | None = None, **options: Any) -> str:
    """MLflow 3 style: a LoggedModel of the run; the version's source is models:/m-…"""
    logged = store.client.create_logged_model(store.experiment, name="model", source_run_id=run_id)
    # As MLflow 3's log_model writes it: the MLmodel's artifact_path is the logged model's location.
    store.client.log_model_artifacts(logged.model_id, str(model_files(
        tmp, run_id, logged_model_id=logged.model_id, artifact_path=logged.artifact_location, **options)))
    store.client.finalize_logged_model(logged.model_id, "READY")
    return str(store.client.create_model_version(name, f"models:/{logged.model_id}", run_id=run_id, tags=tags,
                                                 description=description).version)


@pytest.fixture
def store(tmp_path: Path, empty_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """Two models: Credit Approval (three versions, two runs, aliases, legacy stages), fraud_detector."""
    s = new_store(tmp_path / "mlflow", empty_mlflow_db)
    # Some MLflow calls use the global URI whatever the client's; its default is ./mlflow.db.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", s.uri)
    c = s.client
    c.create_registered_model(CREDIT, description="Approves or declines credit applications",
                              tags={"owner_team": "risk", "task": "classification", "pii": "false"})
    first = log_run(s, "first", {"C": "1.0", "max_iter": "100", "solver": "lbfgs"},
                    [("accuracy", 0.80, 0), ("accuracy", 0.88, 1), ("f1", 0.85, 1)],
                    {"team": "risk", "task": "classification", "threshold": "0.5"})
    c.set_terminated(first)
    version_from_run(s, tmp_path / "m1", CREDIT, first, weights=1.0, nested=False)
    c.update_model_version(CREDIT, "1", description="Baseline logistic regression")
    second = log_run(s, "second", {"C": "0.5", "max_iter": "200", "solver": "saga"},
                     [("accuracy", 0.93, 0), ("f1", 0.90, 0)], {"team": "risk", "task": "classification"})
    c.set_terminated(second)
    version_from_logged_model(s, tmp_path / "m2", CREDIT, second, weights=0.5, nested=True)
    version_from_logged_model(s, tmp_path / "m3", CREDIT, second, weights=0.4, nested=True,
                              tags={"semver": "3.1.0"}, description="Candidate with more features")
    c.transition_model_version_stage(CREDIT, "1", "Production")
    c.transition_model_version_stage(CREDIT, "3", "Staging")
    c.set_registered_model_alias(CREDIT, "champion", "2")
    c.set_registered_model_alias(CREDIT, "challenger", "3")

    c.create_registered_model(FRAUD, description="Flags fraudulent transactions")
    fraud = log_run(s, "fraud", {"depth": "6"}, [("auc", 0.97, 0)], {"task": "anomaly-detection"})
    version_from_run(s, tmp_path / "m4", FRAUD, fraud, weights=2.0, nested=False)
    c.transition_model_version_stage(FRAUD, "1", "Archived")
    return s


def show(repo: Path, ref: str, path: str) -> str:
    return git(repo, "show", f"{ref}:{path}")


def card_at(repo: Path, ref: str, name: str, version: str) -> dict[str, Any]:
    data = yaml.safe_load(show(repo, ref, f"models/{name}/{version}/card.yaml"))
    assert isinstance(data, dict)
    return data


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def work_tree(repo: Path) -> dict[str, str]:
    """Every file outside .git and DVC's cache: the user's checkout must not change."""
    state = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel.startswith((".git/", ".dvc/cache", ".dvc/tmp")) or rel == ".git" or not path.is_file():
            continue
        state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def downloaded_digests(store: Store, name: str, version: str, dest: Path) -> dict[str, str]:
    """The version's files as MLflow hands them out, under their flat names."""
    uri = store.client.get_model_version_download_uri(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest), tracking_uri=store.uri))
    return {p.relative_to(local).as_posix().replace("/", "--"): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in local.rglob("*") if p.is_file()}


def run_import(cli: Callable[..., Result], repo: Path, store: Store, *args: str) -> Result:
    return cli("import", "mlflow", "--tracking-uri", store.uri, *args, cwd=repo)


def test_import_brings_every_version_over_on_one_branch_per_model(
        registry_dir: Path, store: Store, cli: Callable[..., Result], tmp_path: Path) -> None:
    head, tree = git(registry_dir, "rev-parse", "HEAD"), work_tree(registry_dir)

    result = run_import(cli, registry_dir, store, "--push")

    assert result.code == 0, result.err
    assert "credit-approval ← MLflow model 'Credit Approval': 3 registered, 0 already there on branch " \
           "import/mlflow/credit-approval (pushed)" in result.out
    assert "fraud-detector ← MLflow model 'fraud_detector': 1 registered" in result.out
    # The alias wins over the legacy stage, and the report says so.
    assert "alias 'champion' gives production to version 2 (2.0.0); 1.0.0 goes to deprecated" in result.out
    # The user's checkout is untouched: same branch, same commit, same files, no worktree left behind.
    assert git(registry_dir, "branch", "--show-current").strip() == "main"
    assert git(registry_dir, "rev-parse", "HEAD") == head
    assert work_tree(registry_dir) == tree
    assert len(git(registry_dir, "worktree", "list").splitlines()) == 1
    remote = git(registry_dir, "ls-remote", "--heads", "origin")
    assert "refs/heads/import/mlflow/credit-approval" in remote and "refs/heads/import/mlflow/fraud-detector" in remote

    branch = "import/mlflow/credit-approval"
    first = card_at(registry_dir, branch, "credit-approval", "1.0.0")
    assert first["metrics"] == {"accuracy": 0.88, "f1": 0.85}  # the latest value of each metric
    assert first["hyperparameters"] == {"C": 1.0, "max_iter": 100, "solver": "lbfgs"}
    assert first["training"]["run_id"] == store.runs["first"]
    assert first["training"]["run_uri"] == f"runs:/{store.runs['first']}/model"
    assert first["description"] == "Baseline logistic regression"
    assert first["framework"] == "sklearn" and first["task"] == "classification"
    created = store.client.get_model_version(CREDIT, "1").creation_timestamp
    assert first["created"] == dt.datetime.fromtimestamp(created / 1000, dt.UTC).date().isoformat()
    assert first["tags"]["threshold"] == "0.5" and first["tags"]["team"] == "risk"  # MLflow tags stay text
    assert first["tags"]["mlflow.registered_model"] == CREDIT and first["tags"]["mlflow.model_version"] == "1"

    second = card_at(registry_dir, branch, "credit-approval", "2.0.0")
    assert second["metrics"] == {"accuracy": 0.93, "f1": 0.90}
    # MLflow's model URI inside the run, not the logged model's local location (MLmodel's artifact_path).
    assert second["training"]["run_uri"] == f"runs:/{store.runs['second']}/model"
    assert second["description"] == "Approves or declines credit applications"  # the model's, as a fallback
    assert second["tags"]["mlflow.flattened"] == "data--weights.bin=data/weights.bin"
    third = card_at(registry_dir, branch, "credit-approval", "3.1.0")  # from the version's semver tag
    assert third["description"] == "Candidate with more features"
    assert third["tags"]["semver"] == "3.1.0"
    assert third["training"]["run_uri"] == f"runs:/{store.runs['second']}/model"

    # Digests are those of the files MLflow serves; binaries went to DVC, small text stayed in git.
    for version, number in (("1.0.0", "1"), ("2.0.0", "2"), ("3.1.0", "3")):
        card = card_at(registry_dir, branch, "credit-approval", version)
        expected = downloaded_digests(store, CREDIT, number, tmp_path / "check" / number)
        assert {a["path"]: a["sha256"] for a in card["artifacts"]} == expected
        storage = {a["path"]: a["storage"] for a in card["artifacts"]}
        assert storage["model.pkl"] == "dvc" and storage["MLmodel"] == "git" and storage["requirements.txt"] == "git"
    assert {a["path"] for a in second["artifacts"]} == {
        "MLmodel", "conda.yaml", "data--weights.bin", "model.pkl", "requirements.txt"}

    # An import is a registration: the branch sets no stage, so it passes the lifecycle honestly.
    # MLflow's stages come over as promotions, each its own reviewed PR, once the branch is merged.
    assert show(registry_dir, branch, "models/credit-approval/stages.yaml").splitlines()[1:] == ["{}"]
    assert show(registry_dir, "import/mlflow/fraud-detector",
                "models/fraud-detector/stages.yaml").splitlines()[1:] == ["{}"]
    reason = "in MLflow model 'Credit Approval'\""
    steps = [line.strip() for line in result.out.splitlines() if line.strip().startswith("registry promote")]
    assert steps == [
        f"registry promote credit-approval 3.1.0 --to staging --reason \"staging {reason}",
        f"registry promote credit-approval 2.0.0 --to staging --reason \"production {reason}",
        f"registry promote credit-approval 2.0.0 --to production --reason \"production {reason}",
        "registry promote fraud-detector 1.0.0 --to archived --reason \"archived in MLflow model 'fraud_detector'\"",
    ]
    # Each is a command a shell runs as written: one word per reason.
    assert all(shlex.split(step)[-2] == "--reason" for step in steps)
    assert shlex.split(steps[0])[-1] == "staging in MLflow model 'Credit Approval'"
    assert "Once it is merged, bring the stages over through the lifecycle" in result.out
    model = yaml.safe_load(show(registry_dir, branch, "models/credit-approval/model.yaml"))
    # The registered model's tags come over (task is model.yaml's own field); aliases other than
    # champion become tags.
    assert model["tags"] == {"owner_team": "risk", "pii": "false", "mlflow.alias.challenger": "3.1.0"}
    assert model["description"] == "Approves or declines credit applications" and model["task"] == "classification"
    log = git(registry_dir, "log", "--format=%B", f"main..{branch}")
    assert "Imported-from" not in log
    subjects = git(registry_dir, "log", "--format=%s", f"main..{branch}").splitlines()
    assert subjects == ["Describe credit-approval from MLflow model 'Credit Approval'",
                        "Register credit-approval@3.1.0", "Register credit-approval@2.0.0",
                        "Register credit-approval@1.0.0"]

    # The branch is a valid registry, its stage changes pass the lifecycle (it has none), and
    # DVC's remote serves the weights byte for byte.
    git(registry_dir, "switch", "--quiet", branch)
    assert cli("validate", cwd=registry_dir).out.strip() == "valid"
    lifecycle = cli("check", "--base", "main", "--gate", "lifecycle", "--json", "-", cwd=registry_dir)
    assert lifecycle.code == 0, lifecycle.out
    assert [g["status"] for g in json.loads(lifecycle.out)["gates"]] == ["skip"]
    from registry.repo import storage

    storage.pull(registry_dir, ["models/credit-approval/2.0.0/data--weights.bin.dvc"])
    weights = (registry_dir / "models/credit-approval/2.0.0/data--weights.bin").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == {a["path"]: a["sha256"] for a in second["artifacts"]}[
        "data--weights.bin"]


def test_a_second_import_changes_nothing(registry_dir: Path, store: Store, cli: Callable[..., Result]) -> None:
    assert run_import(cli, registry_dir, store).code == 0
    before = refs(registry_dir)

    again = run_import(cli, registry_dir, store, "--json")

    assert again.code == 0, again.err
    assert refs(registry_dir) == before  # no commit, no branch, no push
    report = json.loads(again.out)
    assert [m["status"] for m in report["models"]] == ["up-to-date", "up-to-date"]
    assert {v["status"] for m in report["models"] for v in m["versions"]} == {"skipped"}
    assert report["failed"] is False


def test_new_versions_and_moved_aliases_add_commits_to_the_branch(
        registry_dir: Path, store: Store, cli: Callable[..., Result], tmp_path: Path) -> None:
    assert run_import(cli, registry_dir, store, "--model", CREDIT).code == 0
    assert "import/mlflow" not in git(registry_dir, "ls-remote", "--heads", "origin")
    tip = git(registry_dir, "rev-parse", "import/mlflow/credit-approval").strip()
    run = log_run(store, "fourth", {"C": "0.3"}, [("accuracy", 0.95, 0)], {"task": "classification"})
    version_from_logged_model(store, tmp_path / "m5", CREDIT, run, weights=0.3, nested=False)
    store.client.set_registered_model_alias(CREDIT, "champion", "4")

    result = run_import(cli, registry_dir, store, "--model", CREDIT)

    assert result.code == 0, result.err
    assert "1 registered, 3 already there" in result.out
    branch = "import/mlflow/credit-approval"
    assert git(registry_dir, "rev-list", f"{tip}..{branch}").count("\n") == 1  # 4.0.0; stages are not set
    assert git(registry_dir, "merge-base", "--is-ancestor", tip, branch) == ""
    assert show(registry_dir, branch, "models/credit-approval/stages.yaml").splitlines()[1:] == ["{}"]
    assert "registry promote credit-approval 4.0.0 --to production" in result.out
    assert "registry promote credit-approval 2.0.0 --to production" not in result.out
    assert card_at(registry_dir, branch, "credit-approval", "4.0.0")["metrics"] == {"accuracy": 0.95}


def test_the_printed_promotions_pass_the_lifecycle_one_after_another(
        registry_dir: Path, store: Store, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import merge

    result = run_import(cli, registry_dir, store, "--model", CREDIT)
    assert result.code == 0, result.err
    steps = [line.strip() for line in result.out.splitlines() if line.strip().startswith("registry promote")]
    merge(registry_dir, "import/mlflow/credit-approval", monkeypatch, pr=1)
    for pr, step in enumerate(steps, start=2):
        words = shlex.split(step)
        made = cli(*words[1:], cwd=registry_dir)
        assert made.code == 0, made.err
        checked = cli("check", "--base", "main", "--gate", "lifecycle", "--json", "-", cwd=registry_dir)
        assert checked.code == 0, checked.out  # each step is an allowed transition on its own
        assert [g["status"] for g in json.loads(checked.out)["gates"]] == ["pass"]
        merge(registry_dir, f"promote/credit-approval/{words[3]}-to-{words[5]}", monkeypatch, pr=pr)
    held = yaml.safe_load(show(registry_dir, "main", "models/credit-approval/stages.yaml"))
    assert held == {"production": "2.0.0", "staging": ["3.1.0"]}


def test_a_changed_artifact_is_a_conflict_and_is_never_overwritten(
        registry_dir: Path, store: Store, cli: Callable[..., Result]) -> None:
    assert run_import(cli, registry_dir, store).code == 0
    before, tree = refs(registry_dir), work_tree(registry_dir)
    run_root = store.client.get_run(store.runs["first"]).info.artifact_uri.removeprefix("file://")
    (Path(run_root) / "model" / "requirements.txt").write_text("mlflow-skinny\nnumpy\nscikit-learn\n")

    result = run_import(cli, registry_dir, store)

    assert result.code == 1
    assert "credit-approval@1.0.0 is already registered (on import/mlflow/credit-approval) with other files: " \
           "requirements.txt has sha256" in result.out
    assert "error: credit-approval: 1 version conflict with what is registered; nothing was imported" in result.err
    assert "fraud-detector ← MLflow model 'fraud_detector': up to date" in result.out
    assert refs(registry_dir) == before and work_tree(registry_dir) == tree


def test_names_that_cannot_be_registry_names_are_refused(
        registry_dir: Path, store: Store, cli: Callable[..., Result], tmp_path: Path) -> None:
    store.client.create_registered_model("Modèle crédit")
    store.client.create_registered_model("Fraud Detector")  # becomes fraud-detector, like fraud_detector
    before = refs(registry_dir)

    result = run_import(cli, registry_dir, store)

    assert result.code == 1
    assert "error: MLflow model 'Modèle crédit' has no registry name: 'modèle-crédit' is not 1-64 lowercase " \
           "ASCII letters" in result.err
    assert "MLflow models 'Fraud Detector' and 'fraud_detector' would both become 'fraud-detector'" in result.err
    assert "credit-approval ← MLflow model 'Credit Approval': 3 registered" in result.out  # the others go on
    assert "import/mlflow/fraud-detector" not in git(registry_dir, "branch", "--list")
    assert refs(registry_dir) != before


def test_bad_invocations_change_nothing(registry_dir: Path, store: Store, cli: Callable[..., Result],
                                        tmp_path: Path) -> None:
    from registry import api

    before, tree = refs(registry_dir), work_tree(registry_dir)
    missing = tmp_path / "nope.db"
    result = cli("import", "mlflow", "--tracking-uri", f"sqlite:///{missing}", cwd=registry_dir)
    assert result.code == 2 and f"no such database file '{missing}'" in result.err
    assert not missing.exists()  # MLflow would have created an empty database
    result = run_import(cli, registry_dir, store, "--model", "Nope")
    assert result.code == 2
    assert "--model 'Nope': no such registered model in MLflow (it has: 'Credit Approval', 'fraud_detector')" \
           in result.err
    assert refs(registry_dir) == before and work_tree(registry_dir) == tree

    lonely = api.init(tmp_path / "no-origin", dvc_remote=str(tmp_path / "no-origin-dvc")).root
    result = run_import(cli, lonely, store, "--push")
    assert result.code == 2 and "no remote 'origin'" in result.err and "leave out --push" in result.err
    assert "Traceback" not in result.err


def test_a_failed_import_leaves_no_branch(registry_dir: Path, store: Store, cli: Callable[..., Result]) -> None:
    # DVC cannot push: the model is refused and nothing of it stays behind.
    (registry_dir / ".dvc" / "config.local").write_text("['remote \"storage\"']\n    url = /dev/null/storage\n")
    before = refs(registry_dir)

    result = run_import(cli, registry_dir, store, "--model", FRAUD)

    assert result.code == 1
    assert "DVC could not push to the remote" in result.err
    assert refs(registry_dir) == before
    assert len(git(registry_dir, "worktree", "list").splitlines()) == 1


# The pure parts: names, flat file names, stages.

def test_registry_names_from_mlflow_names() -> None:
    assert registry_name("Credit Approval") == "credit-approval"
    assert registry_name("fraud_detector_v2") == "fraud-detector-v2"
    for bad in ("team/model", "Crédit", "-leading", "x" * 65, "a.b"):
        with pytest.raises(RegistryError, match="has no registry name"):
            registry_name(bad)


def test_nested_files_are_flattened_or_refused() -> None:
    assert flat_names(["MLmodel", "data/model.pth", "code/src/util.py"], "m") == {
        "MLmodel": "MLmodel", "data/model.pth": "data--model.pth", "code/src/util.py": "code--src--util.py"}
    with pytest.raises(RegistryError, match="'data--x' and 'data/x' would both be named 'data--x'"):
        flat_names(["data/x", "data--x"], "m")
    with pytest.raises(RegistryError, match=r"'my model\.bin' is not allowed"):
        flat_names(["my model.bin"], "m")
    with pytest.raises(RegistryError, match=r"'\.DS_Store' is not allowed"):
        flat_names(["data/.DS_Store"], "m")
    with pytest.raises(RegistryError, match="cannot hold"):
        flat_names(["card.yaml"], "m")


def test_stage_mapping() -> None:
    versions = {1: ("1.0.0", "Production"), 2: ("2.0.0", "Production"), 3: ("3.0.0", "Staging"),
                4: ("4.0.0", "Archived"), 5: ("5.0.0", "None")}
    stages, tags, notes = map_stages(versions, {"challenger": 5}, "deprecated", "m")
    # Without a champion the newest legacy Production version wins.
    assert stages == {1: "deprecated", 2: "production", 3: "staging", 4: "archived"}
    assert tags == {"mlflow.alias.challenger": "5.0.0"}
    assert "the newest version in legacy stage 'Production' gives production to version 2" in notes[0]
    stages, _, notes = map_stages(versions, {"champion": 3}, "archived", "m")
    assert stages == {1: "archived", 2: "archived", 3: "production", 4: "archived"}
    assert "has alias 'champion' and legacy stage 'Staging'; the alias wins" in notes[0]


def test_help(cli: Callable[..., Result]) -> None:
    result = cli("import", "mlflow", "--help")
    assert result.code == 0 and "--tracking-uri URI" in result.out and "--push" in result.out
    assert "--no-push" not in result.out  # deprecated: accepted, does nothing, not offered


def test_without_mlflow_the_command_says_what_to_install(python: str, tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['mlflow'] = None\nfrom registry.cli.main import main\n"
            "main(['import', 'mlflow', '--tracking-uri', 'http://127.0.0.1:9'])\n")
    from registry import api

    repo = api.init(tmp_path / "reg", dvc_remote=str(tmp_path / "dvc")).root
    proc = subprocess.run([python, "-c", code], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: MLflow is not installed: pip install 'gitops-registry[mlflow]'"


def test_import_pushes_only_with_push_like_every_other_command(
        registry_dir: Path, store: Store, cli: Callable[..., Result]) -> None:
    result = run_import(cli, registry_dir, store, "--model", FRAUD)

    assert result.code == 0, result.err
    assert "import/mlflow" not in git(registry_dir, "ls-remote", "--heads", "origin")
    assert "(pushed)" not in result.out
    assert "Next: git push -u origin import/mlflow/fraud-detector, then open a pull request" in result.out
    # --no-push, the old opt-out, is still accepted: it changes nothing and says so.
    kept = run_import(cli, registry_dir, store, "--model", FRAUD, "--no-push")
    assert kept.code == 0, kept.err
    assert "--no-push is deprecated and does nothing" in kept.err
    both = run_import(cli, registry_dir, store, "--model", FRAUD, "--push", "--no-push")
    assert both.code == 2 and "contradict" in both.err
    assert "import/mlflow" not in git(registry_dir, "ls-remote", "--heads", "origin")


def test_run_uri_is_the_model_uri_inside_the_run(
        registry_dir: Path, store: Store, cli: Callable[..., Result]) -> None:
    # mlflow.register_model("/abs/path/artifacts/model", ...): the run's root is file:///abs/path/artifacts.
    run = store.client.get_run(store.runs["fraud"])
    plain = run.info.artifact_uri.removeprefix("file://") + "/model"
    store.client.create_model_version(FRAUD, plain, run_id=store.runs["fraud"])

    result = run_import(cli, registry_dir, store)

    assert result.code == 0, result.err
    card = card_at(registry_dir, "import/mlflow/fraud-detector", "fraud-detector", "2.0.0")
    assert card["training"]["run_uri"] == f"runs:/{store.runs['fraud']}/model"
    # MLflow 3 logged models: MLmodel's artifact_path is the model's local location, not a run path.
    for version in ("2.0.0", "3.1.0"):
        card = card_at(registry_dir, "import/mlflow/credit-approval", "credit-approval", version)
        assert card["training"]["run_uri"] == f"runs:/{store.runs['second']}/model"


def test_model_tags_for_a_new_model_and_a_note_for_an_existing_one(
        registry_dir: Path, store: Store, cli: Callable[..., Result]) -> None:
    assert run_import(cli, registry_dir, store, "--model", CREDIT).code == 0
    branch = "import/mlflow/credit-approval"
    model = yaml.safe_load(show(registry_dir, branch, "models/credit-approval/model.yaml"))
    assert model["tags"]["owner_team"] == "risk" and model["tags"]["pii"] == "false"
    store.client.set_registered_model_tag(CREDIT, "owner_team", "lending")
    before = refs(registry_dir)

    again = run_import(cli, registry_dir, store, "--model", CREDIT)

    # model.yaml is reviewed registry data once it exists: the import leaves it and says so.
    assert again.code == 0, again.err
    assert refs(registry_dir) == before
    assert "up to date" in again.out
    assert "model tags owner_team are not in models/credit-approval/model.yaml as they are in the source" \
           in again.out

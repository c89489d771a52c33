"""`registry evaluate`: a version recomputed on new labelled data, compared with its card (the drift check).

The model is the gate tests' m (predict.py labels every row of 0.5s as 1, so on write_holdout's
data its accuracy is positives / 20; the regression m predicts 1 too, so its rmse is the labels'
distance from 1). Real git, real DVC, the real sandboxed child.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry.files import config
from registry.files.config import StagePolicy
from registry.gates.metrics import lower_is_better
from tests.conftest import Result, git, merge, snapshot
from tests.gates.conftest import POLICY, TASK_POLICY, on_main, register, write_holdout
from tests.gates.conftest import gated as gated  # the fixture, shared
from tests.gates.conftest import regression as regression  # the fixture, shared

DRIFT = "  drift:\n    max_drop: {accuracy: 0.05}\n"
WITH_DRIFT = POLICY.replace("trusted_keys:", DRIFT + "trusted_keys:", 1)
REGRESSION_DRIFT = TASK_POLICY.replace("trusted_keys:", "      drift:\n        max_drop: {rmse: 0.05}\ntrusted_keys:", 1)


def evaluate(cli: Callable[..., Result], repo: Path, *args: str) -> Result:
    result = cli("evaluate", *args, cwd=repo)
    assert "Traceback" not in result.out + result.err
    return result


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by metric: card, now, change, allowed, verdict."""
    found = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 6 and cells[0] != "metric":
            found[cells[0].removesuffix(" (lower is better)")] = cells[1:]
    return found


def regression_data(path: Path, spread: float) -> Path:
    """Labels 1 ± spread, alternating: the regression m (always 1) scores rmse = spread, r2 = 0."""
    y = np.array([1 + spread, 1 - spread] * 10, np.float64)
    np.savez(path, x=np.full((20, 4), 0.5, np.float32), y=y)
    return path


# -- the drift check ------------------------------------------------------------------------------------


def test_data_that_scores_as_on_the_card_passes(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, config=WITH_DRIFT)
    write_holdout(tmp_path / "new.npz", 19)  # 0.95, the card's accuracy
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "new.npz"))
    assert result.code == 0, result.err
    assert "metric" in result.out and "verdict" in result.out
    assert rows(result.out)["accuracy"] == ["0.9500", "0.9500", "+0.0000", "0.05", "ok"]
    assert "within policy.drift.max_drop" in result.out


def test_a_drop_up_to_max_drop_passes_and_beyond_it_fails(gated: Path, tmp_path: Path,
                                                          cli: Callable[..., Result]) -> None:
    on_main(gated, config=WITH_DRIFT)
    write_holdout(tmp_path / "edge.npz", 18)  # 0.90: dropped by exactly 0.05
    assert evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "edge.npz")).code == 0
    write_holdout(tmp_path / "worse.npz", 17)  # 0.85: dropped by 0.10
    before = snapshot(gated)
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "worse.npz"))
    assert result.code == 1
    assert rows(result.out)["accuracy"] == ["0.9500", "0.8500", "-0.1000", "0.05", "DRIFT"]
    assert "drift: accuracy dropped by more than policy.drift.max_drop allows" in result.out
    assert snapshot(gated) == before


def test_without_a_drift_policy_it_reports_and_exits_0(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    write_holdout(tmp_path / "worse.csv.npz", 10)
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "worse.csv.npz"))
    assert result.code == 0, result.err
    assert rows(result.out)["accuracy"] == ["0.9500", "0.5000", "-0.4500", "-", "-"]
    assert "no drift policy" in result.out


def test_csv_data_works_like_npz(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, config=WITH_DRIFT)
    data = tmp_path / "new.csv"
    data.write_text("a,b,label,c,d\n" + "".join(f"0.5,0.5,{int(i < 16)},0.5,0.5\n" for i in range(20)))
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(data), "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["exceeded"] is True and report["max_drop"] == {"accuracy": 0.05}
    [accuracy] = report["metrics"]
    assert accuracy["metric"] == "accuracy" and accuracy["now"] == 0.8 and accuracy["card"] == 0.95
    assert accuracy["exceeded"] is True and not accuracy["lower_is_better"]


def test_model_yaml_tightens_the_registry_drift_policy(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    model_yaml = (gated / "models/m/model.yaml").read_text()
    on_main(gated, config=WITH_DRIFT, model_yaml=model_yaml + "policy:\n  drift:\n    max_drop: {accuracy: 0.01}\n")
    write_holdout(tmp_path / "edge.npz", 18)  # dropped by 0.05: the registry allows it, the model does not
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "edge.npz"))
    assert result.code == 1
    assert rows(result.out)["accuracy"][-2:] == ["0.01", "DRIFT"]


def test_an_rmse_rise_is_drift(regression: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(regression, config=REGRESSION_DRIFT)  # policy.tasks.regression.drift
    better = evaluate(cli, regression, "m@1.0.0", "--data", str(regression_data(tmp_path / "better.npz", 0.1)),
                      "--metric", "rmse")
    assert better.code == 0, better.err
    assert rows(better.out)["rmse"] == ["0.2000", "0.1000", "-0.1000", "0.05", "ok"]
    assert "rmse (lower is better)" in better.out
    worse = evaluate(cli, regression, "m@1.0.0", "--data", str(regression_data(tmp_path / "worse.npz", 0.5)))
    assert worse.code == 1
    table = rows(worse.out)
    assert table["rmse"] == ["0.2000", "0.5000", "+0.3000", "0.05", "DRIFT"]
    assert table["r2"] == ["0.9000", "0.0000", "-0.9000", "-", "-"]  # no limit on r2: reported only


def test_a_metric_the_policy_does_not_bound_goes_by_its_name() -> None:
    assert lower_is_better("rmse", None) and lower_is_better("val_loss", StagePolicy())
    assert not lower_is_better("accuracy", None) and not lower_is_better("r2", StagePolicy())
    assert not lower_is_better("rmse", StagePolicy(metrics={"rmse": {"min": 0.1}}))  # the policy says otherwise
    assert lower_is_better("score", StagePolicy(metrics={"score": {"max": 3}}))


def test_the_metrics_gate_reads_an_unbounded_rmse_as_lower_is_better() -> None:
    from registry.files.cards import Card
    from registry.gates.metrics import _regressions

    policy = StagePolicy(max_regression={"rmse": {"absolute": 0.01}})  # no rmse threshold to tell the direction
    new, production = Card("m", "1.1.0", (), {"rmse": 0.5}, {}), Card("m", "1.0.0", (), {"rmse": 0.2}, {})
    assert _regressions(new, production, policy) == [
        "rmse 0.5 regresses from production 1.0.0's 0.2 by 0.3 (allowed 0.01)"]
    assert _regressions(production, new, policy) == []


def test_drift_policy_resolution() -> None:
    registry = config.RegistryConfig.from_data(
        {"policy": {"drift": {"max_drop": {"accuracy": 0.05}},
                    "tasks": {"regression": {"drift": {"max_drop": {"rmse": 0.1}}}}}})
    assert config.effective_drift(registry, "classification", None).max_drop == {"accuracy": 0.05}
    assert config.effective_drift(registry, "regression", None).max_drop == {"rmse": 0.1}
    own = {"drift": {"max_drop": {"accuracy": 0.2, "f1": 0.01}}}  # a looser accuracy does not loosen
    assert config.effective_drift(registry, None, own).max_drop == {"accuracy": 0.05, "f1": 0.01}
    assert "drift" not in registry.policy  # not a stage


# -- the Prometheus textfile ----------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_textfile_is_written_atomically_with_card_evaluated_drift_and_verdict(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, config=WITH_DRIFT)
    write_holdout(tmp_path / "worse.npz", 17)
    out = tmp_path / "textfiles" / "registry.prom"
    out.parent.mkdir()
    out.write_text("old\n")
    assert evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "worse.npz"), "--textfile", str(out)).code == 1
    text = out.read_text()
    assert "# TYPE registry_model_metric gauge" in text and "# TYPE registry_model_drift gauge" in text
    assert "# TYPE registry_model_drift_exceeded gauge" in text
    samples = _samples(text)
    who = 'model="m",version="1.0.0"'
    assert samples[f'registry_model_metric{{{who},metric="accuracy",source="card"}}'] == 0.95
    assert samples[f'registry_model_metric{{{who},metric="accuracy",source="evaluated"}}'] == 0.85
    assert math.isclose(samples[f'registry_model_drift{{{who},metric="accuracy"}}'], 0.10)
    assert samples[f"registry_model_drift_exceeded{{{who}}}"] == 1
    assert len(samples) == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["registry.prom"]  # no temp file left

    write_holdout(tmp_path / "same.npz", 19)
    assert evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "same.npz"), "--textfile", str(out)).code == 0
    samples = _samples(out.read_text())
    assert samples[f"registry_model_drift_exceeded{{{who}}}"] == 0
    assert samples[f'registry_model_drift{{{who},metric="accuracy"}}'] == 0


def test_the_prometheus_text_parses(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client: pip install 'gitops-registry[serve]'")
    write_holdout(tmp_path / "new.npz", 19)
    out = tmp_path / "m.prom"
    assert evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "new.npz"), "--textfile", str(out)).code == 0
    families = {f.name: f for f in parser.text_string_to_metric_families(out.read_text())}
    assert set(families) == {"registry_model_metric", "registry_model_drift", "registry_model_drift_exceeded"}
    assert {s.labels["source"] for s in families["registry_model_metric"].samples} == {"card", "evaluated"}


# -- bad input: one message, the exit code, nothing written ---------------------------------------------


def _bad_npz(path: Path) -> Path:
    np.savez(path, x=np.full((20, 4), 0.5, np.float32))  # no labels
    return path


@pytest.mark.parametrize(("args", "code", "message"), [
    (["nope@1.0.0", "--data", "{good}"], 1, "nope: no such model in the registry"),
    (["m@9.9.9", "--data", "{good}"], 1, "m@9.9.9: no such version"),
    (["m", "--data", "{good}"], 2, "give a version, NAME@VERSION"),
    (["../m@1.0.0", "--data", "{good}"], 2, "../m"),
    (["m@1.0.0", "--data", "{tmp}/missing.npz"], 2, "missing.npz: no such file"),
    (["m@1.0.0", "--data", "{tmp}/folder.npz"], 2, "folder.npz: not a regular file"),
    (["m@1.0.0", "--data", "{tmp}/data.txt"], 2, "use an .npz (arrays x and y) or a .csv"),
    (["m@1.0.0", "--data", "{tmp}/garbage.npz"], 1, "garbage.npz is not a readable .npz"),
    (["m@1.0.0", "--data", "{tmp}/nolabels.npz"], 1, "nolabels.npz has no array y (needs x and y)"),
    (["m@1.0.0", "--data", "{tmp}/nolabels.csv"], 1, "nolabels.csv has no 'label' column in its header"),
    (["m@1.0.0", "--data", "{tmp}/short.csv"], 1, "short.csv:3: 2 fields, the header has 3"),
    (["m@1.0.0", "--data", "{good}", "--metric", "f1"], 2, "--metric f1: the card of m@1.0.0 claims no f1 "
                                                           "(it has accuracy)"),
    (["m@1.0.0", "--data", "{good}", "--textfile", "{tmp}"], 2, "is a directory"),
])
def test_bad_input(gated: Path, tmp_path: Path, cli: Callable[..., Result], args: list[str], code: int,
                   message: str) -> None:
    on_main(gated, config=WITH_DRIFT)
    write_holdout(tmp_path / "good.npz", 19)
    (tmp_path / "data.txt").write_text("x\n")
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all")
    _bad_npz(tmp_path / "nolabels.npz")
    (tmp_path / "nolabels.csv").write_text("a,b\n1,2\n")
    (tmp_path / "short.csv").write_text("a,b,label\n1,2,1\n1,2\n")
    textfile = tmp_path / "out.prom"
    filled = [a.format(good=tmp_path / "good.npz", tmp=tmp_path) for a in args]
    if "--textfile" not in filled:
        filled += ["--textfile", str(textfile)]
    before = snapshot(gated)
    result = evaluate(cli, gated, *filled)
    assert result.code == code, result.out + result.err
    assert message in result.err, result.err
    assert result.err.count("\n") == 1 or (code == 2 and "Usage:" in result.err), result.err
    assert not textfile.exists()
    assert snapshot(gated) == before
    as_json = evaluate(cli, gated, *filled, "--json")
    assert as_json.code == code and message in json.loads(as_json.out)["error"]


def test_a_metric_the_card_claims_but_that_cannot_be_recomputed(gated: Path, tmp_path: Path,
                                                               cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0", accuracy="0.95, auc: 0.97")  # evaluated at HEAD: the branch
    write_holdout(tmp_path / "new.npz", 19)
    result = evaluate(cli, gated, "m@1.1.0", "--data", str(tmp_path / "new.npz"), "--metric", "auc")
    assert result.code == 2 and "--metric auc: cannot be recomputed from predictions (known: accuracy" in result.err
    default = evaluate(cli, gated, "m@1.1.0", "--data", str(tmp_path / "new.npz"))
    assert default.code == 0 and list(rows(default.out)) == ["accuracy"]  # auc is left out, not failed on


def test_a_model_that_fails_on_the_data_is_one_message(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    np.savez(tmp_path / "wide.npz", x=np.full((20, 3), 0.5, np.float32), y=np.ones(20, np.int64))
    out = tmp_path / "out.prom"
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "wide.npz"), "--textfile", str(out))
    assert result.code == 1
    assert result.err.startswith(f"error: evaluating m@1.0.0 on {tmp_path / 'wide.npz'}: ")
    assert "predict.py raised ValueError" in result.err
    assert not out.exists()


@pytest.mark.parametrize(("drift", "message"), [
    ("{max_drop: {accuracy: -0.1}}", "registry.yaml:{line}: policy.drift.max_drop.accuracy: -0.1 is less than "
                                     "the minimum of 0"),
    ("{max_drop: {accuracy: .nan}}", "registry.yaml:{line}: policy.drift.max_drop.accuracy: .nan is not allowed"),
    ("{max_drop: {accuracy: lots}}", "registry.yaml:{line}: policy.drift.max_drop.accuracy"),
    ("{max_rise: {rmse: 0.1}}", "registry.yaml:{line}: policy.drift"),
])
def test_a_bad_drift_policy_is_refused_with_its_line(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                     drift: str, message: str) -> None:
    text = POLICY.replace("trusted_keys:", f"  drift: {drift}\ntrusted_keys:", 1)
    line = text.splitlines().index(f"  drift: {drift}") + 1
    on_main(gated, config=text)
    validated = cli("validate", "registry.yaml", cwd=gated)
    assert validated.code == 1 and message.format(line=line) in validated.out + validated.err
    write_holdout(tmp_path / "new.npz", 19)
    result = evaluate(cli, gated, "m@1.0.0", "--data", str(tmp_path / "new.npz"))
    assert result.code == 1 and message.format(line=line) in result.err


def test_model_yaml_drift_is_validated(gated: Path, cli: Callable[..., Result]) -> None:
    model_yaml = (gated / "models/m/model.yaml").read_text()
    on_main(gated, model_yaml=model_yaml + "policy:\n  drift:\n    max_drop: {accuracy: -1}\n")
    result = cli("validate", "models/m/model.yaml", cwd=gated)
    assert result.code == 1 and "models/m/model.yaml:" in result.out + result.err
    assert "policy.drift.max_drop.accuracy" in result.out + result.err


def test_a_drift_policy_change_reads_as_one_in_the_audit_log() -> None:
    from registry.queries.policy_changes import describe_policy_change

    assert describe_policy_change(b"{}", b"policy: {drift: {max_drop: {accuracy: 0.05}}}") == [
        "drift max_drop accuracy set to 0.05"]  # not a stage with default approvals
    assert describe_policy_change(b"policy: {drift: {max_drop: {accuracy: 0.05}}}",
                                  b"policy: {drift: {max_drop: {accuracy: 0.02}}}") == ["drift max_drop accuracy 0.05 → 0.02"]


def test_a_fresh_clone_pulls_the_versions_dvc_files_first(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import save_file

    big = tmp_path / "big.safetensors"  # over storage.git_max_bytes: DVC-tracked
    save_file({"pad": np.zeros(400_000, np.float32)}, str(big))
    register(cli, gated, tmp_path, "1.1.0", sign=True, extra=[big])
    merge(gated, "register/m/1.1.0", monkeypatch)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(gated), str(clone))
    assert (clone / "models/m/1.1.0/big.safetensors.dvc").is_file()
    assert not (clone / "models/m/1.1.0/big.safetensors").exists()
    write_holdout(tmp_path / "new.npz", 19)
    result = evaluate(cli, clone, "m@1.1.0", "--data", str(tmp_path / "new.npz"))
    assert result.code == 0, result.err
    assert rows(result.out)["accuracy"][:2] == ["0.9500", "0.9500"]
    assert (clone / "models/m/1.1.0/big.safetensors").stat().st_size == big.stat().st_size
    assert git(clone, "status", "--porcelain") == ""


def test_the_model_runs_in_its_declared_environment(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                    cache: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing beyond the stdlib\n")  # no NumPy there: the registry's is not lent
    register(cli, gated, tmp_path, "1.1.0", extra=[requirements], card_extra="environment: requirements.txt\n")
    write_holdout(tmp_path / "new.npz", 19)
    result = evaluate(cli, gated, "m@1.1.0", "--data", str(tmp_path / "new.npz"))
    assert result.code == 1 and "add numpy to its requirements file" in result.err, result.err
    assert any(cache.iterdir())  # the environment was built (and is reused next time)

    requirements.write_text("numpy\n--extra-index-url https://evil.example/simple\n")
    register(cli, gated, tmp_path, "1.2.0", extra=[requirements], card_extra="environment: requirements.txt\n")
    refused = evaluate(cli, gated, "m@1.2.0", "--data", str(tmp_path / "new.npz"))
    assert refused.code == 1
    assert "environment: models/m/1.2.0/requirements.txt:2: the option --extra-index-url is not allowed" in refused.err

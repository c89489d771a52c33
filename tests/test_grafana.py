"""docs/grafana/registry-serving.json: importable, and every metric it queries is one the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from registry.serving.store import write_metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "registry-serving.json"

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and $variables left out)."""
    text = _STRING.sub('""', expr)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # selectors' label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [5m], [$__rate_interval]
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def server_names() -> set[str]:
    """The series names in the text the built-in server's /metrics gives after it served a request."""
    pytest.importorskip("prometheus_client", reason="the built-in server's metrics need the [serve] extra")
    from registry.serving.server.metrics import Metrics

    metrics = Metrics()
    metrics.request("m", "1.0.0", 200, 0.01)
    metrics.request("m", "1.0.0", 500, 0.01)
    metrics.serving("m", "production", "1.0.0", None)
    metrics.swaps.labels("m").inc()
    metrics.swap_failures.labels("m", "1.1.0").inc()
    return _names(metrics.text().decode())


def _names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def pull_client_names(tmp_path: Path) -> set[str]:
    """The names in the text write_metrics produces for a sample (TYPE lines and samples)."""
    path = tmp_path / "registry.prom"
    write_metrics(path, "production", {"m": "1.0.0", "n": "2.0.0"}, 1_700_000_000.0, 3)
    return _names(path.read_text())


def exported(names: set[str]) -> set[str]:
    """The series names Prometheus stores for these metrics (counters' _total, histograms' parts)."""
    series = set(names)
    for name in names:
        series |= {name + "_total", name + "_bucket", name + "_sum", name + "_count", name + "_created"}
    return series


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            found.append((f"annotation {annotation['name']}", annotation["expr"]))
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            assert inner, query
            found.append((f"variable {variable['name']}", inner.group(1)))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def test_every_metric_the_dashboard_queries_is_exported_by_the_server_or_the_pull_client(
        dashboard: dict[str, Any], tmp_path: Path) -> None:
    known = exported(server_names() | pull_client_names(tmp_path))
    used: dict[str, list[str]] = {}
    for where, expr in exprs(dashboard):
        names = metric_names(expr)
        # `{__name__=~"a|b"}` in the variables: those names count too.
        names |= {n for m in re.findall(r'__name__=~"([^"]*)"', expr) for n in m.split("|")}
        assert names, f"{where}: no metric in {expr!r}"
        for name in names:
            used.setdefault(name, []).append(where)
    unknown = {name: places for name, places in used.items() if name not in known}
    assert not unknown, f"metrics no code exports: {unknown}"
    # The dashboard shows what the issue asks for, from both sides.
    for needed in ("registry_served_version_info", "registry_serving_version_info", "registry_model_swaps_total",
                   "registry_model_requests_total", "registry_model_request_errors_total",
                   "registry_model_request_duration_seconds_bucket"):
        assert needed in used, needed
    assert any("histogram_quantile" in expr for _, expr in exprs(dashboard))


def test_the_extractor_catches_a_misspelt_metric_and_ignores_labels_functions_and_variables(tmp_path: Path) -> None:
    expr = ('histogram_quantile(0.95, sum by (le, model) (rate(registry_model_request_duration_seconds_bucket'
            '{model=~"$model", code=~"5.."}[$__rate_interval]))) / on (model) group_left '
            'registy_model_requests_total offset 5m')
    assert metric_names(expr) == {"registry_model_request_duration_seconds_bucket", "registy_model_requests_total"}
    known = exported(server_names() | pull_client_names(tmp_path))
    assert "registy_model_requests_total" not in known
    assert {"registry_serving_version_info", "registry_last_successful_pull_timestamp_seconds",
            "registry_pull_failures_total"} <= pull_client_names(tmp_path)


def test_the_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]

"""`registry import mlflow`: an MLflow model registry (SQLite or a tracking server) read into plans.

What becomes what (docs/mlflow.md has the walkthrough):

- each registered model version becomes ``NAME@N.0.0`` (MLflow version N), unless its
  ``registry.version`` or ``semver`` tag names another semantic version;
- the card comes from the version and its run: params → ``hyperparameters``, metrics
  (their latest values) → ``metrics``, run and version tags → ``tags`` (string values as
  they are), the version's description (else the model's, else a default), run id and
  ``runs:/`` URI → ``training``, ``created`` from the version's creation time,
  ``framework`` from the MLmodel flavors, ``task`` from a ``task`` tag or "unknown";
- the files are the version's artifacts as MLflow downloads them. Version folders are
  flat, so a nested file is renamed by joining its path with ``--``
  (``data/model.pth`` → ``data--model.pth``, recorded in the card tag
  ``mlflow.flattened``); a name that would be ambiguous or is not allowed is refused;
- alias ``champion`` and legacy stage ``Production`` → production (the alias wins when
  they name different versions), ``Staging`` → staging, ``Archived`` → archived; other
  aliases become model.yaml tags ``mlflow.alias.<alias>: <version>``;
- the registered model's tags (but ``task``, its own field) become model.yaml ``tags`` when the
  import creates the model; an existing model.yaml keeps its tags and the report notes the
  MLflow tags it does not hold. The import branch
  sets no stage: these are the `registry promote` commands the import prints, run through
  the lifecycle after the branch is merged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files import yamlio
from registry.files.names import MODEL_NAME_RE, Version
from registry.integrations.importers.apply import apply, check_push
from registry.integrations.importers.plan import (
    ModelOutcome,
    ModelPlan,
    ProgressFn,
    SourceFile,
    VersionPlan,
)
from registry.repo import storage
from registry.repo.quiet import quiet_loggers
from registry.repo.registry import Registry

INSTALL_HINT = "MLflow is not installed: pip install 'gitops-registry[mlflow]'"
BRANCH_PREFIX = "import/mlflow/"
SEPARATOR = "--"
VERSION_TAGS = ("registry.version", "semver")
TASK_TAG = "task"
ALIAS_TAG_PREFIX = "mlflow.alias."
LEGACY_STAGES = {"Production": "production", "Staging": "staging", "Archived": "archived"}
PRODUCTION_ALIAS = "champion"
# MLflow's own bookkeeping of every model a run logged: long JSON, not a fact about the model.
DROPPED_TAGS = {"mlflow.log-model.history"}
RESERVED_FILES = {"card.yaml", "signature.json", ".gitignore"}
_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_PART = re.compile(r"[A-Za-z0-9_.+-]+")
_HEX = re.compile(r"[0-9a-f]{7,64}")


@dataclass(frozen=True)
class ImportReport:
    tracking_uri: str
    models: tuple[ModelOutcome, ...]

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.models)

    def as_json(self) -> dict[str, Any]:
        return {"source": "mlflow", "models": [m.as_json() for m in self.models], "failed": self.failed}


def registry_name(mlflow_name: str) -> str:
    """An MLflow model name as a registry name: lowercase, '-' for spaces and underscores."""
    candidate = mlflow_name.lower().replace(" ", "-").replace("_", "-")
    if not MODEL_NAME_RE.fullmatch(candidate):
        raise RegistryError(
            f"MLflow model {mlflow_name!r} has no registry name: {candidate!r} is not 1-64 lowercase ASCII "
            "letters, digits and '-' starting with a letter or digit; rename it in MLflow "
            "(MlflowClient().rename_registered_model) and import again"
        )
    return candidate


def flat_names(origins: Sequence[str], label: str) -> dict[str, str]:
    """Each file's path in the model (posix, relative) → its name in the flat version folder."""
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    for origin in sorted(origins):
        parts = origin.split("/")
        bad = next((p for p in parts if not _PART.fullmatch(p) or p.startswith(".")), None)
        if bad is not None:
            raise RegistryError(
                f"{label}: artifact {origin!r}: {bad!r} is not allowed in a registry file name (ASCII letters, "
                "digits and _.+- only, not starting with '.'); rename it in MLflow or leave it out of the model"
            )
        flat = SEPARATOR.join(parts)
        if flat in RESERVED_FILES or flat.endswith(".dvc") or len(flat) > 255:
            raise RegistryError(f"{label}: artifact {origin!r} would be named {flat!r}, which a version folder "
                                "cannot hold (reserved, a .dvc name, or over 255 characters)")
        if flat in taken:
            raise RegistryError(
                f"{label}: artifacts {taken[flat]!r} and {origin!r} would both be named {flat!r} in the flat "
                f"version folder (nested paths are joined with {SEPARATOR!r}); rename one in MLflow"
            )
        taken[flat] = origin
        names[origin] = flat
    return names


def map_stages(versions: Mapping[int, tuple[str, str]], aliases: Mapping[str, int],
               on_replace: str, label: str) -> tuple[dict[int, str], dict[str, str], list[str]]:
    """MLflow stages and aliases → (stage per MLflow version, model.yaml tags, notes).

    versions: MLflow version → (registry version, legacy stage). A version holds one stage;
    production goes to one version: the champion alias over the legacy Production stage,
    else the newest version in Production; the others go where replaced versions go.
    """
    stage = {n: LEGACY_STAGES[legacy] for n, (_, legacy) in versions.items() if legacy in LEGACY_STAGES}
    notes: list[str] = []
    champion = aliases.get(PRODUCTION_ALIAS)
    if champion is not None and champion not in versions:
        notes.append(f"{label}: alias {PRODUCTION_ALIAS!r} names version {champion}, which is not imported")
        champion = None
    producing = sorted(n for n, s in stage.items() if s == "production")
    if champion is not None:
        held = stage.get(champion)
        if held not in (None, "production"):
            legacy = versions[champion][1]
            notes.append(f"{label}: version {champion} ({versions[champion][0]}) has alias {PRODUCTION_ALIAS!r} "
                         f"and legacy stage {legacy!r}; the alias wins: production")
        stage[champion] = "production"
        winner, reason = champion, f"alias {PRODUCTION_ALIAS!r}"
    elif producing:
        winner, reason = producing[-1], "the newest version in legacy stage 'Production'"
    else:
        winner = None
    for n in producing:
        if n != winner and winner is not None:
            stage[n] = on_replace
            notes.append(f"{label}: version {n} ({versions[n][0]}) is in legacy stage 'Production', but "
                         f"{reason} gives production to version {winner} ({versions[winner][0]}); "
                         f"{versions[n][0]} goes to {on_replace}")
    tags: dict[str, str] = {}
    for alias, n in sorted(aliases.items()):
        if alias == PRODUCTION_ALIAS:
            continue
        key = ALIAS_TAG_PREFIX + alias
        if not _KEY.fullmatch(key):
            notes.append(f"{label}: alias {alias!r} cannot be a model.yaml tag key; left out")
        elif n not in versions:
            notes.append(f"{label}: alias {alias!r} names version {n}, which is not imported; left out")
        else:
            tags[key] = versions[n][0]
    return stage, tags, notes


def import_mlflow(reg: Registry, tracking_uri: str, models: Sequence[str] = (), *, push: bool = False,
                  progress: ProgressFn | None = None) -> ImportReport:
    """Import every registered model (or those named) from the MLflow registry at tracking_uri."""
    check_push(reg, push)
    _check_uri(tracking_uri)
    _require_mlflow()
    with _quiet_mlflow(tracking_uri):
        client = _client(tracking_uri)
        registered = _call(lambda: _all_registered_models(client), "list the registered models")
        by_name = {rm.name: rm for rm in registered}
        unknown = [m for m in models if m not in by_name]
        if unknown:
            known = ", ".join(repr(n) for n in sorted(by_name)[:10]) or "none"
            raise UsageError(f"--model {unknown[0]!r}: no such registered model in MLflow (it has: {known})")
        selected = [by_name[m] for m in dict.fromkeys(models)] if models else sorted(registered, key=lambda r: r.name)
        names: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        for rm in selected:
            try:
                names[rm.name] = registry_name(rm.name)
            except RegistryError as exc:
                names[rm.name], errors[rm.name] = None, str(exc)
        for mlflow_name, name in names.items():
            clash = [other for other, n in names.items() if n == name and other != mlflow_name]
            if name is not None and clash:
                errors[mlflow_name] = (f"MLflow models {mlflow_name!r} and {clash[0]!r} would both become "
                                       f"{name!r}; rename one in MLflow and import again")
        outcomes = []
        for rm in selected:
            name = names[rm.name]
            label = f"MLflow model {rm.name!r}"
            if rm.name in errors or name is None:
                outcomes.append(ModelOutcome(name or rm.name, label, "refused", error=errors[rm.name]))
                continue
            try:
                with tempfile.TemporaryDirectory(prefix="registry-mlflow-") as tmp:
                    plan = _plan(reg, client, tracking_uri, rm, name, Path(tmp))
                    outcomes.append(apply(reg, plan, push=push, progress=progress))
            except RegistryError as exc:
                # One model's problem does not stop the others; the report lists it and the exit code says so.
                outcomes.append(ModelOutcome(name, label, "refused", error=str(exc)))
    return ImportReport(tracking_uri, tuple(outcomes))


def _check_uri(uri: str) -> None:
    if not uri.strip():
        raise UsageError("--tracking-uri is empty; give e.g. sqlite:///mlflow.db or http://mlflow.example:5000")
    if uri.startswith("sqlite:"):
        # SQLAlchemy's form: sqlite:///relative/path.db or sqlite:////absolute/path.db
        path = uri.removeprefix("sqlite:///").split("?")[0] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise UsageError(f"--tracking-uri {uri}: give the MLflow database file, e.g. sqlite:///mlflow.db")
        # MLflow would quietly create an empty database at a mistyped path.
        if not Path(path).is_file():
            raise UsageError(f"--tracking-uri {uri}: no such database file {path!r}")


def _require_mlflow() -> None:
    # Imported before its loggers are quietened: importing mlflow configures them.
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return _call(lambda: MlflowClient(tracking_uri=uri, registry_uri=uri), f"open {uri}")


def _call(action: Any, what: str) -> Any:
    """Run an MLflow call; its failures become one clear line."""
    from mlflow.exceptions import MlflowException

    try:
        return action()
    except MlflowException as exc:
        raise RegistryError(f"MLflow could not {what}: {exc.message}") from None
    except OSError as exc:
        raise RegistryError(f"MLflow could not {what}: {exc}") from None


@contextlib.contextmanager
def _quiet_mlflow(uri: str) -> Iterator[None]:
    """MLflow logs database migrations and draws download bars; a command prints its own report."""
    overrides = {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # A few MLflow calls use the global URI, whatever the client's (its default: ./mlflow.db).
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        with quiet_loggers("mlflow", "alembic"):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pages(search: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(token)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def _all_registered_models(client: Any) -> list[Any]:
    return _pages(lambda token: client.search_registered_models(max_results=100, page_token=token))


def _filter_string(name: str) -> str:
    quote = '"' if "'" in name else "'"
    if quote in name:
        raise RegistryError(f"MLflow model {name!r}: a name with both kinds of quotes cannot be searched for")
    return f"name = {quote}{name}{quote}"


def _plan(reg: Registry, client: Any, uri: str, rm: Any, name: str, tmp: Path) -> ModelPlan:
    label = f"MLflow model {rm.name!r}"
    found = _call(lambda: _pages(lambda token: client.search_model_versions(
        _filter_string(rm.name), max_results=1000, page_token=token)), f"list the versions of {rm.name!r}")
    notes: list[str] = []
    ready = []
    for mv in sorted(found, key=lambda m: int(m.version)):
        if str(getattr(mv, "status", "READY")) != "READY":
            notes.append(f"{label}: version {mv.version} is {mv.status}, not READY; not imported")
        else:
            ready.append(mv)
    numbers = {int(mv.version): _version_of(mv, label) for mv in ready}
    by_version: dict[str, int] = {}
    for n, version in numbers.items():
        if version in by_version:
            raise RegistryError(f"{label}: versions {by_version[version]} and {n} would both become "
                                f"{name}@{version}; fix their {VERSION_TAGS[0]!r} or {VERSION_TAGS[1]!r} tags")
        by_version[version] = n
    aliases = {str(a): int(v) for a, v in (getattr(rm, "aliases", None) or {}).items()}
    legacy = {int(mv.version): (numbers[int(mv.version)], str(mv.current_stage or "None")) for mv in ready}
    stage_of, alias_tags, alias_notes = map_stages(legacy, aliases, reg.config.on_replace, label)
    notes += alias_notes
    versions = []
    for mv in ready:
        n = int(mv.version)
        versions.append(_version_plan(client, uri, rm, mv, name, numbers[n], stage_of.get(n, "development"),
                                      tmp / str(n), notes))
    if not versions:
        notes.append(f"{label}: no version to import")
    rm_tags = {str(k): str(v) for k, v in (getattr(rm, "tags", None) or {}).items()}
    model_task = rm_tags.get(TASK_TAG)
    source_tags = {}
    for key, value in sorted(rm_tags.items()):
        if key == TASK_TAG or key in DROPPED_TAGS:
            continue  # task is model.yaml's own field
        fixed = _key(key, "model tag", label, notes)
        if fixed is not None:
            source_tags[fixed] = value
    return ModelPlan(
        name=name, label=label, branch=BRANCH_PREFIX + name, versions=tuple(versions),
        description=(rm.description or "").strip() or None,
        task=model_task or next((str(v.card["task"]) for v in versions if v.card["task"] != "unknown"), None),
        tag_prefix=ALIAS_TAG_PREFIX, model_tags=alias_tags, source_tags=source_tags, notes=tuple(notes),
    )


def _version_of(mv: Any, label: str) -> str:
    tags = getattr(mv, "tags", None) or {}
    for key in VERSION_TAGS:
        if key in tags:
            text = str(tags[key]).strip()
            text = text[1:] if text[:1] in ("v", "V") else text
            if not Version.is_valid(text):
                raise RegistryError(f"{label} version {mv.version}: tag {key}={tags[key]!r} is not a semantic "
                                    "version such as 1.2.0; fix the tag in MLflow")
            return text
    return f"{int(mv.version)}.0.0"


def _version_plan(client: Any, uri: str, rm: Any, mv: Any, name: str, version: str, stage: str,
                  folder: Path, notes: list[str]) -> VersionPlan:
    import mlflow.artifacts

    label = f"MLflow model {rm.name!r} version {mv.version}"
    run = None
    if mv.run_id:
        try:
            run = _call(lambda: client.get_run(mv.run_id), f"read run {mv.run_id}")
        except RegistryError as exc:
            notes.append(f"{label}: {exc}; the card has no run data")
    source_uri = _call(lambda: client.get_model_version_download_uri(rm.name, mv.version),
                       f"locate the artifacts of {label}")
    download = folder / "download"
    download.mkdir(parents=True)
    local = Path(_call(lambda: mlflow.artifacts.download_artifacts(
        artifact_uri=source_uri, dst_path=str(download), tracking_uri=uri), f"download the artifacts of {label}"))
    files = _flatten(local, folder / "files", label)
    if not files:
        raise RegistryError(f"{label}: the model has no files; nothing to register")
    mlmodel = _read_mlmodel(folder / "files" / "MLmodel", label, notes)
    card = _card(client, rm, mv, run, name, version, mlmodel, files, label, notes)
    return VersionPlan(version, label, str(mv.version), card, tuple(files), stage)


def _flatten(local: Path, dest: Path, label: str) -> list[SourceFile]:
    dest.mkdir(parents=True)
    if local.is_file():
        found = {local.name: local}
    else:
        found = {}
        for path in sorted(local.rglob("*")):
            if path.is_symlink():
                raise RegistryError(f"{label}: artifact {path.relative_to(local).as_posix()!r} is a symlink; "
                                    "the registry keeps files only")
            if path.is_file():
                found[path.relative_to(local).as_posix()] = path
    names = flat_names(list(found), label)
    files = []
    for origin, path in sorted(found.items()):
        target = dest / names[origin]
        os.replace(path, target)
        digest, size = storage.file_digest(target)
        files.append(SourceFile(target, origin, size, digest))
    shutil.rmtree(local if local.is_dir() else local.parent, ignore_errors=True)
    return sorted(files, key=lambda f: f.name)


def _read_mlmodel(path: Path, label: str, notes: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yamlio.load_file(path, f"{label}: MLmodel")
    except RegistryError as exc:
        notes.append(f"{label}: MLmodel could not be read ({exc}); framework unknown")
        return {}
    return data if isinstance(data, dict) else {}


def _framework(mlmodel: Mapping[str, Any]) -> str:
    flavors = [str(f) for f in (mlmodel.get("flavors") or {})]
    specific = [f for f in flavors if f != "python_function"]
    if specific:
        return specific[0]
    return "pyfunc" if flavors else "unknown"


def _signature(mlmodel: Mapping[str, Any]) -> dict[str, Any] | None:
    """MLflow's column-based signature as the card's inputs/outputs; tensor specs are left out."""
    raw = mlmodel.get("signature")
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for side in ("inputs", "outputs"):
        text = raw.get(side)
        if not isinstance(text, str):
            continue
        try:
            columns = json.loads(text)
        except ValueError:
            return None
        if not isinstance(columns, list) or not all(
                isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"]
                and isinstance(c.get("type"), str) and c["type"] for c in columns):
            return None
        out[side] = [{"name": c["name"], "type": c["type"]} for c in columns]
    return out or None


def _date(ms: Any) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).date().isoformat()


def _param(text: str) -> Any:
    """MLflow keeps params as text; numbers and booleans come back as such, the rest as text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
        return value
    return text


def _key(key: str, what: str, label: str, notes: list[str]) -> str | None:
    fixed = key.replace(" ", "_")
    if _KEY.fullmatch(fixed):
        return fixed
    notes.append(f"{label}: {what} {key!r} cannot be a card key (ASCII letters, digits and _.:/- only); left out")
    return None


def _run_uri(client: Any, run: Any, mv: Any, mlmodel: Mapping[str, Any]) -> str:
    """MLflow's model URI inside the run: ``runs:/<run id>/<artifact path>``, never a local path."""
    run_id = run.info.run_id
    source = str(mv.source or "")
    if source.startswith("runs:/"):
        return source
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", source)
    if match:
        # MLflow 3: a logged model of the run; its name is the artifact path it was logged under.
        with contextlib.suppress(Exception):
            return f"runs:/{run_id}/{client.get_logged_model(match.group(1)).name}"
    root = _local(str(run.info.artifact_uri or "")).rstrip("/")
    if root and _local(source).startswith(root + "/"):
        return f"runs:/{run_id}/{_local(source)[len(root) + 1:]}"
    # MLflow 3 writes the logged model's full location here (a URI or an absolute path): not a run path.
    path = str(mlmodel.get("artifact_path") or "")
    if path and ":" not in path and not path.startswith("/"):
        return f"runs:/{run_id}/{path}"
    return f"runs:/{run_id}"


def _local(uri: str) -> str:
    """file:///x and /x name the same artifact location."""
    return uri.removeprefix("file://")


def _card(client: Any, rm: Any, mv: Any, run: Any, name: str, version: str, mlmodel: Mapping[str, Any],
          files: Sequence[SourceFile], label: str, notes: list[str]) -> dict[str, Any]:
    run_tags: dict[str, str] = dict(run.data.tags) if run is not None else {}
    version_tags: dict[str, str] = dict(getattr(mv, "tags", None) or {})
    model_tags: dict[str, str] = dict(getattr(rm, "tags", None) or {})
    description = next((d.strip() for d in (mv.description, rm.description, run_tags.get("mlflow.note.content"))
                        if d and d.strip()), f"{rm.name}, version {mv.version}, imported from MLflow")
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": description,
        "created": _date(mv.creation_timestamp) or dt.datetime.now(dt.UTC).date().isoformat(),
    }
    creator = next((str(u) for u in (mv.user_id, run.info.user_id if run is not None else None,
                                      run_tags.get("mlflow.user")) if u and str(u) != "unknown"), None)
    if creator:
        card["creator"] = str(creator)
    card["framework"] = _framework(mlmodel)
    card["task"] = str(version_tags.get(TASK_TAG) or run_tags.get(TASK_TAG) or model_tags.get(TASK_TAG) or "unknown")
    metrics: dict[str, float] = {}
    if run is not None:
        for key, value in sorted(run.data.metrics.items()):
            fixed = _key(key, "metric", label, notes)
            if fixed is None:
                continue
            if not math.isfinite(value):
                notes.append(f"{label}: metric {key} is {value}; left out")
                continue
            metrics[fixed] = value
    card["metrics"] = metrics
    signature = _signature(mlmodel)
    if signature:
        card["signature"] = signature
    if run is not None and run.data.params:
        card["hyperparameters"] = {k: _param(v) for k, v in sorted(run.data.params.items())}
    if run is not None:
        training: dict[str, Any] = {"run_id": run.info.run_id, "run_uri": _run_uri(client, run, mv, mlmodel)}
        if run.info.start_time:
            training["date"] = _date(run.info.start_time)
            if run.info.end_time:
                training["duration"] = round((run.info.end_time - run.info.start_time) / 1000, 3)
        commit = run_tags.get("mlflow.source.git.commit", "")
        if _HEX.fullmatch(commit):
            training["code_commit"] = commit
        card["training"] = training
    tags: dict[str, str] = {}
    for key, value in [*sorted(run_tags.items()), *sorted(version_tags.items())]:
        if key in DROPPED_TAGS:
            continue
        fixed = _key(key, "tag", label, notes)
        if fixed is not None:
            tags[fixed] = str(value)
    tags["mlflow.registered_model"] = str(rm.name)
    tags["mlflow.model_version"] = str(mv.version)
    tags["mlflow.source"] = str(mv.source)
    flattened = [f"{f.name}={f.origin}" for f in files if f.name != f.origin]
    if flattened:
        tags["mlflow.flattened"] = ",".join(flattened)
    card["tags"] = tags
    return card

"""Switching a serving folder to verified versions, driving model servers, and undoing it all on refusal.

One poll's plan, per model: its `current` (and with --with-canary its `canary`) version,
already verified on disk. For each model in turn the links are switched, then every
`--server` is told (`registry.serving.drive`). A server's refusal puts that model's links
and servers back; all or nothing (the default) puts every model of the poll back, newest
first, and raises; `--per-model` holds just that model (state.json remembers it, so the next
poll retries) and lets the others switch. Then state.json is written and versions nobody
names (a link, or `previous`) are pruned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.files.layout import CARD_FILE
from registry.serving.adapters import AdapterError, Change
from registry.serving.drive import Applied, Driver, read_card
from registry.serving.prepare import Ready
from registry.serving.store import (
    CANARY,
    CURRENT,
    Canary,
    ModelRecord,
    PullError,
    ServingDir,
    State,
    VersionRecord,
    now_iso,
)
from registry.serving.verify import Wanted
from registry.signing.manifest import SIGNATURE_FILE

__all__ = ["Plan", "PullResult", "Served", "Switcher"]


@dataclass(frozen=True)
class Served:
    """A model as it is served after a poll."""

    name: str
    version: str
    traffic: float | None
    path: Path  # DIR/<name>/current
    sha256: Mapping[str, str]
    signed_by: str | None
    canary: Canary | None = None  # with --with-canary: DIR/<name>/canary


@dataclass(frozen=True)
class PullResult:
    changed: bool  # a model switched, changed traffic or left the stage
    registry_commit: str
    previous_commit: str | None
    stage: str
    models: Mapping[str, Served]
    switched: tuple[str, ...] = ()
    fetched: bool = False  # whether git fetched anything
    downloaded_files: int = 0  # files read from the DVC remote
    downloaded_bytes: int = 0
    verified_files: int = 0  # files hashed on disk to (re)verify a folder already there
    events: tuple[dict[str, Any], ...] = ()
    held: Mapping[str, str] = field(default_factory=dict)  # --per-model: model -> why it kept its version


@dataclass
class Plan:
    name: str
    current: Ready
    canary: Ready | None = None


def served(store: ServingDir, state: State) -> dict[str, Served]:
    models = {}
    for name, model in sorted(state.models.items()):
        record = state.record(name, model.version)
        models[name] = Served(name, model.version, model.traffic, store.model_dir(name) / CURRENT,
                              dict(record.sha256) if record else {}, record.signed_by if record else None,
                              model.canary)
    return models


def artifact_digests(want: Wanted, record: VersionRecord | None) -> dict[str, str]:
    if record is None:
        return {}
    return {a.path: record.sha256[a.path] for a in want.artifacts if a.path in record.sha256}


@dataclass
class Switcher:
    store: ServingDir
    stage: str
    scope: tuple[str, ...]
    driver: Driver
    per_model: bool
    with_canary: bool
    verified: bool  # signatures checked (not --insecure-skip-signature)
    synced: bool  # the servers were given every served model since this client started
    check_stop: Callable[[], None]

    def change(self, want: Wanted, record: VersionRecord, previous: str | None, commit: str) -> Change:
        folder = self.store.version_dir(want.name, want.version)
        return Change(want.name, want.version, folder, previous,
                      self.store.version_dir(want.name, previous) if previous else None, read_card(folder),
                      self.stage, commit, want.traffic, artifact_digests(want, record))

    def reapply(self, state: State) -> None:
        """A client just started with servers, the folder already up to date: give the servers
        every served model once (idempotent: a server that has it only makes it the default)."""
        failures: list[PullError] = []
        for name in state.in_scope(self.scope):
            model = state.models[name]
            changes = []
            for _link, version, traffic in ((CURRENT, model.version, model.traffic),
                                           *([(CANARY, model.canary.version, model.canary.traffic)]
                                             if model.canary else [])):
                folder = self.store.version_dir(name, version)
                record = state.record(name, version)
                changes.append((Change(name, version, folder, None, None, read_card(folder), self.stage,
                                       state.registry_commit, traffic, dict(record.sha256) if record else {}), False))
            try:
                self.driver.apply(changes)
            except AdapterError as exc:
                error = PullError(str(exc))
                error.model = name
                if not self.per_model:
                    raise error from None
                failures.append(error)
        if failures:
            raise failures[0]
        self.synced = True

    def apply(self, state: State | None, source: str, refname: str, commit: str, plans: list[Plan],
              held: dict[str, dict[str, str]], fetched: bool, rewound: bool) -> tuple[PullResult, State]:
        stamp = now_iso()
        events: list[dict[str, Any]] = []
        old_models = dict(state.models) if state else {}
        models: dict[str, ModelRecord] = {n: m for n, m in old_models.items() if self.scope and n not in self.scope}
        versions: dict[str, dict[str, VersionRecord]] = {}
        switched: list[str] = []
        canaries: list[str] = []  # models whose canary link switched
        undo: list[tuple[str, str | None, str]] = []  # (model, version linked before, link), newest last
        applied: list[Applied] = []
        rolled: list[dict[str, Any]] = []
        base = {"stage": self.stage, "registry_commit": commit}
        try:
            for plan in plans:
                self.check_stop()
                name, old = plan.name, old_models.get(plan.name)
                model_undo: list[tuple[str, str | None, str]] = []
                drive: list[tuple[Change, bool]] = []
                model_events: list[dict[str, Any]] = []
                want = plan.current.want
                serving = self._link(plan.current, CURRENT, (old.version, old.traffic) if old else None,
                                     model_undo, drive, model_events, stamp, commit)
                previous = serving if serving not in (None, want.version) else (old.previous if old else None)
                canary = self._canary(plan, old, model_undo, drive, model_events, stamp, commit)
                undo += model_undo
                if self.driver and drive:
                    try:
                        applied += self.driver.apply(drive)
                    except AdapterError as exc:
                        back = [self._rolled_back(n, before, self.store.current_version(n, link), link, str(exc),
                                                  state, commit, stamp) for n, before, link in reversed(model_undo)]
                        if not self.per_model:
                            earlier = [self._rolled_back(n, before, self.store.current_version(n, link), link,
                                                         f"{name} was refused by a server", state, commit, stamp)
                                       for n, before, link in reversed(undo[:len(undo) - len(model_undo)])]
                            problems = self.driver.revert(applied)
                            applied = []
                            self.store.switch_back(undo)
                            undo = []
                            error = PullError("; ".join([str(exc), *problems]))
                            error.model = name
                            error.events = [*back, *earlier]  # type: ignore[attr-defined]
                            raise error from None
                        self.store.switch_back(model_undo)
                        del undo[len(undo) - len(model_undo):]
                        rolled += back
                        held[name] = {"version": want.version, "error": str(exc)}
                        continue
                for event in model_events:
                    if event["event"] == "switched":
                        event["servers"] = list(self.driver.labels)
                events += model_events
                if any(e["event"] == "switched" and e["role"] == CURRENT for e in model_events):
                    switched.append(name)
                if any(e["event"] == "switched" and e["role"] == CANARY for e in model_events):
                    canaries.append(name)
                same = old is not None and old.version == want.version and old.traffic == want.traffic
                models[name] = ModelRecord(want.version, want.traffic, previous,
                                           old.commit if same and old else commit, canary)
                kept = {want.version: plan.current.record}
                if previous is not None and state is not None and (record := state.record(name, previous)):
                    kept[previous] = record
                if plan.canary is not None:
                    kept[plan.canary.want.version] = plan.canary.record
                versions[name] = kept
            for name in held:  # --per-model: a refused model keeps what it served
                if name in old_models and state is not None:
                    models[name] = old_models[name]
                    versions[name] = dict(state.versions.get(name, {}))
            retired = [n for n in old_models if (not self.scope or n in self.scope) and n not in models]
            for name in retired:
                self.store.retire(name)
                events.append({"event": "removed", "time": stamp, "model": name, "role": CURRENT,
                               "version": old_models[name].version, **base})
            for name in models:
                if name not in versions and state is not None:
                    versions[name] = dict(state.versions.get(name, {}))
            failures = state.failures_total if state else 0
            last_failure = state.last_failure if state else None
            if held:
                failures += 1
                last_failure = {"time": stamp, "registry_commit": commit,
                                "error": "\n".join(f"{n}@{h['version']}: held: {h['error']}" for n, h in held.items())}
            new_state = State(
                source=source, ref=refname, stage=self.stage, scope=self.scope, registry_commit=commit,
                applied_at=stamp, models=models, versions=versions, failures_total=failures,
                last_failure=last_failure, last_success=time.time(), held=held, with_canary=self.with_canary)
            self.store.write_state(new_state)
        except BaseException:
            # A disk error part-way (or an interrupt): what was switched goes back, so the
            # folder serves exactly what state.json says and the failure message is true.
            self.driver.revert(applied)
            self.store.switch_back(undo)
            raise
        for name in dict.fromkeys([*(p.name for p in plans), *held]):
            if name in versions:
                self.store.prune(name, set(versions[name]))  # what a link or `previous` names stays
            elif self.store.model_dir(name).exists():
                self.store.retire(name)  # new here and held: nothing of it stays
        for name, why in held.items():
            events.append({"event": "failed", "time": stamp, "model": name, "version": why["version"],
                           "error": why["error"], "held": True, **base})
        if self.driver:
            self.synced = not held
        summary: dict[str, Any] = {
            "event": "applied", "time": stamp, "stage": self.stage, "registry_commit": commit,
            "previous_commit": state.registry_commit if state else None, "rewound": rewound,
            "models": {n: _model_json(m) for n, m in sorted(models.items())},
            "switched": switched, "canaries_switched": canaries, "fetched": fetched, "held": sorted(held),
            "downloaded_files": sum(r.downloaded_files for p in plans for r in _readies(p)),
            "downloaded_bytes": sum(r.downloaded_bytes for p in plans for r in _readies(p)),
        }
        events = [*rolled, *events, summary]
        changed = bool(switched or retired or any(e["event"] in ("traffic", "switched", "removed") for e in events))
        return PullResult(
            changed=changed, registry_commit=commit, previous_commit=state.registry_commit if state else None,
            stage=self.stage, models=served(self.store, new_state), switched=tuple(switched), fetched=fetched,
            downloaded_files=summary["downloaded_files"], downloaded_bytes=summary["downloaded_bytes"],
            verified_files=sum(r.verified_files for p in plans for r in _readies(p)), events=tuple(events),
            held={n: h["error"] for n, h in held.items()}), new_state

    def _canary(self, plan: Plan, old: ModelRecord | None, model_undo: list[tuple[str, str | None, str]],
                drive: list[tuple[Change, bool]], model_events: list[dict[str, Any]], stamp: str,
                commit: str) -> Canary | None:
        """The canary link of one model: switched to its assignment, or removed when it has none."""
        name = plan.name
        was = old.canary if old else None
        if plan.canary is None:
            linked = self.store.current_version(name, CANARY)
            if linked is not None or was is not None or (self.store.model_dir(name) / CANARY).is_symlink():
                self.store.unlink(name, CANARY)
                model_undo.append((name, linked, CANARY))
                model_events.append({"event": "removed", "time": stamp, "model": name, "role": CANARY,
                                     "version": was.version if was else linked, "stage": self.stage,
                                     "registry_commit": commit})
            return None
        self._link(plan.canary, CANARY, (was.version, was.traffic) if was else None, model_undo, drive,
                   model_events, stamp, commit)
        return Canary(plan.canary.want.version, plan.canary.want.traffic)

    def _link(self, ready: Ready, link: str, was: tuple[str, float | None] | None,
              model_undo: list[tuple[str, str | None, str]], drive: list[tuple[Change, bool]],
              model_events: list[dict[str, Any]], stamp: str, commit: str) -> str | None:
        """Point one link (current or canary) at its verified version; say so and queue the servers'
        change. `was`: the (version, traffic) state.json recorded for it. Returns the version linked before."""
        want, record = ready.want, ready.record
        linked = self.store.current_version(want.name, link)
        if linked != want.version:
            self.store.switch(want.name, want.version, link)
            model_undo.append((want.name, linked, link))
        if was is None or was[0] != want.version or linked != want.version:
            model_events.append(self._switched(ready, linked, link, stamp, commit))
            drive.append((self.change(want, record, linked, commit), True))
        elif was[1] != want.traffic:
            model_events.append({"event": "traffic", "time": stamp, "model": want.name, "version": want.version,
                                 "traffic": want.traffic, "previous_traffic": was[1], "role": link,
                                 "stage": self.stage, "registry_commit": commit})
            drive.append((self.change(want, record, None, commit), False))
        elif not self.synced:
            drive.append((self.change(want, record, None, commit), False))
        return linked

    def _switched(self, ready: Ready, before: str | None, role: str, stamp: str, commit: str) -> dict[str, Any]:
        want = ready.want
        event: dict[str, Any] = {
            "event": "switched", "time": stamp, "model": want.name, "version": want.version, "previous": before,
            "stage": self.stage, "registry_commit": commit, "path": str(self.store.model_dir(want.name) / role),
            "role": role, "sha256": artifact_digests(want, ready.record), "signed_by": ready.record.signed_by,
            "verified": self.verified, "servers": []}
        if want.traffic is not None:
            event["traffic"] = want.traffic
        return event

    def _rolled_back(self, name: str, version: str | None, refused: str | None, role: str, reason: str,
                     state: State | None, commit: str, stamp: str) -> dict[str, Any]:
        record = state.record(name, version) if state and version else None
        return {"event": "rolled_back", "time": stamp, "model": name, "version": version, "from_version": refused,
                "role": role, "stage": self.stage, "registry_commit": commit, "reason": reason,
                "sha256": {p: d for p, d in record.sha256.items() if p not in (CARD_FILE, SIGNATURE_FILE)}
                if record else {},
                "signed_by": record.signed_by if record else None, "verified": self.verified,
                "servers": list(self.driver.labels)}


def _readies(plan: Plan) -> list[Ready]:
    return [plan.current, *([plan.canary] if plan.canary else [])]


def _model_json(model: ModelRecord) -> dict[str, Any]:
    data: dict[str, Any] = {"version": model.version}
    if model.traffic is not None:
        data["traffic"] = model.traffic
    if model.canary is not None:
        data["canary"] = {"version": model.canary.version, "traffic": model.canary.traffic}
    return data


"""The `v2` adapter: moves a model server that speaks the Open Inference Protocol repository API to a version.

Spec: `v2=URL,repository=DIR[,timeout=SECONDS]`. DIR is the server's model repository
(MLServer's `model_repository_root`), on a file system this process writes. Built and
tested against MLServer 1.7, whose repository API decides what a step can do:

- `POST /v2/repository/models/<m>/load` loads every folder of `m` in the repository (one
  already loaded is reloaded: the new instance loads first, then the old one goes) and
  unloads the loaded versions whose folders are gone;
- `/v2/models/<m>/infer` answers with the unversioned default when there is one; a versioned
  folder becomes the default while it is still loading when MLServer orders it "newer"
  (integers, else plain string order), which would answer "not ready" for that time.

So the model the server answers with is the unversioned `<m>/<m>/` (formats/v2.py), and
`apply(change)`: (1) writes the new version as the versioned `<m>/<v>/` beside it (atomic);
(2) `load`: the new version loads, the default keeps answering; (3) its own
`/versions/<v>/ready` and an infer of the card's `input_example` there, which must say
`model_version` = `<v>`; (4) `<m>/<m>/` is rewritten with the new version (the old one kept
aside), `<m>/<v>/` removed, `load` again: the default reloads without a gap and the
versioned copy unloads; (5) `/v2/models/<m>/ready` and the same infer without a version must
answer `<v>`, and the repository index must list no versioned copy. A failing step puts the
folders back as they were, `load`s (or `unload`s a model that was new) and checks what
answers; the AdapterError names the step, why, and what serves now. `revert` is `apply` of
the reverse change. A version already the default, with nothing beside it, is just checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files import cards
from registry.files.names import check_model_name, check_version
from registry.serving.adapters import AdapterError, Change, ServerSpec, public_url
from registry.serving.formats import v2 as layout
from registry.serving.formats.v2_runtime import request_body

__all__ = ["V2Adapter", "from_spec"]


class _StepFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step, self.detail = step, detail


def from_spec(spec: ServerSpec) -> V2Adapter:
    unknown = sorted(set(spec.options) - {"repository", "timeout"})
    if unknown:
        raise UsageError(f"--server {spec.text!r}: unknown setting {unknown[0]!r}; v2 takes repository=DIR, timeout=SECONDS")
    parsed = urllib.parse.urlsplit(spec.url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--server {spec.text!r}: {spec.url!r} is not an http(s) URL of the server")
    repository = spec.options.get("repository")
    if not repository:
        raise UsageError(f"--server {spec.text!r}: v2 needs repository=DIR, the server's model repository folder "
                         "(MLServer: the folder given to `mlserver start`)")
    try:
        timeout = float(spec.options.get("timeout", "300"))
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise UsageError(f"--server {spec.text!r}: timeout must be a number of seconds above 0")
    return V2Adapter(spec.url.rstrip("/"), Path(repository), timeout)


@dataclass
class V2Adapter:
    """Drives one V2 server through its repository API and its repository folder."""

    url: str
    repository: Path
    timeout: float = 300.0
    kind: str = "v2"

    # -- HTTP -----------------------------------------------------------------------------------
    def _call(self, step: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            with exc:  # its body is the server's error message
                status, raw = exc.code, exc.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _StepFailed(step, f"{method} {public_url(self.url)}{path}: no answer ({reason})") from None
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")[:300]

    def _expect_ok(self, step: str, method: str, path: str, body: Any = None) -> Any:
        status, answer = self._call(step, method, path, body)
        if status != 200:
            error = answer.get("error", answer) if isinstance(answer, Mapping) else answer
            raise _StepFailed(step, f"{method} {path} answered {status}: {error}")
        return answer

    def _load(self, step: str, model: str) -> None:
        self._expect_ok(step, "POST", f"/v2/repository/models/{model}/load")

    def _infer(self, step: str, model: str, version: str | None, example: Any) -> str | None:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        answer = self._expect_ok(step, "POST", path, request_body(example))
        return answer.get("model_version") if isinstance(answer, Mapping) else None

    def _index(self, step: str, model: str) -> list[Mapping[str, Any]]:
        answer = self._expect_ok(step, "POST", "/v2/repository/index", {})
        return [item for item in answer or [] if isinstance(item, Mapping) and item.get("name") == model]

    def _answering(self, step: str, model: str, card: Mapping[str, Any]) -> str | None:
        """The version `/v2/models/<m>/infer` answers with: ready, and the example inferred."""
        self._expect_ok(step, "GET", f"/v2/models/{model}/ready")
        return self._infer(step, model, None, card.get("input_example"))

    def _check_current(self, step: str, change: Change) -> None:
        """The unversioned default answers as the new version, and no versioned copy is left loaded."""
        answered = self._answering(step, change.model, change.card)
        if answered != change.version:
            raise _StepFailed(step, f"the server answers with version {answered!r}, not {change.version}")
        left = sorted(str(item["version"]) for item in self._index(step, change.model) if item.get("version"))
        if left:
            raise _StepFailed(step, f"the repository index still lists versions {left} beside the default")

    # -- the move -------------------------------------------------------------------------------
    def apply(self, change: Change) -> None:
        check_model_name(change.model)  # both name folders in the repository
        check_version(change.version)
        label = f"v2 {public_url(self.url)}: {change.model}@{change.version}"
        if "input_example" not in change.card:
            raise AdapterError(f"{label}: card.yaml has no input_example to check the loaded version with; "
                               "nothing was changed")
        if (layout.current_version(self.repository, change.model) == change.version
                and not layout.version_folders(self.repository, change.model)):
            try:
                self._check_current("check", change)
                return  # already the one loaded and answering
            except _StepFailed:
                pass  # not (or not well) loaded: the full move below
        parent = self._parent(change.model)
        hold = Path(tempfile.mkdtemp(prefix=f".hold-{change.model}-", dir=parent))
        try:
            layout.write_model(change.folder, change.card, self.repository, name=change.model, version=change.version)
        except (RegistryError, OSError) as exc:
            hold.rmdir()
            served = f"still serving {change.previous}" if change.previous else f"{change.model} was not served here"
            raise AdapterError(f"{label}: write failed: {exc}; nothing was loaded, {served}") from None
        held: Path | None = None
        done = False
        try:
            # The new version loads beside the default (MLServer keeps an unversioned default as it is).
            self._load("load", change.model)
            self._expect_ok("ready", "GET", f"/v2/models/{change.model}/versions/{change.version}/ready")
            answered = self._infer("infer", change.model, change.version, change.card.get("input_example"))
            if answered != change.version:
                raise _StepFailed("infer", f"version {change.version} answered as {answered!r}")
            try:  # the default becomes the new version; the old one is kept aside for a rollback
                current = layout.current_folder(self.repository, change.model)
                if current.exists():
                    os.replace(current, hold / "previous")
                    held = hold / "previous"
                layout.write_model(change.folder, change.card, self.repository, name=change.model,
                                   version=change.version, current=True)
                for version in layout.version_folders(self.repository, change.model):
                    layout.remove_model(self.repository, change.model, version)
            except (RegistryError, OSError) as exc:
                raise _StepFailed("switch", f"writing {layout.current_folder(self.repository, change.model)}: {exc}") from None
            self._load("switch", change.model)  # the default reloads (new instance first), the copy unloads
            self._check_current("check", change)
            done = True
        except _StepFailed as failed:
            now = self._restore(change, held)
            raise AdapterError(f"{label}: {failed.step} failed: {failed.detail}; {now}") from None
        finally:
            if done or not any(hold.iterdir()):
                shutil.rmtree(hold, ignore_errors=True)

    def _parent(self, model: str) -> Path:
        parent = self.repository / model
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def _restore(self, change: Change, held: Path | None) -> str:
        """Put the model's folders back as they were before `change`, reload, and say what serves now."""
        current = layout.current_folder(self.repository, change.model)
        try:
            for version in layout.version_folders(self.repository, change.model):
                layout.remove_model(self.repository, change.model, version)
            if held is not None:
                layout.remove_model(self.repository, change.model, change.model)
                os.replace(held, current)
            elif layout.current_version(self.repository, change.model) == change.version:
                layout.remove_model(self.repository, change.model, change.model)  # written by the switch
            if held is None and change.previous and change.previous_folder and not current.exists():
                layout.write_model(change.previous_folder, cards.read_fields(change.previous_folder), self.repository,
                                   name=change.model, version=change.previous, current=True)
            if not current.exists():
                self._call("restore", "POST", f"/v2/repository/models/{change.model}/unload")
                return f"{change.model} is not loaded on the server (it was new there)"
            self._load("restore", change.model)
            card = cards.read_fields(change.previous_folder) if change.previous_folder else {}
            if "input_example" in card:
                answered = self._answering("restore", change.model, card)
            else:  # nothing to infer with: ready is all that can be checked
                self._expect_ok("restore", "GET", f"/v2/models/{change.model}/ready")
                answered = layout.current_version(self.repository, change.model)
        except (_StepFailed, RegistryError, OSError) as exc:
            kept = f" (the previous default is kept in {held})" if held is not None and held.exists() else ""
            return f"putting back {change.previous or 'nothing'} failed too ({exc}){kept}: check the server"
        return f"{change.model}@{answered} serves again"

    def revert(self, change: Change) -> None:
        if change.previous is None or change.previous_folder is None:
            try:
                for slot in [*layout.version_folders(self.repository, change.model), change.model]:
                    layout.remove_model(self.repository, change.model, slot)
                self._expect_ok("revert", "POST", f"/v2/repository/models/{change.model}/unload")
            except (_StepFailed, OSError) as exc:
                raise AdapterError(f"v2 {public_url(self.url)}: {change.model}: revert of {change.version} failed: {exc}") from None
            return
        back = replace(change, version=change.previous, folder=change.previous_folder, previous=change.version,
                       previous_folder=change.folder, card=cards.read_fields(change.previous_folder))
        self.apply(back)



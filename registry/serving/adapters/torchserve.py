"""The `torchserve` adapter: moves a TorchServe server to a new version through its management API.

`--server torchserve=http://127.0.0.1:8081[,key=value...]`, the URL being the management
API. Settings:

- `inference=URL`: the inference API (default: the management URL's host on port 8080).
- `key-file=PATH`: TorchServe's `key_file.json` (token authorization, on by default since
  0.11); both keys are read from it at every step, and a key past its expiration time is
  renewed with the file's API key (`GET /token?type=...`), as TorchServe's docs describe.
- `token=FILE` / `inference-token=FILE`: the management / inference key alone, one per file.
- `model-store=DIR`: TorchServe's model store, when it is not on this machine's file
  system as we see it (a shared volume): the `.mar` is written there as
  `<model>-<version>.mar` and registered by that name. Without it the `.mar` is registered
  by `file://` URL (TorchServe copies it into its store; `allowed_urls` must allow file://,
  as it does by default) and the copy here is removed.
- `workers=N` (default 1), `timeout=SECONDS` (default 120: each request, and readiness).
- `drain=SECONDS` (default 2): how long a replaced version keeps its worker after its queue
  is empty, for the request it is answering (TorchServe's unregister kills workers at once).

`apply(change)`, per model: build the `.mar` (the registry version is its TorchServe
version), register it (`initial_workers`, `synchronous=true`), wait until its workers are
READY, send the card's `input_example` to `/predictions/<model>/<version>` (before any
user request can reach it), `set-default`, check with the describe API that the default
is now that version, then unregister the previous version. A version already registered
is not built again. A canary beside production (`pull --with-canary`) is registered and
checked but stays off the default: TorchServe splits no traffic, so a router in front sends
the canary's share to `/predictions/<model>/<version>`. Any failure puts the previous version back as default, unregisters
the new one, and raises AdapterError naming the step and what serves now.
TorchServe needs its model API enabled (`enable_model_api=true`) for register/unregister.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files import cards
from registry.serving.adapters import AdapterError, Change, ServerSpec, public_url
from registry.serving.formats.mar import MarError, build_mar

__all__ = ["TorchServeAdapter", "from_spec"]

_OPTIONS = ("inference", "key-file", "token", "inference-token", "model-store", "workers", "timeout", "drain")
_POLL = 0.25


class _StepFailed(AdapterError):
    """One request or check failed; `apply` and `revert` add which step and what serves now."""


def from_spec(spec: ServerSpec) -> TorchServeAdapter:
    """The adapter for `torchserve=URL[,inference=URL,key-file=PATH,...]`."""
    unknown = sorted(set(spec.options) - set(_OPTIONS))
    if unknown:
        raise UsageError(f"--server {spec.text!r}: unknown setting {unknown[0]!r} (torchserve takes {', '.join(_OPTIONS)})")
    management = _base_url(spec.url, spec.text)
    inference = spec.options.get("inference")
    if inference is None:
        parsed = urllib.parse.urlsplit(management)
        inference = urllib.parse.urlunsplit((parsed.scheme, f"{parsed.hostname}:8080", "", "", ""))
    try:
        workers = int(spec.options.get("workers", "1"))
        timeout = float(spec.options.get("timeout", "120"))
        drain = float(spec.options.get("drain", "2"))
    except ValueError:
        raise UsageError(f"--server {spec.text!r}: workers is a whole number, timeout and drain numbers of seconds") from None
    if workers < 1 or not 0 < timeout <= 3600 or not 0 <= drain <= 600:
        raise UsageError(f"--server {spec.text!r}: workers must be at least 1, timeout within (0, 3600] and drain "
                         "within [0, 600] seconds")

    def path(key: str) -> Path | None:
        value = spec.options.get(key)
        return Path(value).expanduser() if value else None

    return TorchServeAdapter(
        management, _base_url(inference, spec.text), key_file=path("key-file"), token_file=path("token"),
        inference_token_file=path("inference-token"), model_store=path("model-store"),
        workers=workers, timeout=timeout, drain=drain, text=spec.text,
    )


def _base_url(url: str, text: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--server {text!r}: {url!r} is not an http(s) URL")
    return url.rstrip("/")


class TorchServeAdapter:
    """TorchServe's management API (register, set-default, unregister) and its inference API."""

    kind = "torchserve"

    def __init__(self, url: str, inference_url: str, *, key_file: Path | None = None, token_file: Path | None = None,
                 inference_token_file: Path | None = None, model_store: Path | None = None,
                 workers: int = 1, timeout: float = 120.0, drain: float = 2.0, text: str = "") -> None:
        self.url = url
        self.inference_url = inference_url
        self.key_file = key_file
        self.token_file = token_file
        self.inference_token_file = inference_token_file
        self.model_store = model_store
        self.workers = workers
        self.timeout = timeout
        self.drain = drain
        self.text = text or f"torchserve={url}"
        self.label = f"torchserve={public_url(url)}"  # for messages: no user:password from the URL

    # --- the adapter interface ---------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Register, check and make `change.version` the default; unregister `change.previous`.

        A canary beside production (`--with-canary`: stage production, a traffic share) is
        registered and checked but not made the default: TorchServe splits no traffic, so
        the canary answers at `/predictions/<model>/<version>` for a router to send its share to.
        """
        name, version = change.model, change.version
        beside = _canary_beside_production(change)
        step = "describe"
        registering = False
        try:
            before = self.versions(name)
            if version not in before:
                step, registering = "build and register", True
                self._register(change.folder, change.card, name, version)
            step = "check" if beside else "check and set-default"
            self._check(name, version, change.card, make_default=not beside)
        except _StepFailed as exc:
            if step == "describe":
                raise AdapterError(f"{name}@{version}: {self.label}: {exc}; nothing was changed on the server") from None
            raise AdapterError(f"{name}@{version}: {self.label}: {step} failed: {exc}; "
                               f"{self._restore(change, registering, beside)}") from None
        if change.previous and change.previous != version and change.previous in before:
            # The new version serves; an old version left registered costs memory, not correctness.
            with contextlib.suppress(_StepFailed):
                if not beside or self.default_version(name) != change.previous:
                    self._retire(name, change.previous)

    def revert(self, change: Change) -> None:
        """Serve `change.previous` again (re-registered from its folder if it is gone); unregister `change.version`."""
        name = change.model
        beside = _canary_beside_production(change)
        try:
            present = self.versions(name)
            if change.previous is not None:
                if change.previous not in present:
                    if change.previous_folder is None:
                        raise _StepFailed(f"{change.previous} is not registered and its folder is unknown")
                    card = cards.read_fields(change.previous_folder)
                    self._register(change.previous_folder, card, name, change.previous)
                else:
                    card = cards.read_fields(change.previous_folder) if change.previous_folder else {}
                self._check(name, change.previous, card, make_default=not beside)
            dropped = change.version in present and change.version != change.previous
            if dropped and (not beside or self.default_version(name) != change.version):
                self._retire(name, change.version)
        except (_StepFailed, RegistryError) as exc:
            raise AdapterError(f"{name}@{change.version}: {self.label}: reverting to {change.previous or 'nothing'} failed: {exc}; "
                               f"{self._serving_now(name)}") from None

    # --- steps -----------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """The versions of `name` registered on the server ([] when none)."""
        status, body = self._call("GET", f"/models/{_q(name)}/all", allow=(404,))
        if status == 404:
            return []
        return [str(entry.get("modelVersion")) for entry in body if isinstance(entry, dict)] if isinstance(body, list) else []

    def default_version(self, name: str) -> str | None:
        """The version `/predictions/<name>` answers with, as the describe API says."""
        status, body = self._call("GET", f"/models/{_q(name)}", allow=(404,))
        first = _first(body)
        return None if status == 404 or first is None else str(first.get("modelVersion"))

    def _register(self, folder: Path, card: Mapping[str, Any], name: str, version: str) -> None:
        with tempfile.TemporaryDirectory(prefix="registry-mar-") as work:
            try:
                built = build_mar(folder, card, Path(work), name=name, version=version)
            except MarError as exc:
                raise _StepFailed(str(exc)) from None
            if self.model_store is not None:
                mar_name = f"{name}-{version}.mar"
                staged = self.model_store / f".{mar_name}.{secrets.token_hex(4)}"
                try:
                    shutil.copyfile(built, staged)
                    staged.replace(self.model_store / mar_name)
                except OSError as exc:
                    staged.unlink(missing_ok=True)
                    raise _StepFailed(f"cannot write {self.model_store / mar_name}: {exc.strerror or exc}") from None
                url = mar_name
            else:
                # A name of its own: TorchServe copies it into its store and refuses a name it has.
                unique = built.with_name(f"{name}-{version}-{secrets.token_hex(4)}.mar")
                built.rename(unique)
                url = unique.resolve().as_uri()
            query = urllib.parse.urlencode({"url": url, "model_name": name, "initial_workers": self.workers,
                                            "synchronous": "true"})
            try:
                self._call("POST", f"/models?{query}")
            except _StepFailed as exc:
                hint = " (the worker's load() failed? TorchServe's logs/model_log.log has its traceback)" if "Failed to start workers" in str(exc) else ""
                raise _StepFailed(f"{exc}{hint}") from None

    def _check(self, name: str, version: str, card: Mapping[str, Any], *, make_default: bool) -> None:
        self._wait_ready(name, version)
        if "input_example" in card:
            self._predict(name, version, card["input_example"])
        if not make_default:
            return
        self._call("PUT", f"/models/{_q(name)}/{_q(version)}/set-default")
        serving = self.default_version(name)
        if serving != version:
            raise _StepFailed(f"set-default: the server's default version is {serving}, not {version}")

    def _wait_ready(self, name: str, version: str) -> None:
        deadline = time.monotonic() + self.timeout
        states: list[str] = []
        while True:
            _, body = self._call("GET", f"/models/{_q(name)}/{_q(version)}")
            workers = (_first(body) or {}).get("workers")
            states = [str(worker.get("status")) for worker in workers if isinstance(worker, dict)] if isinstance(workers, list) else []
            if states and all(state == "READY" for state in states):
                return
            if time.monotonic() > deadline:
                raise _StepFailed(f"readiness: workers not READY after {self.timeout:.0f} s ({', '.join(states) or 'no workers'})")
            time.sleep(_POLL)

    def _predict(self, name: str, version: str, example: Any) -> Any:
        data = json.dumps(example).encode("utf-8")
        status, body = self._call("POST", f"/predictions/{_q(name)}/{_q(version)}", data=data,
                                  inference=True, allow=(500, 503, 507))
        if status != 200:
            raise _StepFailed(f"input_example: /predictions/{name}/{version} answered {status}: {_short(body)}")
        return body

    def _retire(self, name: str, version: str) -> None:
        """Unregister a version that no longer gets new requests, once those it took are answered.

        TorchServe's unregister kills the version's workers at once: a request routed to it just
        before set-default would never be answered. So: wait until its queue is empty, then
        `drain` seconds for the request in its worker, then unregister.
        """
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            _, body = self._call("GET", f"/models/{_q(name)}/{_q(version)}")
            queue = (_first(body) or {}).get("jobQueueStatus")
            if not isinstance(queue, dict) or not queue.get("pendingRequests"):
                break
            time.sleep(_POLL / 5)
        time.sleep(self.drain)
        self._unregister(name, version)

    def _unregister(self, name: str, version: str) -> None:
        self._call("DELETE", f"/models/{_q(name)}/{_q(version)}")
        if self.model_store is not None:
            (self.model_store / f"{name}-{version}.mar").unlink(missing_ok=True)

    def _restore(self, change: Change, registering: bool, beside: bool) -> str:
        """Put `previous` back as default and drop the new version; say what serves now."""
        name, version = change.model, change.version
        try:
            # TorchServe 0.12 keeps a version whose workers failed to start (0 workers): drop it too.
            present = self.versions(name)
            if change.previous and change.previous != version and change.previous in present and not beside:
                self._call("PUT", f"/models/{_q(name)}/{_q(change.previous)}/set-default")
            if beside:
                if version in present and registering and self.default_version(name) != version:
                    self._unregister(name, version)
            elif version in present and (registering or change.previous in present):
                self._unregister(name, version)
            elif registering and self.model_store is not None:
                (self.model_store / f"{name}-{version}.mar").unlink(missing_ok=True)
        except _StepFailed as exc:
            return f"restoring failed too ({exc}); {self._serving_now(name)}"
        return self._serving_now(name)

    def _serving_now(self, name: str) -> str:
        try:
            now = self.default_version(name)
        except _StepFailed as exc:
            return f"what serves {name} is unknown ({exc})"
        return f"serving now: {name}@{now}" if now else f"nothing serves {name} on {self.label}"

    # --- HTTP --------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, data: bytes | None = None, inference: bool = False,
              allow: tuple[int, ...] = ()) -> tuple[int, Any]:
        base = self.inference_url if inference else self.url
        request = urllib.request.Request(base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        key = self._key("inference" if inference else "management")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            with exc:  # its socket, closed
                body = _decode(exc.read())
            if exc.code in allow:
                return exc.code, body
            # TorchServe 0.12 answers a missing or wrong key with 400 InvalidKeyException.
            if exc.code == 401 or (isinstance(body, dict) and body.get("type") == "InvalidKeyException"):
                raise _StepFailed(f"{method} {path}: {exc.code}, TorchServe refused the {'inference' if inference else 'management'} key "
                                  "(give key-file=.../key_file.json, or token=FILE and inference-token=FILE)") from None
            raise _StepFailed(f"{method} {path}: {exc.code} {_short(body)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _StepFailed(f"{method} {public_url(base)}{path}: {reason}") from None

    def _key(self, kind: str) -> str | None:
        if self.key_file is not None:
            return self._key_from_file(kind)
        file = self.inference_token_file if kind == "inference" else self.token_file
        if file is None:
            return None
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _StepFailed(f"cannot read the {kind} key from {file}: {exc.strerror or exc}") from None

    def _key_from_file(self, kind: str) -> str:
        assert self.key_file is not None
        keys = self._read_key_file()
        entry = keys.get(kind) or {}
        expires = _parse_time(entry.get("expiration time"))
        api_key = (keys.get("API") or {}).get("key")
        if expires is not None and expires <= datetime.now(UTC) and api_key:
            # TorchServe's token API: a new key is written to the key file.
            request = urllib.request.Request(f"{self.url}/token?type={kind}", method="GET")
            request.add_header("Authorization", f"Bearer {api_key}")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout):
                    pass
            except (urllib.error.URLError, OSError) as exc:
                raise _StepFailed(f"renewing the expired {kind} key failed: {getattr(exc, 'reason', exc)}") from None
            entry = self._read_key_file().get(kind) or {}
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            raise _StepFailed(f"{self.key_file}: no {kind} key in it (TorchServe's key_file.json)")
        return key

    def _read_key_file(self) -> dict[str, Any]:
        assert self.key_file is not None
        try:
            keys = json.loads(self.key_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _StepFailed(f"cannot read TorchServe's key file {self.key_file}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(keys, dict):
            raise _StepFailed(f"{self.key_file}: not TorchServe's key_file.json")
        return keys


def _canary_beside_production(change: Change) -> bool:
    """`pull --stage production --with-canary`'s canary change (with `--stage canary` the canary is what serves)."""
    return change.traffic is not None and change.stage == "production"


def _first(body: Any) -> dict[str, Any] | None:
    """The one entry of a describe answer (a list of one model version)."""
    return body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else None


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _short(body: Any) -> str:
    text = body.get("message", body) if isinstance(body, dict) else body
    return " ".join(str(text).split())[:300]


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None

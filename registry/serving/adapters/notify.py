"""The `http` and `command` adapters: tell a server that reloads by itself that a version switched.

    registry pull ... --server http=https://serving.internal/hooks/registry[,timeout=10]
    registry pull ... --server 'command=/usr/local/bin/reload-model --graceful'

`http` POSTs one JSON object per change and counts any 2xx answer as taken (redirects are
not followed; anything else is an AdapterError)::

    {"event": "switch", "model": "m", "version": "1.1.0", "previous": "1.0.0",
     "folder": "/srv/models/m/versions/1.1.0", "stage": "production",
     "registry_commit": "…", "traffic": null}

For a revert (another model of an all-or-nothing pull failed) `event` is "revert",
`version` the version being undone, `previous` the one going back into service and `folder`
that one's folder (null when the model was new).

`command` runs the operator's own program: the text after `command=` is split like a shell
would (shlex), but no shell runs it. Its environment carries REGISTRY_ACTION (switch|revert),
REGISTRY_MODEL, REGISTRY_VERSION, REGISTRY_PREVIOUS (empty when none), REGISTRY_FOLDER,
REGISTRY_STAGE, REGISTRY_COMMIT and REGISTRY_TRAFFIC (empty unless a canary); a non-zero
exit is an AdapterError quoting the last line it wrote to stderr. Both time out
(`timeout=` seconds for http, default 30; 300 for a command).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from registry.errors import UsageError
from registry.serving.adapters import Adapter, AdapterError, Change, ServerSpec, public_url

__all__ = ["CommandAdapter", "HttpAdapter", "from_spec"]

HTTP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 300.0


def from_spec(spec: ServerSpec) -> Adapter:
    if spec.kind == "http":
        return HttpAdapter.from_spec(spec)
    if spec.kind == "command":
        return CommandAdapter.from_spec(spec)
    raise UsageError(f"--server {spec.text!r}: {spec.kind} is not an http or command adapter")


def payload(change: Change, action: str) -> dict[str, Any]:
    """What the server is told: for a revert, `folder` is the one serving again."""
    folder = change.folder if action == "switch" else change.previous_folder
    return {"event": action, "model": change.model, "version": change.version, "previous": change.previous,
            "folder": str(folder) if folder is not None else None, "stage": change.stage,
            "registry_commit": change.registry_commit, "traffic": change.traffic}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer, not a place to send the event again


@dataclass
class HttpAdapter:
    url: str
    timeout: float = HTTP_TIMEOUT
    kind: str = "http"

    @classmethod
    def from_spec(cls, spec: ServerSpec) -> HttpAdapter:
        parts = urllib.parse.urlsplit(spec.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--server {spec.text!r}: give an http:// or https:// URL to POST the event to")
        unknown = sorted(set(spec.options) - {"timeout"})
        if unknown:
            raise UsageError(f"--server {spec.text!r}: unknown setting {unknown[0]!r} (http takes timeout=SECONDS)")
        return cls(spec.url, _timeout(spec, HTTP_TIMEOUT))

    def apply(self, change: Change) -> None:
        self._post(change, "switch")

    def revert(self, change: Change) -> None:
        self._post(change, "revert")

    def _post(self, change: Change, action: str) -> None:
        body = json.dumps(payload(change, action)).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(_NoRedirect)
        what = f"{change.model}@{change.version}: http={public_url(self.url)}"
        try:
            with opener.open(request, timeout=self.timeout) as answer:
                status = answer.status
                answer.read(1 << 16)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdapterError(f"{what}: the {action} event was not delivered ({reason})") from None
        if not 200 <= status < 300:
            raise AdapterError(f"{what}: answered the {action} event with HTTP {status}")


@dataclass
class CommandAdapter:
    argv: tuple[str, ...]
    url: str  # the command as given
    timeout: float = COMMAND_TIMEOUT
    kind: str = "command"

    @classmethod
    def from_spec(cls, spec: ServerSpec) -> CommandAdapter:
        try:
            argv = shlex.split(spec.url)
        except ValueError as exc:
            raise UsageError(f"--server {spec.text!r}: cannot split the command ({exc})") from None
        if not argv:
            raise UsageError(f"--server {spec.text!r}: command needs a program after '='")
        return cls(tuple(argv), spec.url)

    def apply(self, change: Change) -> None:
        self._run(change, "switch")

    def revert(self, change: Change) -> None:
        self._run(change, "revert")

    def _run(self, change: Change, action: str) -> None:
        event = payload(change, action)
        env = dict(os.environ)
        env.update({
            "REGISTRY_ACTION": action, "REGISTRY_MODEL": change.model, "REGISTRY_VERSION": change.version,
            "REGISTRY_PREVIOUS": change.previous or "", "REGISTRY_FOLDER": event["folder"] or "",
            "REGISTRY_STAGE": change.stage, "REGISTRY_COMMIT": change.registry_commit,
            "REGISTRY_TRAFFIC": "" if change.traffic is None else repr(change.traffic)})
        what = f"{change.model}@{change.version}: command {self.argv[0]}"
        try:
            done = subprocess.run(list(self.argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise AdapterError(f"{what}: still running after {self.timeout:g} s; stopped") from None
        except OSError as exc:
            raise AdapterError(f"{what}: cannot run it ({exc.strerror or exc})") from None
        if done.returncode != 0:
            lines = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
            said = f": {lines[-1]}" if lines else ""
            raise AdapterError(f"{what}: exited with {done.returncode} on {action}{said}")


def _timeout(spec: ServerSpec, default: float) -> float:
    text = spec.options.get("timeout")
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise UsageError(f"--server {spec.text!r}: timeout={text}: give seconds between 0 and 3600")
    return value

"""The models a `registry serve DIR` serves, kept in step with DIR: hot swap, canary, removal.

`Server` watches the serving folder that `registry pull` keeps (CONTEXT15 C1): every
`poll_s` seconds it reads each `DIR/<name>/current` and `DIR/<name>/canary` link and
`DIR/state.json` (for the canary's traffic share and the stage). When a link names a
version that is not live yet, it:

1. starts that version's workers beside the old ones (`pool.launch`: each worker has
   loaded the model and answered the card's `input_example`);
2. switches the model's reference under a lock (requests routed from then on go to the
   new version);
3. retires the old version in the background: requests already routed to it finish
   (the drain), then its workers are killed.

A version that fails to load or to answer is not switched to: the old one keeps serving,
the failure is printed, counted (`registry_model_swap_failures_total`) and shown in the
model's metadata (`last_error`). It is not tried again until the link names another
version (or the same one after another). A model whose folder or `current` link is gone
stops being served. A link and `state.json` read at two different moments (the pull
replaces them one after the other) are reconciled on the next tick.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import UsageError
from registry.files import cards
from registry.files.names import MODEL_NAME_RE, SEMVER_RE
from registry.runner.worker import ModelFailed, WorkerDied, WorkerError
from registry.serving.server import routing
from registry.serving.server.metrics import Metrics
from registry.serving.server.pool import Busy, Served, Timeouts, launch
from registry.serving.store import CANARY, CURRENT, STATE_FILE, VERSIONS

__all__ = ["NotFound", "ServeError", "Server", "Unavailable", "check_dir"]



class ServeError(Exception):
    """A request that cannot be answered: its HTTP status and, when one was chosen, the version."""

    status = 500

    def __init__(self, message: str, version: str = "") -> None:
        super().__init__(message)
        self.version = version


class NotFound(ServeError):
    status = 404


class Unavailable(ServeError):
    status = 503


class ModelError(ServeError):
    status = 500


def check_dir(root: Path) -> None:
    """Refuse a DIR that `registry pull` did not make (no readable state.json)."""
    hint = "give the folder `registry pull --stage production --to DIR` keeps"
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; {hint}")
    state = root / STATE_FILE
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{root}: not a serving folder (no {STATE_FILE}: `registry pull` did not make it); "
                         f"{hint}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{state}: cannot be read as a pull's state ({exc}); {hint}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UsageError(f"{state}: not a pull's state file (no models); {hint}")


@dataclass(frozen=True)
class Wanted:
    """What DIR says for one model: the version each link names, and the canary's share."""

    links: Mapping[str, str]  # "current" / "canary" -> version
    traffic: float
    stage: str
    unsure: frozenset[str] = frozenset()  # links there but unusable this tick: keep what they serve


UNUSABLE = ""  # a link that exists but does not name a complete version folder (yet, or any more)


def _link_version(model_dir: Path, link: str) -> str | None:
    """The version a link names (`versions/<version>`, that folder there); None: no link; UNUSABLE."""
    try:
        target = os.readlink(model_dir / link)
    except FileNotFoundError:
        return None
    except OSError:
        return UNUSABLE
    parts = target.split("/")
    if len(parts) != 2 or parts[0] != VERSIONS or not SEMVER_RE.fullmatch(parts[1]):
        return UNUSABLE
    folder = model_dir / VERSIONS / parts[1]
    if folder.is_symlink() or not folder.is_dir() or not (folder / cards.CARD_FILE).is_file():
        return UNUSABLE
    return parts[1]


def _share(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


def _links(model_dir: Path) -> tuple[dict[str, str], frozenset[str]]:
    """The usable links of a model folder, and those that exist but are not usable now.

    A link read just before a pull moved it may name a folder the pull has removed since:
    it is read once more (links are replaced atomically), and if still unusable, left as
    it was served for this tick rather than taken for a model leaving.
    """
    links: dict[str, str] = {}
    unsure: set[str] = set()
    for link in (CURRENT, CANARY):
        version = _link_version(model_dir, link)
        if version == UNUSABLE:
            version = _link_version(model_dir, link)
        if version == UNUSABLE:
            unsure.add(link)
        elif version is not None:
            links[link] = version
    if CURRENT not in links and CURRENT not in unsure and CANARY in links:
        links = {CURRENT: links[CANARY]}  # a canary with nothing beside it serves everything
    return links, frozenset(unsure)


def read_dir(root: Path, state: Mapping[str, Any]) -> dict[str, Wanted]:
    """Every model DIR serves now (links) with its canary share (state.json)."""
    stage = str(state.get("stage") or "production")
    records = state.get("models") if isinstance(state.get("models"), dict) else {}
    assert isinstance(records, dict)
    wanted: dict[str, Wanted] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return wanted
    for entry in entries:
        if not MODEL_NAME_RE.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        links, unsure = _links(Path(entry.path))
        if not links and not unsure:
            continue
        record = records.get(entry.name) if isinstance(records.get(entry.name), dict) else {}
        traffic = 0.0
        canary = record.get("canary") if isinstance(record, dict) else None
        if CANARY in links and isinstance(canary, dict) and canary.get("version") == links[CANARY]:
            traffic = _share(canary.get("traffic")) or 0.0  # state.json not there yet: production only
        wanted[entry.name] = Wanted(links, traffic, stage, unsure)
    return wanted


@dataclass
class Slot:
    """One model's live versions, by link."""

    name: str
    live: dict[str, Served] = field(default_factory=dict)
    traffic: float = 0.0
    stage: str = "production"
    refused: dict[str, str] = field(default_factory=dict)  # link -> the version that failed there
    last_error: str | None = None

    def role(self, link: str) -> str:
        """C3's role label: canary (the canary link, or a folder pulled with --stage canary), else production."""
        return "canary" if link == CANARY or self.stage == "canary" else "production"


class Server:
    """The models of one serving folder, each in persistent workers, swapped as the folder changes."""

    def __init__(self, root: Path, *, poll_s: float = 0.5, workers: int = 1, timeouts: Timeouts | None = None,
                 echo: Callable[[str], None] | None = None, seed: int | None = None) -> None:
        if poll_s <= 0 or workers < 1:
            raise UsageError("--poll must be positive and --workers at least 1")
        self.root = root
        self.poll_s = poll_s
        self.workers = workers
        self.timeouts = timeouts or Timeouts()
        self.metrics = Metrics()
        self.echo = echo or (lambda line: None)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # guards _slots and every Slot.live
        self._slots: dict[str, Slot] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retiring: list[threading.Thread] = []
        self._jobs: dict[tuple[str, str], threading.Thread] = {}  # (model, link) -> its load or heal
        self._launching: list[Served] = []  # versions whose workers are starting
        self._state: Mapping[str, Any] = {}
        self._ticked = False

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> Server:
        """Check DIR, load what it serves (before returning), then watch it in a thread."""
        check_dir(self.root)
        self.tick()
        for job in list(self._jobs.values()):
            while job.is_alive():  # in steps: a signal handler can still stop the wait
                job.join(0.2)
        self._thread = threading.Thread(target=self._watch, name="registry-serve-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and kill every worker, starting ones too (requests in flight get an error)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            everything = [s for slot in self._slots.values() for s in slot.live.values()]
            everything += self._launching
            self._slots.clear()
        for served in everything:
            served.retire(drain=False)
        for thread in [*self._jobs.values(), *self._retiring]:
            thread.join(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as exc:  # a bug must not stop the watch: say it and go on
                self.echo(f"serve: watching {self.root} failed: {type(exc).__name__}: {exc}")

    # -- one tick --------------------------------------------------------------------

    def _read_state(self) -> Mapping[str, Any]:
        try:
            data = json.loads((self.root / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self._state  # replaced or removed under us: the last one read, until next tick
        if isinstance(data, dict):
            self._state = data
        return self._state

    def tick(self) -> None:
        """Bring the live versions in line with DIR once (loads run in the background, one per model link)."""
        wanted = read_dir(self.root, self._read_state())
        with self._lock:
            gone = [name for name in self._slots if name not in wanted]
        for name in gone:
            self._remove(name)
        for name, want in wanted.items():
            if self._stop.is_set():
                return
            with self._lock:
                slot = self._slots.setdefault(name, Slot(name))
                slot.traffic, slot.stage = want.traffic, want.stage
                dropped = [link for link in slot.live if link not in want.links and link not in want.unsure]
            for link in dropped:
                if (name, link) not in self._jobs:
                    self._switch(slot, link, None)
            for link, version in want.links.items():
                self._reconcile(slot, link, version)
        self._ticked = True

    def _job(self, slot: Slot, link: str, work: Callable[[], None]) -> None:
        key = (slot.name, link)

        def run() -> None:
            try:
                work()
            except Exception as exc:  # a bug must not kill the watch: say it
                self.echo(f"serve: {slot.name} ({link}): {type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._jobs.pop(key, None)

        thread = threading.Thread(target=run, name=f"serve-{slot.name}-{link}", daemon=True)
        with self._lock:
            self._jobs[key] = thread
        thread.start()

    def _reconcile(self, slot: Slot, link: str, version: str) -> None:
        if (slot.name, link) in self._jobs:
            return  # a load is under way for this link; the next tick looks again
        have = slot.live.get(link)
        if have is not None and have.version == version:
            slot.refused.pop(link, None)
            if len([w for w in have.workers if w.alive]) < self.workers:
                self._job(slot, link, lambda: self._heal(slot, have))
            return
        if slot.refused.get(link) == version:
            return  # refused already; tried again when the link moves
        self._job(slot, link, lambda: self._launch(slot, link, version))

    def _heal(self, slot: Slot, served: Served) -> None:
        try:
            served.heal(self.workers)
        except WorkerError as exc:
            if not served.retired:
                self._failed(slot, served.version, f"a worker died and could not be restarted: {exc}")

    def _track(self, served: Served) -> None:
        with self._lock:
            self._launching.append(served)
        if self._stop.is_set():
            served.retire(drain=False)

    def _launch(self, slot: Slot, link: str, version: str) -> None:
        """Start the version beside what the link serves; switch to it once it has answered input_example."""
        # The same version already live under the other link (a canary promoted) is started anew
        # all the same, so that each link's workers retire on their own.
        folder = self.root / slot.name / VERSIONS / version
        served: Served | None = None
        try:
            card = cards.read_fields(folder, f"{slot.name}/{version}/{cards.CARD_FILE}")
            served = launch(slot.name, version, folder, card, self.workers, self.timeouts, track=self._track)
        except Exception as exc:  # WorkerError, a card that does not parse, an OS error: not switched to
            if not self._stop.is_set():
                slot.refused[link] = version
                self._failed(slot, version, str(exc))
            return
        finally:
            with self._lock:
                self._launching = [s for s in self._launching if s is not served]
        if _link_version(self.root / slot.name, link) != version:  # moved on while loading: next tick
            served.retire(drain=False)
            return
        slot.refused.pop(link, None)
        self._switch(slot, link, served)

    def _failed(self, slot: Slot, version: str, message: str) -> None:
        slot.last_error = f"{slot.name}@{version}: {message}"
        self.metrics.swap_failures.labels(slot.name, version).inc()
        live = ", ".join(f"{s.version} ({slot.role(link)})" for link, s in slot.live.items())
        still = f"still serving {slot.name} {live}" if live else f"{slot.name} is not served"
        self.echo(f"{slot.name}@{version} not served: {message}; {still}")

    def _switch(self, slot: Slot, link: str, served: Served | None) -> None:
        with self._lock:
            if served is not None and (self._stop.is_set() or self._slots.get(slot.name) is not slot):
                discard = served  # stopping, or the model left DIR while it loaded
            else:
                discard = None
                old = slot.live.pop(link, None)
                if served is not None:
                    slot.live[link] = served
        if discard is not None:
            discard.retire(drain=False)
            return
        role = slot.role(link)
        self.metrics.serving(slot.name, role, served.version if served else None, old.version if old else None)
        if served is not None:
            self.metrics.swaps.labels(slot.name).inc()
            was = f", was {old.version}" if old else ""
            share = f" ({slot.traffic:.0%} of traffic)" if link == CANARY else ""
            self.echo(f"{slot.name}@{served.version} now serving as {role}{share}{was}")
        elif old is not None:
            self.echo(f"{slot.name}@{old.version} no longer served as {role}")
        if old is not None:
            thread = threading.Thread(target=old.retire, name=f"retire-{old.label}", daemon=True)
            thread.start()
            self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]

    def _remove(self, name: str) -> None:
        with self._lock:
            slot = self._slots.get(name)
        if slot is None:
            return
        for link in list(slot.live):
            self._switch(slot, link, None)
        with self._lock:
            self._slots.pop(name, None)

    # -- requests --------------------------------------------------------------------

    def route(self, name: str, version: str | None = None, key: str | None = None) -> Served:
        """The version to answer a request, counted in flight (call `leave` after)."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                raise NotFound(f"model {name!r} is not served here")
            served: Served | None
            if version is not None:
                served = next((s for s in slot.live.values() if s.version == version), None)
                if served is None:
                    live = ", ".join(sorted({s.version for s in slot.live.values()})) or "none"
                    raise NotFound(f"{name}@{version} is not served here (live: {live})")
            else:
                served = routing.choose(slot.live.get(CURRENT), slot.live.get(CANARY), slot.traffic, key,
                                        self._rng)
            if served is None:
                raise Unavailable(f"{name} has no version loaded" +
                                  (f" ({slot.last_error})" if slot.last_error else ""))
            served.enter()
        return served

    def infer(self, name: str, inputs: Any, version: str | None = None,
              key: str | None = None) -> tuple[str, Any]:
        """(the version that answered, the model's output). Raises ServeError."""
        served = self.route(name, version, key)
        try:
            return served.version, served.predict(inputs)
        except ModelFailed as exc:
            raise ModelError(str(exc), served.version) from None
        except (WorkerDied, Busy) as exc:
            raise Unavailable(str(exc), served.version) from None
        finally:
            served.leave()

    # -- reading ---------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._slots)

    def ready(self, name: str | None = None, version: str | None = None) -> bool:
        with self._lock:
            if name is None:
                return self._ticked and all(CURRENT in s.live for s in self._slots.values())
            slot = self._slots.get(name)
            if slot is None:
                return False
            return any(version in (None, s.version) for s in slot.live.values())

    def versions(self, name: str) -> list[str]:
        with self._lock:
            slot = self._slots.get(name)
            return [s.version for s in slot.live.values()] if slot else []

    def describe(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The V2 model metadata, plus what is served where (`serving`) and the last failure."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                raise NotFound(f"model {name!r} is not served here")
            live = dict(slot.live)
            chosen = live.get(CURRENT) or live.get(CANARY)
            if version is not None:
                chosen = next((s for s in live.values() if s.version == version), None)
                if chosen is None:
                    raise NotFound(f"{name}@{version} is not served here")
            serving = {slot.role(link): s.version for link, s in live.items()}
            if CANARY in live:
                serving["canary_traffic"] = slot.traffic  # type: ignore[assignment]
            last_error = slot.last_error
        card: Mapping[str, Any] = chosen.card if chosen else {}
        signature = card.get("signature")
        if not isinstance(signature, Mapping):
            signature = {}
        return {
            "name": name,
            "versions": sorted({s.version for s in live.values()}),
            "platform": chosen.platform if chosen else "",
            "inputs": [_tensor_metadata(t) for t in signature.get("inputs", ())],
            "outputs": [_tensor_metadata(t) for t in signature.get("outputs", ())],
            "serving": serving,
            "last_error": last_error,
        }

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [pid for slot in self._slots.values() for s in slot.live.values() for pid in s.pids()]


V2_DATATYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
                "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL", "string": "BYTES",
                "str": "BYTES", "object": "BYTES", "bytes": "BYTES"}


def _tensor_metadata(tensor: Any) -> dict[str, Any]:
    """A card signature entry ({name, type, shape}) as V2 tensor metadata ({name, datatype, shape})."""
    if not isinstance(tensor, Mapping):
        return {}
    kind = str(tensor.get("type", ""))
    shape = [-1 if d is None else d for d in tensor.get("shape") or [-1]]
    with contextlib.suppress(AttributeError):
        kind = V2_DATATYPES.get(kind.lower(), kind)
    return {"name": tensor.get("name"), "datatype": kind, "shape": shape}

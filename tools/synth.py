"""A synthetic registry for tools/bench: N models x M versions with a realistic history.

What a registry looks like after a few years of use: every version was registered
through a pull request (a commit on ``register/<name>/<version>`` by a data
scientist, merged into main with ``--no-ff`` by a reviewer), and stage changes
are commits on main that edit one ``stages.yaml`` with a ``Reason:`` trailer.
Models are interleaved in time, so one model's history is spread over the whole
log, as it is in a real registry.

The whole history is written by one ``git fast-import`` process fed from memory,
then checked out: seconds, not the minutes that 20,000 ``git commit`` calls take.
Everything is drawn from a seeded random generator, so the same parameters give
the same repository (and the same commit ids) on every machine.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from registry.files.stages import (  # stages.yaml as the registry writes it
    Canary,
    Deprecation,
    Stages,
)

# Bump when the generated layout or history changes: cached registries are rebuilt.
GENERATOR_VERSION = 1
SEED = 20240501
STAMP_FILE = "bench-registry.json"  # inside .git/, so it is not part of the work tree
SCHEMAS = ("registry", "model", "stages", "card")

DAY = 86_400
HISTORY_START = int(dt.datetime(2022, 1, 3, 9, 0, tzinfo=dt.UTC).timestamp())
# Models are created during the first ~1.5 years; their versions follow every few weeks.
MODEL_START_SPREAD_DAYS = 540
# How often a new (non-first) version goes on to each stage. The first version of
# every model goes staging -> production, so every model serves something.
P_STAGING = 0.15
P_PRODUCTION = 0.5  # of staged versions
P_CANARY_FIRST = 0.3  # of versions going to production
P_ARCHIVE_STALE_STAGING = 0.5  # staged, passed over, later archived
P_ROLLBACK = 0.03  # after a production change
MAX_DEPRECATED = 2  # older deprecated versions get archived
SUNSET_DAYS = (120, 200)  # registry.yaml's default min_sunset_days is 90

DVC_REMOTE_URL = "/var/lib/registry/dvc-storage"
ARTIFACT = "model.safetensors"

DOMAINS = {
    "fraud": "payments", "credit": "lending", "churn": "growth", "spam": "trust-safety",
    "toxicity": "trust-safety", "intent": "assistant", "ticket": "support", "lead": "sales",
    "claim": "insurance", "defect": "manufacturing", "sentiment": "insights", "topic": "insights",
    "language": "platform", "document": "platform", "image": "vision", "product": "catalog",
    "query": "search", "ad": "ads", "risk": "lending", "anomaly": "sre",
}
MODEL_KINDS = (
    "scoring", "approval", "detector", "classifier", "router", "triage", "ranker-gate",
    "filter", "tagger", "screening", "predictor", "moderation", "labeler", "sorter",
    "segmenter", "qualifier", "gatekeeper", "flagger", "auditor", "checker",
)
REGIONS = ("", "-eu", "-us", "-apac", "-latam", "-mobile", "-web", "-b2b")
FRAMEWORKS = {  # framework -> (algorithm, how the card's description names it)
    "pytorch": ("mlp", "Multilayer perceptron"),
    "xgboost": ("gradient-boosted-trees", "Gradient-boosted trees"),
    "lightgbm": ("gradient-boosted-trees", "LightGBM trees"),
    "sklearn": ("logistic-regression", "Logistic regression"),
}
FIRST_NAMES = (
    "ada", "bruno", "chen", "dana", "elif", "farah", "goran", "hana", "ivan", "jun", "kofi",
    "lena", "mateo", "nia", "omar", "priya", "quinn", "rosa", "sven", "tariq", "uma", "vera",
    "wei", "ximena", "yusuf", "zoe",
)
LAST_NAMES = ("okafor", "silva", "novak", "tanaka", "haddad", "kowalski", "larsen", "moreau", "rao")
REASONS = {
    "staging": (
        "offline metrics beat the current staging model", "ready for shadow traffic",
        "retrained on last month's data", "new features from the feature store",
    ),
    "canary": ("staging soak passed for a week", "shadow comparison looks good"),
    "production": (
        "canary held for 7 days with no alerts", "approved at the model review",
        "accuracy +0.8 points on the holdout set", "fixes the drift seen on new traffic",
    ),
    "rollback": ("rollback: p99 latency regression", "rollback: calibration drift in production"),
    "archived": ("superseded, no longer evaluated", "retention: replaced two releases ago"),
}
TIMEZONES = ("+0000", "+0100", "+0200", "-0500", "-0800", "+0530", "+0900")


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    tz: str

    def signature(self, when: int) -> str:
        return f"{self.name} <{self.email}> {when} {self.tz}"


@dataclass(frozen=True)
class Model:
    name: str
    domain: str
    team: str
    framework: str
    scientists: tuple[Person, ...]
    reviewers: tuple[Person, ...]


@dataclass
class StageState:
    """One model's stages.yaml as it evolves; rendered the way the registry writes it."""

    production: str | None = None
    canary: tuple[str, float] | None = None
    staging: list[str] = field(default_factory=list)
    deprecated: dict[str, str] = field(default_factory=dict)  # version -> sunset date
    archived: list[str] = field(default_factory=list)

    def remove(self, version: str) -> None:
        if self.production == version:
            self.production = None
        if self.canary and self.canary[0] == version:
            self.canary = None
        if version in self.staging:
            self.staging.remove(version)
        self.deprecated.pop(version, None)
        if version in self.archived:
            self.archived.remove(version)

    def render(self) -> str:
        return Stages(
            production=self.production,
            canary=Canary(*self.canary) if self.canary else None,
            staging=tuple(self.staging),
            deprecated={version: Deprecation(sunset) for version, sunset in self.deprecated.items()},
            archived=tuple(self.archived),
        ).to_text()


@dataclass(frozen=True)
class Registration:
    when: int
    model: Model
    version: str
    first: bool
    author: Person
    reviewer: Person


@dataclass(frozen=True)
class Promotion:
    when: int
    model: Model
    version: str
    stage: str
    reason: str
    stages_text: str
    author: Person
    reviewer: Person


Event = Registration | Promotion


@dataclass(frozen=True)
class BuiltRegistry:
    path: Path
    models: int
    versions: int
    commits: int
    first_parent_commits: int
    registrations: int
    promotions: int
    with_production: int
    busiest_model: str
    busiest_model_events: int
    head: str
    build_seconds: float
    reused: bool


def ensure_registry(cache_dir: Path, models: int, versions: int, *, rebuild: bool = False) -> BuiltRegistry:
    """The registry for these parameters: reused from cache_dir when present, else built."""
    path = cache_dir / f"registry-{models}x{versions}"
    stamp = path / ".git" / STAMP_FILE
    wanted = {"generator": GENERATOR_VERSION, "seed": SEED, "models": models, "versions": versions}
    if not rebuild and stamp.is_file():
        recorded = json.loads(stamp.read_text())
        result = recorded.get("result", {})
        same = {k: recorded.get(k) for k in wanted} == wanted
        if same and "head" in result and _untouched(path, result["head"]):
            return BuiltRegistry(path=path, reused=True, **result)
    partial = path.with_name(path.name + ".partial")
    for stale in (partial, path):
        if stale.exists():
            shutil.rmtree(stale)
    started = time.perf_counter()
    result = _build(partial, models, versions)
    result["build_seconds"] = round(time.perf_counter() - started, 2)
    (partial / ".git" / STAMP_FILE).write_text(json.dumps({**wanted, "result": result}, indent=2))
    partial.rename(path)
    return BuiltRegistry(path=path, reused=False, **result)


def _untouched(path: Path, head: str) -> bool:
    """Still as generated: same commit checked out and nothing changed in the work tree."""
    current = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=False
    ).stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=path, capture_output=True, text=True, check=False
    )
    return current == head and status.returncode == 0 and not status.stdout


def _build(path: Path, model_count: int, version_count: int) -> dict[str, object]:
    rng = random.Random(SEED)
    models = _make_models(rng, model_count)
    events: list[Event] = []
    for model in models:
        start = HISTORY_START + DAY + rng.randrange(MODEL_START_SPREAD_DAYS * DAY)
        events += _plan_model(rng, model, start, version_count)
    # Stable sort: a model's own events keep their order on equal timestamps.
    events.sort(key=lambda event: event.when)

    path.mkdir(parents=True)
    _git(path, "init", "--quiet", "--initial-branch=main")
    _git(path, "config", "gc.auto", "0")
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"], cwd=path, stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    stream = _FastImport(proc.stdin, rng)
    stream.initial_commit(Path(__file__).resolve().parent.parent / "schemas")
    for event in events:
        if isinstance(event, Registration):
            stream.registration(event)
        else:
            stream.promotion(event)
    stream.finish()
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"git fast-import failed with exit code {proc.returncode}")
    _git(path, "update-ref", "-d", _FastImport.PR_REF)
    _git(path, "reset", "--hard", "--quiet", "main")
    _git(path, "commit-graph", "write", "--reachable")

    per_model: dict[str, int] = {}
    for event in events:
        per_model[event.model.name] = per_model.get(event.model.name, 0) + 1
    busiest = max(per_model, key=lambda name: per_model[name])
    registrations = sum(isinstance(e, Registration) for e in events)
    return {
        "models": model_count,
        "versions": version_count,
        "commits": stream.commits,
        "first_parent_commits": stream.commits - registrations,
        "registrations": registrations,
        "promotions": len(events) - registrations,
        "with_production": stream.models_with_production(),
        "busiest_model": busiest,
        "busiest_model_events": per_model[busiest],
        "head": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip(),
    }


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True)


def _make_models(rng: random.Random, count: int) -> list[Model]:
    people = [
        Person(f"{first.title()} {last.title()}", f"{first}.{last}@acme.example", rng.choice(TIMEZONES))
        for first in FIRST_NAMES
        for last in LAST_NAMES
    ]
    rng.shuffle(people)
    reviewers, scientists = people[:30], people[30:]
    combos = [f"{domain}-{kind}" for domain in DOMAINS for kind in MODEL_KINDS]
    rng.shuffle(combos)
    models = []
    for index in range(count):
        base = combos[index % len(combos)]
        region = REGIONS[(index // len(combos)) % len(REGIONS)]
        generation = index // (len(combos) * len(REGIONS))
        name = base + region + (f"-{generation + 1}" if generation else "")
        domain = base.split("-")[0]
        models.append(
            Model(
                name=name,
                domain=domain,
                team=DOMAINS[domain],
                framework=rng.choice(list(FRAMEWORKS)),
                scientists=tuple(rng.sample(scientists, rng.randint(1, 3))),
                reviewers=tuple(rng.sample(reviewers, 2)),
            )
        )
    return models


def _version_series(rng: random.Random, count: int) -> list[str]:
    major, minor, patch = (0, 9, 0) if rng.random() < 0.2 else (1, 0, 0)
    series = [f"{major}.{minor}.{patch}"]
    while len(series) < count:
        roll = rng.random()
        if roll < 0.05:
            major, minor, patch = major + 1, 0, 0
        elif roll < 0.3:
            patch += 1
        else:
            minor, patch = minor + 1, 0
        release = f"{major}.{minor}.{patch}"
        if patch == 0 and len(series) <= count - 2 and rng.random() < 0.08:
            series.append(f"{release}-rc.1")
        series.append(release)
    return series


def _plan_model(rng: random.Random, model: Model, start: int, version_count: int) -> list[Event]:
    """One model's events, in order, each later than the one before."""
    state = StageState()
    events: list[Event] = []
    clock = start
    production_history: list[str] = []

    def later(min_days: int, max_days: int) -> int:
        nonlocal clock
        clock += rng.randint(min_days * DAY, max_days * DAY)
        return clock

    def promote(version: str, stage: str, reason: str, traffic: float | None = None) -> None:
        when = later(1, 6)
        if stage == "production" and state.production and state.production != version:
            replaced = state.production
            state.remove(replaced)
            state.deprecated[replaced] = _date(when + rng.randint(*SUNSET_DAYS) * DAY).isoformat()
        state.remove(version)
        if stage == "production":
            state.production = version
            production_history.append(version)
        elif stage == "canary":
            state.canary = (version, traffic or 0.1)
        elif stage == "staging":
            state.staging.append(version)
        elif stage == "archived":
            state.archived.append(version)
        events.append(
            Promotion(
                when=when, model=model, version=version, stage=stage, reason=reason,
                stages_text=state.render(), author=rng.choice(model.scientists),
                reviewer=rng.choice(model.reviewers),
            )
        )

    series = _version_series(rng, version_count)
    for index, version in enumerate(series):
        events.append(
            Registration(
                when=later(10, 60), model=model, version=version, first=index == 0,
                author=rng.choice(model.scientists), reviewer=rng.choice(model.reviewers),
            )
        )
        if "-" in version:  # release candidates are evaluated off-registry, never staged
            continue
        if index > 0 and (len(state.staging) >= 2 or rng.random() >= P_STAGING):
            continue
        promote(version, "staging", rng.choice(REASONS["staging"]))
        if index > 0 and rng.random() >= P_PRODUCTION:
            if rng.random() < P_ARCHIVE_STALE_STAGING:
                promote(version, "archived", rng.choice(REASONS["archived"]))
            continue
        if index > 0 and state.canary is None and rng.random() < P_CANARY_FIRST:
            traffic = rng.choice((0.05, 0.1, 0.2, 0.25))
            promote(version, "canary", rng.choice(REASONS["canary"]), traffic)
            if index == len(series) - 1:
                continue  # the newest version is still on canary
        promote(version, "production", rng.choice(REASONS["production"]))
        if len(production_history) > 1 and rng.random() < P_ROLLBACK:
            previous = production_history[-2]
            promote(previous, "production", rng.choice(REASONS["rollback"]))
        while len(state.deprecated) > MAX_DEPRECATED:
            oldest = next(iter(state.deprecated))
            promote(oldest, "archived", rng.choice(REASONS["archived"]))
    return events


class _FastImport:
    """Writes the fast-import stream: blobs once, commits on main and on a PR ref."""

    PR_REF = "refs/bench/pull-request"  # every PR branch commit; deleted after import, as on merge
    GITHUB = Person("GitHub", "noreply@github.com", "+0000")
    ADMIN = Person("Registry Admin", "ml-admins@acme.example", "+0000")

    def __init__(self, out: BinaryIO, rng: random.Random) -> None:
        self._out = out
        self._rng = rng
        self._next_mark = 0
        self._blob_marks: dict[bytes, int] = {}
        self._main_marks: list[int] = []
        self._pull_request = 0
        self._production: dict[str, bool] = {}
        self.commits = 0

    def models_with_production(self) -> int:
        return sum(self._production.values())

    def _mark(self) -> int:
        self._next_mark += 1
        return self._next_mark

    def _blob(self, content: str) -> int:
        data = content.encode()
        mark = self._blob_marks.get(data)
        if mark is None:
            mark = self._blob_marks[data] = self._mark()
            self._out.write(b"blob\nmark :%d\ndata %d\n%b\n" % (mark, len(data), data))
        return mark

    def _commit(
        self,
        ref: str,
        author: Person,
        committer: Person,
        when: int,
        message: str,
        files: dict[str, int],
        parent: int | None = None,
        merge: int | None = None,
    ) -> int:
        mark = self._mark()
        text = message.encode()
        header = [
            f"commit {ref}",
            f"mark :{mark}",
            f"author {author.signature(when)}",
            f"committer {committer.signature(when)}",
            f"data {len(text)}",
        ]
        self._out.write("\n".join(header).encode() + b"\n" + text + b"\n")
        if parent is not None:
            self._out.write(b"from :%d\n" % parent)
        if merge is not None:
            self._out.write(b"merge :%d\n" % merge)
        for path, blob in files.items():
            self._out.write(f"M 100644 :{blob} {path}\n".encode())
        self._out.write(b"\n")
        self.commits += 1
        return mark

    def initial_commit(self, schema_dir: Path) -> None:
        files = {
            "registry.yaml": self._blob(REGISTRY_YAML),
            ".dvc/config": self._blob(
                f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {DVC_REMOTE_URL}\n"
            ),
            ".dvc/.gitignore": self._blob("/config.local\n/tmp\n/cache\n"),
            ".dvcignore": self._blob(""),
        }
        for kind in SCHEMAS:
            name = f"{kind}.schema.json"
            files[f".registry/schemas/{name}"] = self._blob((schema_dir / name).read_text())
        when = HISTORY_START
        self._main_marks.append(
            self._commit("refs/heads/main", self.ADMIN, self.ADMIN, when, "Initialize registry\n", files)
        )

    def registration(self, event: Registration) -> None:
        model, version = event.model, event.version
        folder = f"models/{model.name}/{version}"
        size = self._rng.randint(2 << 20, 900 << 20)
        files = {
            f"{folder}/card.yaml": self._blob(_card(self._rng, event, size)),
            f"{folder}/{ARTIFACT}.dvc": self._blob(
                f"outs:\n- md5: {self._rng.getrandbits(128):032x}\n  size: {size}\n"
                f"  hash: md5\n  path: {ARTIFACT}\n"
            ),
            f"{folder}/.gitignore": self._blob(f"/{ARTIFACT}\n"),
        }
        if event.first:
            files[f"models/{model.name}/model.yaml"] = self._blob(_model_yaml(model))
            files[f"models/{model.name}/stages.yaml"] = self._blob(StageState().render())
        # A PR branch starts from main as it was when the data scientist branched off.
        base = self._main_marks[-1 - self._rng.randint(0, min(8, len(self._main_marks) - 1))]
        opened = event.when - self._rng.randint(3600, 3 * DAY)
        title = f"Register {model.name}@{version}"
        branch_commit = self._commit(
            self.PR_REF, event.author, event.author, opened,
            f"{title}\n\n{model.framework} model for {model.domain}, card and DVC pointer.\n",
            files, parent=base,
        )
        self._pull_request += 1
        message = (
            f"Merge pull request #{self._pull_request} from acme/register/{model.name}/{version}\n\n"
            f"{title}\n"
        )
        self._main_marks.append(
            self._commit(
                "refs/heads/main", event.reviewer, self.GITHUB, event.when, message, files,
                merge=branch_commit,
            )
        )

    def promotion(self, event: Promotion) -> None:
        path = f"models/{event.model.name}/stages.yaml"
        message = (
            f"Promote {event.model.name}@{event.version} to {event.stage}\n\n"
            f"Reason: {event.reason}\n"
            f"Approved-by: {event.reviewer.name} <{event.reviewer.email}>\n"
        )
        self._main_marks.append(
            self._commit(
                "refs/heads/main", event.author, event.author, event.when, message,
                {path: self._blob(event.stages_text)},
            )
        )
        self._production[event.model.name] = event.stages_text.find("\nproduction: ") >= 0

    def finish(self) -> None:
        self._out.write(b"done\n")


def _model_yaml(model: Model) -> str:
    owners = ", ".join(f'"{o}"' for o in (f"@acme/{model.team}-ml", _handle(model.scientists[0])))
    return (
        "# yaml-language-server: $schema=../../.registry/schemas/model.schema.json\n"
        f"description: Classifies {model.domain} cases ({model.name}) for the {model.team} team\n"
        f"owners: [{owners}]\n"
        "task: classification\n"
        f"tags: {{team: {model.team}, domain: {model.domain}}}\n"
    )


def _date(timestamp: int) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def _handle(person: Person) -> str:
    return "@" + person.email.split("@")[0].replace(".", "-")


def _hyperparameters(rng: random.Random, framework: str) -> list[str]:
    if framework == "pytorch":
        return [
            f"  learning_rate: {rng.choice((0.0003, 0.001, 0.003))}",
            f"  batch_size: {rng.choice((256, 512, 1024))}",
            f"  epochs: {rng.randint(10, 60)}",
            f"  hidden_layers: [{rng.choice((512, 256))}, {rng.choice((128, 64))}]",
            f"  dropout: {rng.choice((0.1, 0.2, 0.3))}",
        ]
    if framework == "sklearn":
        return [
            f"  C: {rng.choice((0.1, 0.5, 1.0, 2.0))}",
            "  penalty: l2",
            f"  max_iter: {rng.choice((200, 500, 1000))}",
            "  class_weight: balanced",
        ]
    return [
        f"  learning_rate: {rng.choice((0.03, 0.05, 0.1))}",
        f"  max_depth: {rng.randint(4, 10)}",
        f"  n_estimators: {rng.randrange(200, 1200, 50)}",
        f"  subsample: {rng.choice((0.7, 0.8, 0.9))}",
    ]


def _card(rng: random.Random, event: Registration, size: int) -> str:
    model = event.model
    algorithm, description = FRAMEWORKS[model.framework]
    kind = model.name.split("-", 1)[1]
    created = _date(event.when - 3600)
    trained = created - dt.timedelta(days=rng.randint(1, 6))
    accuracy = round(rng.uniform(0.9, 0.985), 4)
    f1 = round(accuracy - rng.uniform(0.01, 0.06), 4)
    lines = [
        "# yaml-language-server: $schema=../../../.registry/schemas/card.schema.json",
        f"name: {model.name}",
        f"version: {event.version}",
        f"description: {description} classifier for {model.domain} {kind}, "
        f"retrained on {trained:%Y-%m} data.",
        f"created: {created.isoformat()}",
        f"creator: {event.author.email.split('@')[0]}",
        f"framework: {model.framework}",
        "task: classification",
        f"algorithm: {algorithm}",
        "metrics:",
        f"  accuracy: {accuracy}",
        f"  f1: {f1}",
        f"  precision: {round(f1 + rng.uniform(0.0, 0.03), 4)}",
        f"  recall: {round(f1 - rng.uniform(0.0, 0.03), 4)}",
        f"  roc_auc: {round(min(0.999, accuracy + rng.uniform(0.01, 0.03)), 4)}",
        "artifacts:",
        f"- path: {ARTIFACT}",
        f"  size: {size}",
        f"  sha256: {rng.getrandbits(256):064x}",
        "  storage: dvc",
        "hyperparameters:",
        *_hyperparameters(rng, model.framework),
        "training:",
        "  data:",
        f"    path: s3://acme-ml-data/{model.domain}/{trained:%Y-%m}/train.parquet",
        f"    hash: md5:{rng.getrandbits(128):032x}",
        f"  samples: {rng.randint(50_000, 5_000_000)}",
        f"  date: {trained.isoformat()}",
        f"  duration: {rng.randint(1, 9)}h{rng.randint(0, 59):02d}m",
        f"  code_commit: {rng.getrandbits(160):040x}",
        f"  run_id: run-{rng.getrandbits(64):016x}",
        f"intended_use: Batch and online {model.domain} decisions in the {model.team} services.",
        "limitations: Not evaluated on traffic from markets launched after the training window.",
        "tags:",
        f"  team: {model.team}",
        f"  dataset: {model.domain}-{trained:%Y-%m}",
    ]
    return "\n".join(lines) + "\n"


REGISTRY_YAML = """\
# yaml-language-server: $schema=.registry/schemas/registry.schema.json
lifecycle:
  transitions:
    development: [staging, archived]
    staging: [canary, production, development, archived]
    canary: [production, staging, archived]
    production: [deprecated]
    deprecated: [production, archived]
  on_replace: deprecated
policy:
  staging:
    metrics: {accuracy: {min: 0.80}}
    latency: {p50_ms: 50, p99_ms: 200, runs: 50}
    smoke_timeout_s: 60
    require_signature: false
  production:
    metrics: {accuracy: {min: 0.90}}
    max_regression: {accuracy: {absolute: 0.01}}
    latency: {p50_ms: 20, p99_ms: 100, runs: 100}
    smoke_timeout_s: 60
    require_signature: true
deprecation: {min_sunset_days: 90}
retention: {keep_latest: 3, purge_unstaged_after_days: 7}
storage: {git_max_bytes: 1048576}
scan: {allow_globals: []}
trusted_keys: []
roles: {admin: ["@acme/ml-admins"], data-scientist: [], developer: [], viewer: []}
"""


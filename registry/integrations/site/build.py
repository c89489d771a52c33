"""`registry site`: a static HTML catalog of one registry commit.

Everything is read from the committed tree at ``--at`` (one ``git ls-tree`` and one
``git cat-file --batch``), never from the work tree, so the catalog shows what is on
main and nothing half-edited. The output is plain files (HTML, one stylesheet, a
few lines of search script) that work offline and on GitHub Pages; every page is
usable without JavaScript, and a Content-Security-Policy forbids inline scripts, so
a card that slips a ``<script>`` past the escaping still could not run it.

Reading builds frozen values (`Catalog`), rendering turns them into text (pure, no
I/O), writing swaps the whole folder in at once. The output depends only on the
commit: building twice gives identical bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError, ValidationError
from registry.files import cards, config, schemas, stages, yamlio
from registry.files.names import MODEL_NAME_RE, Version
from registry.queries.audit import AuditEntry
from registry.repo import git
from registry.repo.blobcache import BlobCache
from registry.repo.registry import MODEL_FILE, MODELS_DIR, ModelInfo, Registry, version_sort_key
from registry.signing.bundle import Bundle, Verifier
from registry.signing.keys import keys_in_commit
from registry.signing.manifest import (
    SIGNATURE_FILE,
    Manifest,
    Resource,
    SignatureError,
    is_signed_file,
)
from registry.version import __version__

GENERATOR = f"registry site {__version__}"
STYLESHEET = "style.css"
SCRIPT = "search.js"
# Shown as badges and in the index, in lifecycle order.
STAGE_ORDER = ("production", "canary", "staging", "development", "deprecated", "archived")
_NONE = '<span class="muted">none</span>'
_CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'")
# Series colours (each at least 4.5:1 on white) and dash patterns, so series differ without colour.
_SERIES = (
    ("#1d4ed8", ""), ("#c2410c", "6 4"), ("#047857", "2 3"), ("#7e22ce", "10 4 2 4"),
    ("#be123c", "4 2"), ("#0e7490", "8 3 2 3 2 3"), ("#4d5562", "1 3"), ("#a16207", "12 4"),
)


# --- what the catalog shows --------------------------------------------------------


@dataclass(frozen=True)
class SignatureStatus:
    """``absent``, ``present`` (no trusted key to check it with), ``verified`` or ``invalid``."""

    state: str
    detail: str


@dataclass(frozen=True)
class VersionEntry:
    card: cards.Card
    stage: str
    signature: SignatureStatus
    sunset: str | None = None
    traffic: float | None = None

    @property
    def version(self) -> str:
        return self.card.version


@dataclass(frozen=True)
class ModelEntry:
    info: ModelInfo
    stages: stages.Stages
    versions: tuple[VersionEntry, ...]  # oldest first, by semver
    history: tuple[AuditEntry, ...]  # oldest first

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def latest(self) -> str | None:
        return self.versions[-1].version if self.versions else None


@dataclass(frozen=True)
class Catalog:
    commit: str
    date: str
    at: str
    models: tuple[ModelEntry, ...]
    trusted_keys: int


@dataclass(frozen=True)
class Built:
    out: Path
    commit: str
    files: tuple[str, ...]


# --- reading one commit's tree -----------------------------------------------------


def read_catalog(reg: Registry, at: str = "HEAD") -> Catalog:
    from registry.queries import audit

    commit = git.rev_parse(at, reg.root)
    if commit is None:
        raise UsageError(f"--at {at}: no such commit, branch or tag in this registry")
    date = git.run(["show", "-s", "--format=%cI", commit], reg.root).strip()
    entries = git.ls_tree(commit, reg.root, [f"{MODELS_DIR}/"])
    # models/<name>/<rest>: files grouped by model, then by version folder.
    files: dict[str, dict[str, git.TreeEntry]] = {}
    for entry in entries:
        parts = entry.path.split("/", 2)
        if len(parts) == 3 and MODEL_NAME_RE.fullmatch(parts[1]):
            files.setdefault(parts[1], {})[parts[2]] = entry
    names = sorted(n for n, tree in files.items() if MODEL_FILE in tree)

    # Cards are schema-checked once per blob id ever: a big registry's second build reads the cache.
    cache = BlobCache(reg.root, "site-cache", f"site-1:{schemas.fingerprint()}")
    with git.CatFile(reg.root) as cat:
        config_text = cat.read(f"{commit}:{config.CONFIG_FILE}")
        if config_text is None:
            raise UsageError(f"--at {at}: commit {commit[:8]} has no {config.CONFIG_FILE}; not a registry there")
        settings = config.parse(config_text)
        keys, key_problem = _trusted_keys(cat, commit, settings.trusted_keys)

        wanted: list[str] = []
        for name in names:
            tree = files[name]
            wanted += [tree[p].sha for p in (MODEL_FILE, stages.STAGES_FILE) if p in tree]
            wanted += [e.sha for p, e in tree.items() if p.endswith("/" + cards.CARD_FILE)
                       or p.endswith("/" + SIGNATURE_FILE)]
        blobs = dict(zip(wanted, cat.read_many(wanted), strict=True))

        history: dict[str, list[AuditEntry]] = {}
        for item in audit.log(reg, ref=commit):
            history.setdefault(item.model, []).append(item)

        models = []
        for name in names:
            tree = files[name]
            info = _model_info(name, blobs.get(tree[MODEL_FILE].sha) or b"")
            stages_rel = f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}"
            held = (stages.parse(blobs.get(tree[stages.STAGES_FILE].sha) or b"", stages_rel)
                    if stages.STAGES_FILE in tree else stages.Stages())
            versions = []
            for version in _versions(tree):
                rel = f"{MODELS_DIR}/{name}/{version}/{cards.CARD_FILE}"
                sha = tree[f"{version}/{cards.CARD_FILE}"].sha
                text = blobs.get(sha) or b""
                card = _card(cache, sha, text, rel)
                problems = cards.folder_problems(card, name, version, rel, text)
                if problems:
                    raise ValidationError(problems)
                folder = {p.split("/", 1)[1]: e for p, e in tree.items() if p.startswith(version + "/")}
                signature = _signature(cat, name, card, folder, blobs, keys, key_problem)
                deprecation = held.deprecated.get(version)
                versions.append(VersionEntry(
                    card=card, stage=held.stage_of(version), signature=signature,
                    sunset=deprecation.sunset if deprecation else None,
                    traffic=held.canary.traffic if held.canary and held.canary.version == version else None,
                ))
            models.append(ModelEntry(info, held, tuple(versions), tuple(history.get(name, ()))))
    cache.save()
    return Catalog(commit, date, at, tuple(models), len(keys))


def _versions(tree: Mapping[str, git.TreeEntry]) -> list[str]:
    found = {p.split("/", 1)[0] for p in tree if p.count("/") == 1 and p.endswith("/" + cards.CARD_FILE)}
    return sorted((v for v in found if Version.is_valid(v)), key=version_sort_key)


def _card(cache: BlobCache, sha: str, text: bytes, rel: str) -> cards.Card:
    hit = cache.get(sha)
    if hit is not None:
        return cards.Card.from_data(hit)
    card = cards.parse(text, rel)
    data = dict(card.data)
    try:
        # Only what JSON keeps exactly (no integer keys, NaN, sets...) is cached.
        exact = json.loads(json.dumps(data, allow_nan=False)) == data
    except (TypeError, ValueError):
        exact = False
    if exact:
        cache.put(sha, data)
    return card


def _model_info(name: str, text: bytes) -> ModelInfo:
    rel = f"{MODELS_DIR}/{name}/{MODEL_FILE}"
    data = yamlio.loads(text, rel) or {}
    problems = schemas.validate("model", data, rel, text)
    if problems:
        raise ValidationError(problems)
    return ModelInfo(name=name, description=data.get("description", ""), owners=tuple(data.get("owners", [])),
                     task=data.get("task"), tags=dict(data.get("tags", {})))


def _trusted_keys(cat: git.CatFile, commit: str, paths: Sequence[str]) -> tuple[list[Any], str | None]:
    """The public keys registry.yaml trusts, read from the same commit; and why none, if none."""
    if not paths:
        return [], "registry.yaml lists no trusted_keys"
    keys, problems = keys_in_commit(paths, lambda path: cat.read(f"{commit}:{path}"), "this commit")
    return keys, ("; ".join(problems) or None)


def _signature(cat: git.CatFile, name: str, card: cards.Card, folder: Mapping[str, git.TreeEntry],
               blobs: Mapping[str, bytes | None], keys: Sequence[Any], key_problem: str | None) -> SignatureStatus:
    """Verify signature.json against the committed files, without fetching anything from DVC.

    Files in git are hashed from their blobs. DVC-tracked artifacts are taken at the
    sha256 their card records: the card itself is a signed file, so a signature only
    verifies if the signed digests are the ones the card states.
    """
    source = f"{MODELS_DIR}/{name}/{card.version}/{SIGNATURE_FILE}"
    entry = folder.get(SIGNATURE_FILE)
    if entry is None:
        return SignatureStatus("absent", "not signed")
    if not keys:
        return SignatureStatus("present", f"signed; not verified here: {key_problem}")
    try:
        bundle = Bundle.from_json(blobs.get(entry.sha) or b"", source)
        resources = []
        for path, item in sorted(folder.items()):
            if not is_signed_file(path):
                continue
            if item.mode not in ("100644", "100755"):
                raise SignatureError(f"{source}: {path} is not a regular file (mode {item.mode})")
            data = cat.read(item.sha) or b""
            resources.append(Resource(path, hashlib.sha256(data).hexdigest()))
        resources += [Resource(a.path, a.sha256) for a in card.artifacts
                      if a.storage == "dvc" and a.path not in folder]
        manifest = Manifest(name, card.version, tuple(resources))
        verified = Verifier(keys).verify(bundle, manifest, source)
    except RegistryError as exc:
        return SignatureStatus("invalid", str(exc))
    return SignatureStatus("verified", f"verified with trusted key {verified.key_id[:16]}")


# --- rendering: pure functions from the catalog to text ----------------------------


def _e(value: object) -> str:
    """Every value from the registry goes through here into HTML text or attributes."""
    return html.escape(str(value), quote=True)


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return format(value, ".6g")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _when(timestamp: str) -> str:
    return f'<time datetime="{_e(timestamp)}">{_e(timestamp[:10])}</time>'


def _person(who: str | None) -> str:
    if not who:
        return ""
    return ", ".join(f'<span title="{_e(p)}">{_e(p.split(" <")[0])}</span>' for p in who.split(", "))


def _stage_badge(stage: str, label: str | None = None) -> str:
    css = stage if stage in STAGE_ORDER else "other"
    return f'<span class="badge stage-{css}">{_e(label or stage)}</span>'


def _signature_badge(status: SignatureStatus) -> str:
    label = {"absent": "unsigned", "present": "signed, unverified", "verified": "✓ verified",
             "invalid": "✗ invalid"}[status.state]
    return f'<span class="badge sig-{status.state}" title="{_e(status.detail)}">{_e(label)}</span>'


def _held(model: ModelEntry) -> list[tuple[str, str]]:
    """(stage, label) of every held stage, in lifecycle order."""
    held = model.stages
    out: list[tuple[str, str]] = []
    if held.production:
        out.append(("production", f"production {held.production}"))
    if held.canary:
        out.append(("canary", f"canary {held.canary.version} ({held.canary.traffic:.0%})"))
    out += [("staging", f"staging {v}") for v in held.staging]
    out += [("deprecated", f"deprecated {v}") for v in held.deprecated]
    out += [("archived", f"archived {v}") for v in held.archived]
    return out


def _page(title: str, body: str, catalog: Catalog, depth: int, crumbs: Sequence[tuple[str, str | None]],
          extra_head: str = "") -> str:
    up = "../" * depth
    trail = "".join(
        f'<li><a href="{_e(href)}">{_e(text)}</a></li>' if href else f'<li aria-current="page">{_e(text)}</li>'
        for text, href in crumbs
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">\n'
        f'<meta name="generator" content="{_e(GENERATOR)}">\n'
        f"<title>{_e(title)}</title>\n"
        f'<link rel="stylesheet" href="{up}{STYLESHEET}">\n{extra_head}'
        "</head>\n<body>\n"
        '<a class="skip-link" href="#main">Skip to main content</a>\n'
        '<header class="site-header">\n<div class="wrap">\n'
        f'<p class="site-title"><a href="{up}index.html">Model catalog</a></p>\n'
        f'<p class="site-commit">registry commit <code title="{_e(catalog.commit)}">{_e(catalog.commit[:12])}</code>'
        f" · {_when(catalog.date)}</p>\n"
        "</div>\n</header>\n"
        f'<nav class="breadcrumbs wrap" aria-label="Breadcrumb"><ol>{trail}</ol></nav>\n'
        f'<main id="main" class="wrap" tabindex="-1">\n{body}</main>\n'
        '<footer class="site-footer"><div class="wrap">'
        f"Generated by {_e(GENERATOR)} from commit <code>{_e(catalog.commit)}</code> "
        f"({_e(catalog.date)}). Read-only: changes are made by pull request.</div></footer>\n"
        "</body>\n</html>\n"
    )


def render(catalog: Catalog) -> dict[str, str]:
    """Every file of the site: relative path → text."""
    files = {STYLESHEET: _CSS, SCRIPT: _JS, "index.html": _index(catalog)}
    for model in catalog.models:
        files[f"models/{model.name}.html"] = _model_page(catalog, model)
    return files


def _index(catalog: Catalog) -> str:
    rows = []
    for model in catalog.models:
        info = model.info
        search = " ".join([model.name, info.description, info.task or "", *info.owners,
                           *(f"{k}={v}" for k, v in sorted(info.tags.items())),
                           *(label for _, label in _held(model))]).lower()
        badges = " ".join(_stage_badge(stage, label) for stage, label in _held(model)) or \
            _NONE
        tags = " ".join(f'<span class="tag">{_e(k)}={_e(v)}</span>' for k, v in sorted(info.tags.items()))
        rows.append(
            f'<tr data-search="{_e(search)}">'
            f'<th scope="row"><a href="models/{_e(model.name)}.html">{_e(model.name)}</a>'
            + (f'<p class="desc">{_e(info.description)}</p>' if info.description else "")
            + (f'<p class="tags">{tags}</p>' if tags else "")
            + "</th>"
            f"<td>{_e(model.latest) if model.latest else _NONE}</td>"
            f'<td class="badges">{badges}</td>'
            f"<td>{_e(info.task) if info.task else ''}</td>"
            f"<td>{_e(', '.join(info.owners))}</td>"
            f"<td>{len(model.versions)}</td></tr>"
        )
    count = len(catalog.models)
    in_production = sum(1 for m in catalog.models if m.stages.production)
    versions = sum(len(m.versions) for m in catalog.models)
    table = (
        '<table id="models" class="models">\n'
        f"<caption>{count} model{'s' if count != 1 else ''}, {versions} version{'s' if versions != 1 else ''}, "
        f"{in_production} in production</caption>\n"
        '<thead><tr><th scope="col">Model</th><th scope="col">Latest</th><th scope="col">Stages</th>'
        '<th scope="col">Task</th><th scope="col">Owners</th><th scope="col">Versions</th></tr></thead>\n'
        "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n"
    ) if rows else '<p class="empty">No models registered at this commit.</p>\n'
    recent = [e for m in catalog.models for e in m.history]
    recent.sort(key=lambda e: e.timestamp)
    activity = (
        '<section aria-labelledby="recent-heading">\n<h2 id="recent-heading">Recent changes</h2>\n'
        '<ol class="timeline">\n' + "\n".join(_timeline_item(e, link=True) for e in reversed(recent[-10:]))
        + "\n</ol>\n</section>\n"
    ) if recent else ""
    body = (
        '<h1>Models</h1>\n'
        '<p class="lede">Every model in the registry, the version each stage serves, and its latest version. '
        "Weights live in DVC; cards, stages and history in git.</p>\n"
        # Hidden until the script runs: without JavaScript the page has no dead control.
        '<form id="search" class="search" role="search" action="index.html" method="get" hidden>\n'
        '<label for="q">Search models</label>\n'
        '<input id="q" name="q" type="search" autocomplete="off" '
        'placeholder="name, task, owner, tag or stage" aria-describedby="search-status">\n'
        '<p id="search-status" class="muted" role="status" aria-live="polite"></p>\n'
        "</form>\n"
        f'<section aria-label="Model list">\n{table}</section>\n{activity}'
    )
    return _page("Model catalog", body, catalog, 0, [("Models", None)],
                 extra_head=f'<script src="{SCRIPT}" defer></script>\n')


def _model_page(catalog: Catalog, model: ModelEntry) -> str:
    info = model.info
    facts = [("Owners", _e(", ".join(info.owners)) if info.owners else _NONE)]
    if info.task:
        facts.append(("Task", _e(info.task)))
    facts.append(("Latest version", _e(model.latest) if model.latest else _NONE))
    held = " ".join(_stage_badge(stage, label) for stage, label in _held(model))
    facts.append(("Stages", held or '<span class="muted">no version staged</span>'))
    if info.tags:
        facts.append(("Tags", " ".join(f'<span class="tag">{_e(k)}={_e(v)}</span>'
                                       for k, v in sorted(info.tags.items()))))
    sections = [("versions", "Versions"), ("metrics", "Metrics"), ("history", "Stage history"),
                ("cards", "Model cards"), ("audit", "Audit trail")]
    toc = "".join(f'<li><a href="#{key}">{_e(text)}</a></li>' for key, text in sections)
    body = (
        f"<h1>{_e(info.name)}</h1>\n"
        + (f'<p class="lede">{_e(info.description)}</p>\n' if info.description else "")
        + '<dl class="summary">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts) + "</dl>\n"
        + f'<nav class="toc" aria-label="On this page"><ul>{toc}</ul></nav>\n'
        + _versions_section(model)
        + _metrics_section(model)
        + _history_section(model)
        + _cards_section(model)
        + _audit_section(model)
    )
    return _page(f"{info.name} · Model catalog", body, catalog, 1,
                 [("Models", "../index.html"), (info.name, None)])


def _metric_names(model: ModelEntry) -> list[str]:
    return sorted({k for v in model.versions for k in v.card.metrics})


def _versions_section(model: ModelEntry) -> str:
    if not model.versions:
        return ('<section id="versions" aria-labelledby="versions-heading">\n'
                '<h2 id="versions-heading">Versions</h2>\n<p class="empty">No version registered.</p>\n</section>\n')
    metrics = _metric_names(model)
    head = "".join(f'<th scope="col" class="num">{_e(m)}</th>' for m in metrics)
    rows = []
    for entry in reversed(model.versions):
        values = "".join(
            f'<td class="num">{_e(_num(entry.card.metrics[m])) if m in entry.card.metrics else "–"}</td>'
            for m in metrics
        )
        rows.append(
            f'<tr><th scope="row"><a href="#v-{_e(entry.version)}">{_e(entry.version)}</a></th>'
            f"<td>{_stage_badge(entry.stage)}</td><td>{_e(entry.card.data.get('created', ''))}</td>"
            f"<td>{_signature_badge(entry.signature)}</td>{values}</tr>"
        )
    table = (
        '<div class="scroll"><table class="versions">\n<caption>Versions, newest first, with their metrics</caption>\n'
        '<thead><tr><th scope="col">Version</th><th scope="col">Stage</th><th scope="col">Created</th>'
        f'<th scope="col">Signature</th>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows)
        + "\n</tbody>\n</table></div>\n"
    )
    return (f'<section id="versions" aria-labelledby="versions-heading">\n<h2 id="versions-heading">Versions</h2>\n'
            f"{table}</section>\n")


def _cards_section(model: ModelEntry) -> str:
    if not model.versions:
        return ""
    version_cards = "".join(_version_card(model, entry) for entry in reversed(model.versions))
    return (f'<section id="cards" aria-labelledby="cards-heading">\n<h2 id="cards-heading">Model cards</h2>\n'
            f"{version_cards}</section>\n")


# Card fields shown in their own place; everything else goes to "More".
_SHOWN = {"name", "version", "description", "created", "creator", "framework", "task", "algorithm", "metrics",
          "artifacts", "entrypoint", "training", "intended_use", "limitations", "hyperparameters", "signature"}


def _version_card(model: ModelEntry, entry: VersionEntry) -> str:
    card = entry.card
    data = card.data
    anchor = f"v-{entry.version}"
    stage_note = entry.stage
    if entry.traffic is not None:
        stage_note += f" ({entry.traffic:.0%} of traffic)"
    if entry.sunset:
        stage_note += f", sunset {entry.sunset}"
    facts = [("Stage", _stage_badge(entry.stage, stage_note))]
    for key, label in (("created", "Created"), ("creator", "Creator"), ("framework", "Framework"),
                       ("task", "Task"), ("algorithm", "Algorithm"), ("entrypoint", "Entry point")):
        if key in data:
            facts.append((label, _e(data[key])))
    facts.append(("Signature", f"{_signature_badge(entry.signature)} "
                               f'<span class="sig-detail">{_e(entry.signature.detail)}</span>'))
    blocks = ['<div class="block"><h4>About</h4>\n<dl class="facts">'
              + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl></div>\n"]
    if card.metrics:
        rows = "".join(f'<tr><th scope="row">{_e(k)}</th><td class="num">{_e(_num(v))}</td></tr>'
                       for k, v in sorted(card.metrics.items()))
        blocks.append(f'<div class="block"><h4>Metrics</h4>\n<table class="compact"><thead><tr>'
                      f'<th scope="col">Metric</th><th scope="col" class="num">Value</th></tr></thead>'
                      f"<tbody>{rows}</tbody></table></div>\n")
    rows = "".join(
        f'<tr><th scope="row"><code>{_e(a.path)}</code></th><td class="num" title="{a.size} bytes">{_e(_size(a.size))}</td>'
        f'<td>{_e(a.storage)}</td><td><code class="digest">{_e(a.sha256)}</code></td></tr>'
        for a in card.artifacts
    )
    blocks.append('<div class="block wide"><h4>Artifacts</h4>\n<div class="scroll"><table class="compact artifacts">'
                  '<thead><tr><th scope="col">File</th><th scope="col" class="num">Size</th>'
                  '<th scope="col">Storage</th><th scope="col">sha256</th></tr></thead>'
                  f"<tbody>{rows}</tbody></table></div></div>\n")
    if isinstance(data.get("signature"), Mapping):
        blocks.append(_io_schema(data["signature"]))
    for key, label in (("training", "Training"), ("hyperparameters", "Hyperparameters")):
        if key in data:
            blocks.append(f'<div class="block"><h4>{label}</h4>\n{_value(data[key])}</div>\n')
    for key, label in (("intended_use", "Intended use"), ("limitations", "Limitations")):
        if key in data:
            blocks.append(f'<div class="block"><h4>{label}</h4>\n<p class="prose">{_e(data[key])}</p></div>\n')
    more = [(k, v) for k, v in data.items() if k not in _SHOWN]
    if more:
        blocks.append('<div class="block wide"><h4>More from the card</h4>\n<dl class="facts">'
                      + "".join(f"<dt>{_e(_label(k))}</dt><dd>{_value(v)}</dd>" for k, v in more)
                      + "</dl></div>\n")
    return (
        f'<article class="card" id="{_e(anchor)}" aria-labelledby="{_e(anchor)}-h">\n'
        f'<h3 id="{_e(anchor)}-h">{_e(model.name)} {_e(entry.version)}</h3>\n'
        f'<p>{_e(data.get("description", ""))}</p>\n'
        f'<div class="card-grid">\n{"".join(blocks)}</div>\n</article>\n'
    )


def _io_schema(spec: Mapping[str, Any]) -> str:
    items = [(direction[:-1], item) for direction in ("inputs", "outputs") for item in spec.get(direction) or ()]
    if not items:
        return ""
    described = any(item.get("description") for _, item in items)
    rows = []
    for kind, item in items:
        shape = item.get("shape")
        shape_text = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]" if shape else ""
        rows.append(f'<tr><td>{kind}</td><th scope="row"><code>{_e(item.get("name", ""))}</code></th>'
                    f'<td>{_e(item.get("type", ""))}</td><td><code>{_e(shape_text)}</code></td>'
                    + (f'<td>{_e(item.get("description", ""))}</td>' if described else "") + "</tr>")
    return ('<div class="block"><h4>Inputs and outputs</h4>\n<div class="scroll"><table class="compact"><thead><tr>'
            '<th scope="col">Kind</th><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Shape</th>'
            + ('<th scope="col">Description</th>' if described else "")
            + f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div></div>\n')


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _value(value: Any) -> str:
    """Any YAML value as HTML: mappings as definition lists, scalars as text."""
    if isinstance(value, Mapping):
        if not value:
            return _NONE
        return ('<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{_value(v)}</dd>"
                                           for k, v in value.items()) + "</dl>")
    if isinstance(value, list):
        if all(not isinstance(v, Mapping | list) for v in value):
            return _e(", ".join(_num(v) for v in value))
        return f'<code class="json">{_e(json.dumps(value, default=str))}</code>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _e(_num(value))


def _metrics_section(model: ModelEntry) -> str:
    names = _metric_names(model)
    body = _chart(model, names) if names else '<p class="empty">No version records metrics.</p>\n'
    return (f'<section id="metrics" aria-labelledby="metrics-heading">\n<h2 id="metrics-heading">Metrics</h2>\n'
            f"{body}</section>\n")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (1, 2 or 5 times a power of ten apart)."""
    if hi - lo <= 0:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _chart(model: ModelEntry, names: list[str]) -> str:
    versions = [v.version for v in model.versions]
    series = {m: [(i, float(v.card.metrics[m])) for i, v in enumerate(model.versions)
                  if m in v.card.metrics and math.isfinite(float(v.card.metrics[m]))] for m in names}
    values = [y for points in series.values() for _, y in points]
    if not values:
        return '<p class="empty">No finite metric values to chart.</p>\n'
    ticks = _ticks(min(values), max(values))
    lo, hi = ticks[0], ticks[-1]
    width, height = 960, 300
    left, right, top, bottom = 88, 24, 20, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    band = plot_w / len(versions)

    def x(i: int) -> float:
        return left + band * (i + 0.5)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - lo) / (hi - lo))

    decimals = max(0, -math.floor(math.log10(ticks[1] - ticks[0]))) if len(ticks) > 1 else 2
    title_id, desc_id = f"chart-{model.name}-title", f"chart-{model.name}-desc"
    summary = "; ".join(
        f"{m}: " + ", ".join(f"{versions[i]} {_num(val)}" for i, val in points) for m, points in series.items()
    )
    out = [
        f'<figure class="chart">\n<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{_e(title_id)} {_e(desc_id)}" xmlns="http://www.w3.org/2000/svg">\n'
        f'<title id="{_e(title_id)}">Metrics of {_e(model.name)} across versions</title>\n'
        f'<desc id="{_e(desc_id)}">Line chart, one line per metric, versions oldest to newest from left to right. '
        f"{_e(summary)}.</desc>\n"
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#ffffff" stroke="#c4cad3"/>\n'
    ]
    for tick in ticks:
        ty = y(tick)
        out.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" stroke="#e3e7ed"/>'
                   f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end" font-size="13" fill="#374151">'
                   f"{tick:.{decimals}f}</text>\n")
    for i, version in enumerate(versions):
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 20}" text-anchor="middle" font-size="13" '
                   f'fill="#374151">{_e(version)}</text>\n')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 14}" text-anchor="middle" font-size="14" '
               'font-weight="600" fill="#1f2937">Version</text>\n'
               f'<text transform="translate(22 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
               'font-size="14" font-weight="600" fill="#1f2937">Metric value</text>\n')
    for n, (metric, points) in enumerate(series.items()):
        colour, dash = _SERIES[n % len(_SERIES)]
        coords = " ".join(f"{x(i):.1f},{y(val):.1f}" for i, val in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="series"><polyline data-metric="{_e(metric)}" points="{coords}" fill="none" '
                   f'stroke="{colour}" stroke-width="2.5"{dash_attr}/>\n')
        for i, val in points:
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(val):.1f}" r="4" fill="{colour}">'
                       f"<title>{_e(metric)} of {_e(versions[i])}: {_e(_num(val))}</title></circle>\n")
        out.append("</g>\n")
    out.append("</svg>\n")
    legend = "".join(
        f'<li><svg width="28" height="10" aria-hidden="true" focusable="false"><line x1="0" y1="5" x2="28" y2="5" '
        f'stroke="{_SERIES[n % len(_SERIES)][0]}" stroke-width="3"'
        + (f' stroke-dasharray="{_SERIES[n % len(_SERIES)][1]}"' if _SERIES[n % len(_SERIES)][1] else "")
        + f"/></svg>{_e(metric)}</li>"
        for n, metric in enumerate(series)
    )
    out.append(f'<figcaption><ul class="legend" aria-label="Legend">{legend}</ul>'
               "The values are listed in the versions table above.</figcaption>\n</figure>\n")
    return "".join(out)


def _history_section(model: ModelEntry) -> str:
    if not model.history:
        items = '<p class="empty">No recorded changes.</p>\n'
    else:
        items = '<ol class="timeline">\n' + "\n".join(_timeline_item(e) for e in model.history) + "\n</ol>\n"
    return (f'<section id="history" aria-labelledby="history-heading">\n'
            f'<h2 id="history-heading">Stage history</h2>\n{items}</section>\n')


def _timeline_item(entry: AuditEntry, link: bool = False) -> str:
    target = entry.to_stage
    what = f"{entry.model} {entry.version}" if link else entry.version
    subject = (f'<a href="models/{_e(entry.model)}.html#v-{_e(entry.version)}">{_e(what)}</a>'
               if link else f'<a href="#v-{_e(entry.version)}">{_e(what)}</a>')
    if target is None:
        move = ""  # deleted or purged: the action says it
    elif entry.from_stage:
        move = f"{_stage_badge(entry.from_stage)} → {_stage_badge(target)}"
    else:
        move = _stage_badge(target)
    people = f"by {_person(entry.performed_by)}"
    if entry.approved_by:
        people += f", approved by {_person(entry.approved_by)}"
    if entry.pr is not None:
        people += f" · PR #{entry.pr}"
    return (f'<li class="event to-{_e(target if target in STAGE_ORDER else "other")}">'
            f'<p class="when">{_when(entry.timestamp)}</p>'
            f'<p class="what"><strong>{_e(entry.action.capitalize())}</strong> {subject} {move}</p>'
            + (f'<p class="why">{_e(entry.reason)}</p>' if entry.reason else "")
            + f'<p class="who">{people}</p></li>')


def _commit_cell(entry: AuditEntry) -> str:
    code = f'<code title="{_e(entry.commit)}">{_e(entry.commit[:8])}</code>'
    url = entry.url or ""
    # A link out only to the registry's own GitHub commit page; the page itself needs nothing online.
    if url.startswith("https://github.com/"):
        return f'<a href="{_e(url)}" aria-label="commit {_e(entry.commit)} on GitHub">{code}</a>'
    return code


def _audit_section(model: ModelEntry) -> str:
    if not model.history:
        table = '<p class="empty">No recorded changes.</p>\n'
    else:
        rows = "\n".join(
            f"<tr><td>{_when(e.timestamp)}</td><td>{_e(e.action)}</td>"
            f'<th scope="row">{_e(e.version)}</th><td>{_e(e.from_stage or "")}</td><td>{_e(e.to_stage or "")}</td>'
            f"<td>{_person(e.performed_by)}</td><td>{_person(e.approved_by)}</td><td>{_e(e.reason or '')}</td>"
            f"<td>{_commit_cell(e)}</td>"
            f"<td>{'#' + str(e.pr) if e.pr is not None else ''}</td></tr>"
            for e in model.history
        )
        table = (
            '<div class="scroll"><table class="audit">\n<caption>Every change along main, oldest first</caption>\n'
            '<thead><tr><th scope="col">Date</th><th scope="col">Action</th><th scope="col">Version</th>'
            '<th scope="col">From</th><th scope="col">To</th><th scope="col">By</th>'
            '<th scope="col">Approved by</th><th scope="col">Reason</th><th scope="col">Commit</th>'
            f'<th scope="col">PR</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>\n'
        )
    return (f'<section id="audit" aria-labelledby="audit-heading">\n<h2 id="audit-heading">Audit trail</h2>\n'
            f"{table}</section>\n")


# --- writing: the whole folder at once ---------------------------------------------


def _is_catalog(folder: Path) -> bool:
    index = folder / "index.html"
    try:
        head = index.read_text(errors="replace")[:2000]
    except OSError:
        return False
    return 'name="generator" content="registry site ' in head


def write(files: Mapping[str, str], out: Path) -> None:
    """Replace out with exactly these files; refuse a folder that is not empty or an earlier catalog."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_catalog(out):
        raise UsageError(f"--out {out}: is not empty and holds no catalog made by `registry site`; "
                         "give a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for rel, text in sorted(files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            path.chmod(0o644)
        staging.chmod(0o755)
        for folder in {p.parent for p in staging.rglob("*")}:
            folder.chmod(0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / "site")
        os.rename(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build(reg: Registry, out: Path, at: str = "HEAD") -> Built:
    catalog = read_catalog(reg, at)
    files = render(catalog)
    write(files, out)
    return Built(out, catalog.commit, tuple(sorted(files)))


# --- the stylesheet and the search script --------------------------------------------

_CSS = """\
:root {
  --text: #1b1f24; --muted: #4b5563; --bg: #f5f6f8; --panel: #ffffff; --line: #d5dae1;
  --link: #0b57d0; --head: #0f172a; --focus: #f59e0b;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5; color: var(--text); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
a { color: var(--link); }
a:focus-visible, input:focus-visible, main:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em; }
.skip-link { position: absolute; left: 8px; top: -48px; background: #ffffff; color: var(--link);
  padding: 8px 12px; border-radius: 6px; z-index: 10; }
.skip-link:focus { top: 8px; }
.site-header { background: var(--head); color: #f8fafc; }
.site-header .wrap { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between;
  gap: 8px 24px; padding-top: 14px; padding-bottom: 14px; }
.site-header p { margin: 0; }
.site-title a { color: #ffffff; font-weight: 700; font-size: 1.15rem; text-decoration: none; }
.site-title a::before { content: "\\25C6"; color: #93c5fd; margin-right: 8px; }
.site-commit { color: #cbd5e1; font-size: 0.9rem; }
.site-commit code { color: #e2e8f0; }
.breadcrumbs ol { list-style: none; display: flex; gap: 6px; padding: 14px 24px 0; margin: 0; font-size: 0.9rem; }
.breadcrumbs { padding: 0; }
.breadcrumbs li + li::before { content: "/"; color: var(--muted); margin-right: 6px; }
.breadcrumbs [aria-current] { color: var(--muted); }
main { padding-bottom: 48px; }
h1 { font-size: 1.9rem; margin: 12px 0 4px; }
h2 { font-size: 1.35rem; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.15rem; margin: 0 0 6px; }
h4 { font-size: 0.95rem; margin: 18px 0 6px; color: #374151; text-transform: uppercase; letter-spacing: 0.04em; }
.lede { color: #374151; font-size: 1.05rem; margin: 4px 0 16px; max-width: 70ch; }
.muted, .empty { color: var(--muted); }
.prose { max-width: 75ch; white-space: pre-line; margin: 0; }
table { border-collapse: collapse; width: 100%; background: var(--panel); }
caption { text-align: left; color: var(--muted); font-size: 0.9rem; padding: 0 0 6px; }
th, td { text-align: left; vertical-align: top; padding: 8px 10px; border-bottom: 1px solid var(--line); }
thead th { font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.04em; color: #374151;
  background: #eef1f5; border-bottom: 2px solid var(--line); }
tbody th { font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
.models { border: 1px solid var(--line); border-radius: 8px; }
.models tbody tr:hover { background: #f8fafc; }
.models th a { font-size: 1.05rem; }
.desc { margin: 2px 0 0; font-weight: 400; color: #374151; font-size: 0.92rem; max-width: 48ch; }
.tags { margin: 4px 0 0; font-weight: 400; }
.tag { display: inline-block; font-size: 0.78rem; padding: 0 6px; border: 1px solid var(--line);
  border-radius: 4px; background: #f8fafc; color: #374151; margin: 2px 4px 0 0; }
.badges { min-width: 14rem; }
.badge { display: inline-block; font-size: 0.8rem; font-weight: 600; padding: 1px 8px; border-radius: 999px;
  margin: 1px 2px; white-space: nowrap; border: 1px solid transparent; }
.stage-production { background: #d1fae5; color: #064e3b; border-color: #6ee7b7; }
.stage-canary { background: #fef3c7; color: #78350f; border-color: #fcd34d; }
.stage-staging { background: #dbeafe; color: #1e3a8a; border-color: #93c5fd; }
.stage-development, .stage-other { background: #f1f5f9; color: #334155; border-color: #cbd5e1; }
.stage-deprecated { background: #ffe4e6; color: #881337; border-color: #fda4af; }
.stage-archived { background: #e5e7eb; color: #1f2937; border-color: #9ca3af; }
.sig-verified { background: #d1fae5; color: #064e3b; border-color: #6ee7b7; }
.sig-invalid { background: #fee2e2; color: #7f1d1d; border-color: #fca5a5; }
.sig-present { background: #fef3c7; color: #78350f; border-color: #fcd34d; }
.sig-absent { background: #f1f5f9; color: #334155; border-color: #cbd5e1; }
.sig-detail { color: var(--muted); font-size: 0.88rem; }
.search { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 12px; margin: 8px 0 16px; }
.search label { font-weight: 600; }
.search input { font: inherit; width: min(420px, 100%); padding: 7px 10px; border: 1px solid #6b7280;
  border-radius: 6px; background: #ffffff; color: var(--text); }
.search p { margin: 0; font-size: 0.9rem; }
[hidden] { display: none !important; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 8px 0 4px; }
.facts dt { color: var(--muted); font-weight: 600; }
.facts dd { margin: 0; }
.facts .badge { white-space: normal; }
.summary { display: flex; flex-wrap: wrap; gap: 10px 40px; margin: 14px 0 0; }
.summary dt { color: var(--muted); font-size: 0.78rem; font-weight: 600; text-transform: uppercase;
  letter-spacing: 0.05em; }
.summary dd { margin: 2px 0 0; font-weight: 600; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
.kv dt { color: var(--muted); }
.kv dd { margin: 0; }
.toc ul { list-style: none; padding: 0; margin: 16px 0 0; display: flex; flex-wrap: wrap; gap: 8px; }
.toc a { display: inline-block; padding: 4px 12px; border: 1px solid var(--line); border-radius: 999px;
  background: var(--panel); text-decoration: none; font-size: 0.9rem; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px;
  margin: 18px 0; box-shadow: 0 1px 2px rgba(15, 23, 42, 0.05); }
.card > p { margin: 0 0 8px; color: #374151; }
.card-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 4px 32px; }
.block { min-width: 0; }
.block.wide { grid-column: 1 / -1; }
.compact { width: 100%; }
.compact th, .compact td { padding: 5px 10px; }
.digest { word-break: break-all; font-size: 0.8rem; }
pre { background: #f8fafc; border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow-x: auto;
  margin: 0; }
.chart { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 16px; }
.chart svg { display: block; width: 100%; height: auto; }
.chart figcaption { color: var(--muted); font-size: 0.9rem; }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 0; margin: 6px 0; }
.legend li { display: flex; align-items: center; gap: 6px; color: var(--text); font-weight: 600; }
.timeline { list-style: none; margin: 0; padding: 0 0 0 22px; border-left: 3px solid var(--line); }
.event { position: relative; margin: 0 0 16px; padding: 0 0 0 8px; }
.event::before { content: ""; position: absolute; left: -32px; top: 4px; width: 14px; height: 14px;
  border-radius: 50%; background: #94a3b8; border: 3px solid var(--bg); }
.event.to-production::before { background: #059669; }
.event.to-canary::before { background: #d97706; }
.event.to-staging::before { background: #2563eb; }
.event.to-deprecated::before { background: #e11d48; }
.event.to-archived::before { background: #4b5563; }
.event p { margin: 0; }
.event .when { color: var(--muted); font-size: 0.85rem; }
.event .why { color: #374151; font-style: italic; }
.event .who { color: var(--muted); font-size: 0.88rem; }
.audit td, .audit th { font-size: 0.9rem; }
.site-footer { border-top: 1px solid var(--line); color: var(--muted); font-size: 0.85rem; padding: 16px 0 32px; }
.site-footer code { word-break: break-all; }
"""

_JS = """\
// Filters the model table as you type; the page works the same without it.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var table = document.getElementById("models");
  if (!form || !table) { return; }
  var input = document.getElementById("q");
  var status = document.getElementById("search-status");
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  function apply() {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search") || "";
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    status.textContent = words.length ? shown + " of " + rows.length + " models match" : "";
  }
  form.hidden = false;
  form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });
  input.addEventListener("input", apply);
  var query = new URLSearchParams(window.location.search).get("q");
  if (query) { input.value = query; }
  apply();
})();
"""

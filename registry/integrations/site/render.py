"""Rendering: pure functions from the catalog (`Catalog`) to the text of every file of the site."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from registry.integrations.site.chart import chart
from registry.integrations.site.markup import (
    NONE,
    STAGE_ORDER,
    byte_size,
    esc,
    num,
    person,
    stage_badge,
    time_tag,
)
from registry.integrations.site.read import Catalog, ModelEntry, SignatureStatus, VersionEntry
from registry.queries.audit import AuditEntry
from registry.version import __version__

GENERATOR = f"registry site {__version__}"
STYLESHEET = "style.css"
SCRIPT = "search.js"
_CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'")


@cache
def asset(name: str) -> str:
    """A file of assets/ (package data), exactly as stored."""
    return resources.files("registry.integrations.site").joinpath("assets").joinpath(name).read_bytes().decode("utf-8")


def _signature_badge(status: SignatureStatus) -> str:
    label = {"absent": "unsigned", "present": "signed, unverified", "verified": "✓ verified",
             "invalid": "✗ invalid"}[status.state]
    return f'<span class="badge sig-{status.state}" title="{esc(status.detail)}">{esc(label)}</span>'


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
        f'<li><a href="{esc(href)}">{esc(text)}</a></li>' if href else f'<li aria-current="page">{esc(text)}</li>'
        for text, href in crumbs
    )
    # Every value is text already made safe for HTML; the template itself holds no registry data.
    return Template(asset("page.html")).substitute(
        csp=esc(_CSP), generator=esc(GENERATOR), title=esc(title), up=up, stylesheet=STYLESHEET,
        extra_head=extra_head, commit=esc(catalog.commit), short_commit=esc(catalog.commit[:12]),
        date_tag=time_tag(catalog.date), trail=trail, body=body, date=esc(catalog.date),
    )


def render(catalog: Catalog) -> dict[str, str]:
    """Every file of the site: relative path → text."""
    files = {STYLESHEET: asset(STYLESHEET), SCRIPT: asset(SCRIPT), "index.html": _index(catalog)}
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
        badges = " ".join(stage_badge(stage, label) for stage, label in _held(model)) or \
            NONE
        tags = " ".join(f'<span class="tag">{esc(k)}={esc(v)}</span>' for k, v in sorted(info.tags.items()))
        rows.append(
            f'<tr data-search="{esc(search)}">'
            f'<th scope="row"><a href="models/{esc(model.name)}.html">{esc(model.name)}</a>'
            + (f'<p class="desc">{esc(info.description)}</p>' if info.description else "")
            + (f'<p class="tags">{tags}</p>' if tags else "")
            + "</th>"
            f"<td>{esc(model.latest) if model.latest else NONE}</td>"
            f'<td class="badges">{badges}</td>'
            f"<td>{esc(info.task) if info.task else ''}</td>"
            f"<td>{esc(', '.join(info.owners))}</td>"
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
    facts = [("Owners", esc(", ".join(info.owners)) if info.owners else NONE)]
    if info.task:
        facts.append(("Task", esc(info.task)))
    facts.append(("Latest version", esc(model.latest) if model.latest else NONE))
    held = " ".join(stage_badge(stage, label) for stage, label in _held(model))
    facts.append(("Stages", held or '<span class="muted">no version staged</span>'))
    if info.tags:
        facts.append(("Tags", " ".join(f'<span class="tag">{esc(k)}={esc(v)}</span>'
                                       for k, v in sorted(info.tags.items()))))
    sections = [("versions", "Versions"), ("metrics", "Metrics"), ("history", "Stage history"),
                ("cards", "Model cards"), ("audit", "Audit trail")]
    toc = "".join(f'<li><a href="#{key}">{esc(text)}</a></li>' for key, text in sections)
    body = (
        f"<h1>{esc(info.name)}</h1>\n"
        + (f'<p class="lede">{esc(info.description)}</p>\n' if info.description else "")
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
    head = "".join(f'<th scope="col" class="num">{esc(m)}</th>' for m in metrics)
    rows = []
    for entry in reversed(model.versions):
        values = "".join(
            f'<td class="num">{esc(num(entry.card.metrics[m])) if m in entry.card.metrics else "–"}</td>'
            for m in metrics
        )
        rows.append(
            f'<tr><th scope="row"><a href="#v-{esc(entry.version)}">{esc(entry.version)}</a></th>'
            f"<td>{stage_badge(entry.stage)}</td><td>{esc(entry.card.data.get('created', ''))}</td>"
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
    facts = [("Stage", stage_badge(entry.stage, stage_note))]
    for key, label in (("created", "Created"), ("creator", "Creator"), ("framework", "Framework"),
                       ("task", "Task"), ("algorithm", "Algorithm"), ("entrypoint", "Entry point")):
        if key in data:
            facts.append((label, esc(data[key])))
    facts.append(("Signature", f"{_signature_badge(entry.signature)} "
                               f'<span class="sig-detail">{esc(entry.signature.detail)}</span>'))
    blocks = ['<div class="block"><h4>About</h4>\n<dl class="facts">'
              + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl></div>\n"]
    if card.metrics:
        rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td class="num">{esc(num(v))}</td></tr>'
                       for k, v in sorted(card.metrics.items()))
        blocks.append(f'<div class="block"><h4>Metrics</h4>\n<table class="compact"><thead><tr>'
                      f'<th scope="col">Metric</th><th scope="col" class="num">Value</th></tr></thead>'
                      f"<tbody>{rows}</tbody></table></div>\n")
    rows = "".join(
        f'<tr><th scope="row"><code>{esc(a.path)}</code></th><td class="num" title="{a.size} bytes">{esc(byte_size(a.size))}</td>'
        f'<td>{esc(a.storage)}</td><td><code class="digest">{esc(a.sha256)}</code></td></tr>'
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
            blocks.append(f'<div class="block"><h4>{label}</h4>\n<p class="prose">{esc(data[key])}</p></div>\n')
    more = [(k, v) for k, v in data.items() if k not in _SHOWN]
    if more:
        blocks.append('<div class="block wide"><h4>More from the card</h4>\n<dl class="facts">'
                      + "".join(f"<dt>{esc(_label(k))}</dt><dd>{_value(v)}</dd>" for k, v in more)
                      + "</dl></div>\n")
    return (
        f'<article class="card" id="{esc(anchor)}" aria-labelledby="{esc(anchor)}-h">\n'
        f'<h3 id="{esc(anchor)}-h">{esc(model.name)} {esc(entry.version)}</h3>\n'
        f'<p>{esc(data.get("description", ""))}</p>\n'
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
        rows.append(f'<tr><td>{kind}</td><th scope="row"><code>{esc(item.get("name", ""))}</code></th>'
                    f'<td>{esc(item.get("type", ""))}</td><td><code>{esc(shape_text)}</code></td>'
                    + (f'<td>{esc(item.get("description", ""))}</td>' if described else "") + "</tr>")
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
            return NONE
        return ('<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{_value(v)}</dd>"
                                           for k, v in value.items()) + "</dl>")
    if isinstance(value, list):
        if all(not isinstance(v, Mapping | list) for v in value):
            return esc(", ".join(num(v) for v in value))
        return f'<code class="json">{esc(json.dumps(value, default=str))}</code>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    return esc(num(value))


def _metrics_section(model: ModelEntry) -> str:
    names = _metric_names(model)
    body = chart(model, names) if names else '<p class="empty">No version records metrics.</p>\n'
    return (f'<section id="metrics" aria-labelledby="metrics-heading">\n<h2 id="metrics-heading">Metrics</h2>\n'
            f"{body}</section>\n")



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
    subject = (f'<a href="models/{esc(entry.model)}.html#v-{esc(entry.version)}">{esc(what)}</a>'
               if link else f'<a href="#v-{esc(entry.version)}">{esc(what)}</a>')
    if target is None:
        move = ""  # deleted or purged: the action says it
    elif entry.from_stage:
        move = f"{stage_badge(entry.from_stage)} → {stage_badge(target)}"
    else:
        move = stage_badge(target)
    people = f"by {person(entry.performed_by)}"
    if entry.approved_by:
        people += f", approved by {person(entry.approved_by)}"
    if entry.pr is not None:
        people += f" · PR #{entry.pr}"
    return (f'<li class="event to-{esc(target if target in STAGE_ORDER else "other")}">'
            f'<p class="when">{time_tag(entry.timestamp)}</p>'
            f'<p class="what"><strong>{esc(entry.action.capitalize())}</strong> {subject} {move}</p>'
            + (f'<p class="why">{esc(entry.reason)}</p>' if entry.reason else "")
            + f'<p class="who">{people}</p></li>')


def _commit_cell(entry: AuditEntry) -> str:
    code = f'<code title="{esc(entry.commit)}">{esc(entry.commit[:8])}</code>'
    url = entry.url or ""
    # A link out only to the registry's own GitHub commit page; the page itself needs nothing online.
    if url.startswith("https://github.com/"):
        return f'<a href="{esc(url)}" aria-label="commit {esc(entry.commit)} on GitHub">{code}</a>'
    return code


def _audit_section(model: ModelEntry) -> str:
    if not model.history:
        table = '<p class="empty">No recorded changes.</p>\n'
    else:
        rows = "\n".join(
            f"<tr><td>{time_tag(e.timestamp)}</td><td>{esc(e.action)}</td>"
            f'<th scope="row">{esc(e.version)}</th><td>{esc(e.from_stage or "")}</td><td>{esc(e.to_stage or "")}</td>'
            f"<td>{person(e.performed_by)}</td><td>{person(e.approved_by)}</td><td>{esc(e.reason or '')}</td>"
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



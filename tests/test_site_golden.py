"""The site's bytes are pinned: a fixed catalog renders exactly the pages under tests/data/site-golden.

The golden pages (and the asset digests below) were written by the site code before it was
split into read/render/write and assets (issue 12); any change to the output shows here as a
diff. To accept an intended change to a page, run this module with REGISTRY_UPDATE_GOLDEN=1
and review the diff of the files; to the stylesheet or script, update ASSET_SHA256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from registry.files import cards, stages
from registry.integrations.site.read import Catalog, ModelEntry, SignatureStatus, VersionEntry
from registry.integrations.site.render import render
from registry.integrations.site.write import write
from registry.queries.audit import AuditEntry
from registry.repo.registry import ModelInfo

GOLDEN = Path(__file__).parent / "data" / "site-golden"
# The stylesheet and script are package data copied out as they are; their bytes are pinned by digest
# (those of the strings build.py held before they became files) rather than stored a second time.
ASSET_SHA256 = {
    "style.css": "81c366006885f9d2f2b3a22f977399f05c2ea9de8f87d746f64a6d275cedbe12",
    "search.js": "2b8a351cb841e099fc4e36b69299b5a3df66167fb5f8b782ff3a4e3a888c5809",
}
SHA = "ab" * 32


def _card(name: str, version: str, metrics: dict[str, float], **extra: object) -> cards.Card:
    data = {
        "name": name, "version": version, "description": f"{name} <b>{version}</b> & more",
        "created": "2026-01-02", "creator": "Dana <dana@example.com>", "framework": "sklearn",
        "metrics": metrics,
        "artifacts": [{"path": "model.safetensors", "size": 123456789, "sha256": SHA, "storage": "dvc"},
                      {"path": "predict.py", "size": 512, "sha256": "cd" * 32, "storage": "git"}],
        **extra,
    }
    return cards.Card.from_data(data)


def _entry(when: str, action: str, model: str, version: str, src: str | None, dst: str | None, *,
           approved_by: str | None = None, reason: str | None = None, pr: int | None = None,
           url: str | None = None) -> AuditEntry:
    return AuditEntry(timestamp=when, action=action, model=model, version=version, from_stage=src,
                      to_stage=dst, performed_by="Dana Scientist <dana@example.com>", approved_by=approved_by,
                      reason=reason, commit="1234567890abcdef" * 2 + "12345678", pr=pr, url=url)


def fixed_catalog() -> Catalog:
    held = stages.Stages(production="1.1.0", canary=stages.Canary("2.0.0-rc.1", 0.25), staging=("1.2.0",),
                         deprecated={"1.0.0": stages.Deprecation("2027-01-01", "old")}, archived=("0.9.0",))
    versions = (
        VersionEntry(_card("fraud", "0.9.0", {"auc": 0.8}), "archived",
                           SignatureStatus("absent", "not signed")),
        VersionEntry(_card("fraud", "1.0.0", {"auc": 0.85, "f1": 0.7}), "deprecated",
                           SignatureStatus("invalid", "file changed since signing: <x>"), sunset="2027-01-01"),
        VersionEntry(_card("fraud", "1.1.0", {"auc": 0.91234567, "f1": 0.75, "latency_ms": float("nan")},
                                 intended_use="Scoring\nonline", limitations="none known",
                                 training={"data": "s3://x", "rows": 1000, "nested": {"a": [1, 2]}},
                                 hyperparameters={"C": 1.0, "flags": [True, {"x": 1}], "empty": {}},
                                 signature={"inputs": [{"name": "x", "type": "float32", "shape": [None, 64],
                                                        "description": "pixels"}],
                                            "outputs": [{"name": "y", "type": "int64", "shape": [None]}]},
                                 custom_field="<script>alert(1)</script>", tags={"team": "risk"}),
                           "production", SignatureStatus("verified", "verified with trusted key abcdef")),
        VersionEntry(_card("fraud", "1.2.0", {"auc": 0.93}), "staging",
                           SignatureStatus("present", "signed; not verified here: no keys")),
        VersionEntry(_card("fraud", "2.0.0-rc.1", {"auc": 0.95, "f1": 0.8}), "canary",
                           SignatureStatus("verified", "verified with trusted key abcdef"), traffic=0.25),
    )
    history = (
        _entry("2026-01-02T10:00:00+00:00", "register", "fraud", "1.0.0", None, "development"),
        _entry("2026-01-03T10:00:00+00:00", "promote", "fraud", "1.1.0", "staging", "production",
               approved_by="Rita <rita@example.com>, Bob <bob@example.com>", reason="better <auc>", pr=7,
               url="https://github.com/acme/registry/commit/" + "12" * 20),
        _entry("2026-01-04T10:00:00+00:00", "delete", "fraud", "0.8.0", "development", None,
               url="https://evil.example/x"),
    )
    fraud = ModelEntry(ModelInfo("fraud", "Fraud <detection>", ("Dana", "Rita"), "classification",
                                       {"team": "risk", "tier": 1}), held, versions, history)
    empty = ModelEntry(ModelInfo("empty-model", "", (), None, {}), stages.Stages(), (), ())
    flat = ModelEntry(ModelInfo("flat", "one metric, equal values", ("Ops",), None, {}), stages.Stages(),
                            (VersionEntry(_card("flat", "1.0.0", {"loss": 2.0}), "development",
                                                SignatureStatus("absent", "not signed")),
                             VersionEntry(_card("flat", "1.0.1", {"loss": 2.0}), "development",
                                                SignatureStatus("absent", "not signed"))), ())
    return Catalog("f" * 40, "2026-01-05T12:00:00+00:00", "HEAD", (empty, flat, fraud), 2)


def _golden() -> dict[str, bytes]:
    return {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items() if rel in ASSET_SHA256}


def test_render_is_byte_identical_to_the_golden_files() -> None:
    files = {rel: text.encode() for rel, text in render(fixed_catalog()).items()}
    if os.environ.get("REGISTRY_UPDATE_GOLDEN"):
        for rel, data in files.items():
            if rel in ASSET_SHA256:
                continue
            path = GOLDEN / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    assert _digests(files) == ASSET_SHA256
    assert {rel: data for rel, data in files.items() if rel not in ASSET_SHA256} == _golden()


def test_write_puts_the_golden_bytes_on_disk(tmp_path: Path) -> None:
    out = tmp_path / "site"
    write(render(fixed_catalog()), out)
    written = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert _digests(written) == ASSET_SHA256
    assert {rel: data for rel, data in written.items() if rel not in ASSET_SHA256} == _golden()

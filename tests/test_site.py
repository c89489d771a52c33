"""`registry site`: the static catalog, built from a real registry and read back as HTML.

One registry (module-scoped: building it registers seven versions) holds what the
catalog has to show: promotions through every stage, a merged pull request, a
signature that verifies, one by an untrusted key, one over a file changed after
signing, an unsigned version, and a model whose card and history carry HTML and
script payloads. Pages are parsed with html.parser into a strict tree (every end
tag must close the element it opened) and checked as a reader would see them; the
browser tests render them in headless Chromium.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from tests.conftest import REVIEWER, SCIENTIST, Result, as_user, git, isolate, snapshot

# Debian's chromium; GitHub's Ubuntu runners ship google-chrome, which takes the same flags.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome") or \
    ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")

SCRIPT_PAYLOAD = '<script>alert("card")</script>'
IMG_PAYLOAD = '"><img src=x onerror=alert(1)>'
REASON_PAYLOAD = "<script>alert('reason')</script>"

BASE_CARD = """\
description: Approves or declines credit applications.
framework: numpy
task: classification
creator: "@dana"
metrics: {metrics}
training: {{data: {{path: s3://data/credit.parquet, hash: abc123}}, samples: 1500}}
hyperparameters: {{steps: 300, learning_rate: 0.1}}
intended_use: Ranking credit applications for human review.
limitations: Trained on one country's applicants only.
"""

XSS_CARD = f"""\
description: '{SCRIPT_PAYLOAD}'
framework: numpy
task: classification
creator: '<svg onload=alert(3)>'
metrics: {{accuracy: 0.8}}
training: {{data: {{path: 'javascript:alert(4)'}}}}
hyperparameters: {{'<b>key</b>': '<i>value</i>'}}
intended_use: '</p><script>alert(2)</script>'
limitations: '{IMG_PAYLOAD}'
ethical_considerations: {{notes: '<style>body{{display:none}}</style>'}}
"""

CREDIT_METRICS = {
    "1.0.0": "{accuracy: 0.90, f1: 0.85}",
    "1.1.0": "{accuracy: 0.92, f1: 0.88}",
    "2.0.0": "{accuracy: 0.95, f1: 0.90, auc: 0.97}",
    "2.1.0": "{accuracy: 0.94, f1: 0.91}",
}


@dataclass
class Built:
    root: Path
    commits: dict[str, str] = field(default_factory=dict)


def _commit_all(root: Path, message: str, *paths: str) -> str:
    git(root, "add", "--", *paths)
    git(root, "commit", "--quiet", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def catalog_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The registry every catalog test reads (read-only)."""
    from safetensors.numpy import save_file

    import registry
    from registry import api
    from registry.signing.bundle import sign_folder
    from registry.signing.keys import generate_keypair, read_private_key

    base = tmp_path_factory.mktemp("site-registry")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, base / "home")
        api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
        reg = registry.open(base / "reg")
        root = reg.root
        built = Built(root)
        inputs = base / "inputs"
        inputs.mkdir()
        rng = np.random.default_rng(0)

        def register(name: str, version: str, card: str, branch: bool = False) -> None:
            folder = inputs / f"{name}-{version}"
            folder.mkdir()
            save_file({"weight": rng.random((8, 2), dtype=np.float32)}, str(folder / "model.safetensors"))
            (folder / "config.json").write_text('{"threshold": 0.5}\n')
            (folder / "card.yaml").write_text(card)
            reg.register(name, version, folder / "card.yaml",
                         [folder / "model.safetensors", folder / "config.json"], no_branch=not branch)

        def promote(name: str, version: str, to: str, reason: str, **options: object) -> None:
            reg.promote(name, version, to, reason, no_branch=True, **options)

        trusted_key, trusted_pub = generate_keypair(base / "release")
        other_key, _ = generate_keypair(base / "intruder")

        register("credit-approval", "1.0.0", BASE_CARD.format(metrics=CREDIT_METRICS["1.0.0"]))
        built.commits["first"] = git(root, "rev-parse", "HEAD").strip()
        # 1.1.0 arrives by pull request: the audit trail names the reviewer and PR #7.
        register("credit-approval", "1.1.0", BASE_CARD.format(metrics=CREDIT_METRICS["1.1.0"]), branch=True)
        as_user(mp, REVIEWER)
        git(root, "switch", "--quiet", "main")
        git(root, "merge", "--quiet", "--no-ff", "register/credit-approval/1.1.0",
            "-m", "Merge pull request #7 from org/register/credit-approval/1.1.0")
        as_user(mp, SCIENTIST)
        (root / "keys").mkdir()
        shutil.copyfile(trusted_pub, root / "keys" / "release.pub")
        config_text = (root / "registry.yaml").read_text()
        assert "trusted_keys: []" in config_text
        (root / "registry.yaml").write_text(config_text.replace("trusted_keys: []", "trusted_keys:\n- keys/release.pub"))
        built.commits["unsigned"] = _commit_all(root, "Trust the release key", "keys/release.pub", "registry.yaml")

        def sign(version: str, key: Path) -> None:
            sign_folder(reg.version_dir("credit-approval", version), "credit-approval", version,
                        read_private_key(key))
            _commit_all(root, f"Sign credit-approval@{version}",
                        f"models/credit-approval/{version}/signature.json")

        sign("1.1.0", trusted_key)
        built.commits["signed"] = git(root, "rev-parse", "HEAD").strip()
        promote("credit-approval", "1.0.0", "staging", "offline eval ok")
        promote("credit-approval", "1.0.0", "production", "first release")
        promote("credit-approval", "1.1.0", "staging", "better f1")
        promote("credit-approval", "1.1.0", "production", "better accuracy on hold-out")
        register("credit-approval", "2.0.0", BASE_CARD.format(metrics=CREDIT_METRICS["2.0.0"]))
        sign("2.0.0", other_key)
        register("credit-approval", "2.1.0", BASE_CARD.format(metrics=CREDIT_METRICS["2.1.0"]))
        sign("2.1.0", trusted_key)
        # Changed after signing: the signature no longer covers this file's bytes.
        (reg.version_dir("credit-approval", "2.1.0") / "config.json").write_text('{"threshold": 0.9}\n')
        _commit_all(root, "Retune 2.1.0 after signing", "models/credit-approval/2.1.0/config.json")
        promote("credit-approval", "2.0.0", "staging", "candidate")
        promote("credit-approval", "2.0.0", "canary", "try on a fifth of traffic", traffic=0.2)

        register("churn-model", "0.1.0", XSS_CARD)
        model_yaml = root / "models" / "churn-model" / "model.yaml"
        model_yaml.write_text(
            f"description: '{SCRIPT_PAYLOAD} & friends'\nowners: ['@dana']\ntask: churn\n"
            f"tags: {{team: '<u>retention</u>', tier: 2}}\n")
        _commit_all(root, "Describe churn-model", "models/churn-model/model.yaml")
        promote("churn-model", "0.1.0", "staging", REASON_PAYLOAD)
        built.commits["head"] = git(root, "rev-parse", "HEAD").strip()
        # The only problem in the registry is the one made on purpose.
        assert [p.field for p in reg.validate()] == ["artifacts[1]"]
        yield built


# --- a strict little DOM ---------------------------------------------------------------

VOID = {"meta", "link", "input", "br", "img", "hr", "source", "wbr", "area", "base", "col", "embed", "track"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if all(node.attrs.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items()):
                found.append(node)
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs}"
        return found[0]

    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    @property
    def text(self) -> str:
        parts = []
        for child in self.children:
            parts.append(child if isinstance(child, str) else child.text)
        return " ".join(" ".join(parts).split())


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        assert len(dict(attrs)) == len(attrs), f"duplicate attribute on <{tag}>"
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert tag not in VOID, f"</{tag}> closes a void element"
        open_tag = self.stack.pop().tag
        assert open_tag == tag, f"</{tag}> closes <{open_tag}>"

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(path: Path) -> Node:
    builder = _Builder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    assert len(builder.stack) == 1, f"{path}: unclosed <{builder.stack[-1].tag}>"
    return builder.root


def build_site(cli: Callable[..., Result], root: Path, out: Path, *args: str) -> Result:
    result = cli("site", "--out", str(out), *args, cwd=root)
    assert result.code == 0, result.err
    return result


@pytest.fixture
def site(catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> Path:
    out = tmp_path / "site"
    build_site(cli, catalog_registry.root, out)
    return out


def model_page(site: Path, name: str) -> Node:
    return parse(site / "models" / f"{name}.html")


def card(page: Node, version: str) -> Node:
    return page.find("article", id=f"v-{version}")


# --- structure -----------------------------------------------------------------------------


def test_every_model_has_a_page_linked_from_the_index(site: Path, catalog_registry: Built) -> None:
    models = sorted(p.name for p in (catalog_registry.root / "models").iterdir() if p.is_dir())
    assert models == ["churn-model", "credit-approval"]
    assert sorted(p.stem for p in (site / "models").glob("*.html")) == models
    index = parse(site / "index.html")
    rows = index.find("table", id="models").find("tbody").find_all("tr")
    assert [r.find("th").find("a").attrs["href"] for r in rows] == [f"models/{m}.html" for m in models]
    credit = rows[1]
    assert credit.find_all("td")[0].text == "2.1.0"  # latest version
    assert [b.text for b in credit.find_all("span") if "badge" in b.classes()] == \
        ["production 1.1.0", "canary 2.0.0 (20%)", "deprecated 1.0.0"]
    assert "1 in production" in index.find("caption").text


def test_pages_are_accessible_html(site: Path) -> None:
    for path in [site / "index.html", *sorted((site / "models").glob("*.html"))]:
        page = parse(path)
        html = page.find("html")
        assert html.attrs["lang"] == "en"
        assert page.find("title").text
        body = page.find("body")
        skip = next(c for c in body.children if isinstance(c, Node))
        assert skip.tag == "a" and skip.attrs["href"] == "#main" and "Skip" in skip.text
        assert page.find("main").attrs["id"] == "main"
        assert page.find_all("header") and page.find_all("footer")
        assert all(n.attrs.get("aria-label") for n in page.find_all("nav")), "every nav is named"
        headings = [n.tag for n in page.iter() if re.fullmatch(r"h[1-6]", n.tag)]
        assert headings.count("h1") == 1 and headings[0] == "h1"
        for table in page.find_all("table"):
            for th in table.find("thead").find_all("th"):
                assert th.attrs.get("scope") == "col", path
            for th in table.find("tbody").find_all("th"):
                assert th.attrs.get("scope") == "row", path
        for svg in page.find_all("svg"):
            labelled = svg.attrs.get("role") == "img" and svg.attrs.get("aria-labelledby")
            assert labelled or svg.attrs.get("aria-hidden") == "true", path
        for label in page.find_all("label"):
            assert page.find_all(id=label.attrs["for"] or "")


def test_every_link_resolves_and_nothing_is_external(site: Path) -> None:
    pages = [site / "index.html", *sorted((site / "models").glob("*.html"))]
    ids = {p.resolve(): {n.attrs["id"] for n in parse(p).iter() if n.attrs.get("id")} for p in pages}
    checked = 0
    for path in pages:
        page = parse(path)
        for node in page.iter():
            for attr in ("href", "src", "action"):
                value = node.attrs.get(attr)
                if value is None:
                    continue
                url = urlsplit(value)
                assert not url.scheme and not url.netloc, f"{path.name}: external {attr}={value}"
                target = (path.parent / unquote(url.path)).resolve() if url.path else path.resolve()
                assert target.is_file(), f"{path.name}: {value} does not resolve"
                if url.fragment:
                    assert unquote(url.fragment) in ids[target], f"{path.name}: {value}: no such id"
                checked += 1
    assert checked > 40
    for path in site.rglob("*"):
        if path.is_file():
            assert "http://" not in path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
            assert "https://" not in path.read_text()


def test_model_page_shows_cards_stages_and_history(site: Path, catalog_registry: Built) -> None:
    import registry

    page = model_page(site, "credit-approval")
    assert page.find("h1").text == "credit-approval"
    versions = page.find("table", **{"class": "versions"}).find("tbody").find_all("tr")
    assert [r.find("th").text for r in versions] == ["2.1.0", "2.0.0", "1.1.0", "1.0.0"]
    assert [r.find_all("td")[0].text for r in versions] == ["development", "canary", "production", "deprecated"]

    reg = registry.open(catalog_registry.root)
    v110 = card(page, "1.1.0")
    text = v110.text
    for artifact in reg.card("credit-approval", "1.1.0").artifacts:
        assert artifact.sha256 in text and artifact.path in text
        row = next(r for r in v110.find_all("tr") if r.find_all("th") and r.find("th").text == artifact.path)
        assert row.find("td").attrs["title"] == f"{artifact.size} bytes"
    assert "s3://data/credit.parquet" in text and "1500" in text  # training
    assert "learning_rate" in text  # hyperparameters
    assert "Ranking credit applications for human review." in text  # intended use
    assert "Trained on one country's applicants only." in text  # limitations
    assert "accuracy" in text and "0.92" in text
    deprecated = card(page, "1.0.0").text
    assert "deprecated, sunset" in deprecated

    log = reg.log("credit-approval")
    events = page.find("section", id="history").find_all("li")
    assert len(events) == len(log)
    assert "Promoted 2.0.0 staging → canary" in events[-1].text
    audit_rows = page.find("section", id="audit").find("tbody").find_all("tr")
    assert len(audit_rows) == len(log)
    merged = [r.text for r in audit_rows if "#7" in r.text]
    assert merged and "Rita Reviewer" in merged[0] and "registered" in merged[0]
    assert [r.find("code").attrs["title"] for r in audit_rows] == [e.commit for e in log]


def test_metrics_chart_has_one_line_per_metric_with_a_point_per_version(site: Path) -> None:
    page = model_page(site, "credit-approval")
    svg = page.find("section", id="metrics").find("svg")
    assert "credit-approval" in svg.find("title").text
    assert "one line per metric" in svg.find("desc").text
    labelled = svg.attrs["aria-labelledby"] or ""
    assert labelled.split() == [svg.find("title").attrs["id"], svg.find("desc").attrs["id"]]
    texts = [t.text for t in svg.find_all("text")]
    assert {"Version", "Metric value"} <= set(texts)
    assert [t for t in texts if t in CREDIT_METRICS] == list(CREDIT_METRICS)  # x axis, oldest first
    ticks = [float(t.text) for t in svg.find_all("text", text_anchor="end")]
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(ticks) >= 3 and len(steps) == 1, ticks  # evenly spaced, labelled exactly
    assert ticks[0] <= 0.85 and ticks[-1] >= 0.97
    lines = {p.attrs["data-metric"] or "": p.attrs["points"] or "" for p in svg.find_all("polyline")}
    assert sorted(lines) == ["accuracy", "auc", "f1"]
    points = {m: [tuple(map(float, xy.split(","))) for xy in pts.split()] for m, pts in lines.items()}
    assert len(points["accuracy"]) == len(points["f1"]) == 4
    assert len(points["auc"]) == 1  # only 2.0.0 records auc
    # Accuracy 0.90, 0.92, 0.95, 0.94: higher values sit higher (smaller y), left to right.
    xs = [x for x, _ in points["accuracy"]]
    ys = [y for _, y in points["accuracy"]]
    assert xs == sorted(xs)
    assert ys[0] > ys[1] > ys[2] < ys[3]
    colours = {p.attrs["stroke"] for p in svg.find_all("polyline")}
    assert len(colours) == 3
    legend = page.find("ul", **{"class": "legend"})
    assert [li.text for li in legend.find_all("li")] == ["accuracy", "auc", "f1"]


def test_signature_status_per_version(site: Path) -> None:
    page = model_page(site, "credit-approval")

    def status(version: str) -> str:
        about = card(page, version).find("dl")
        return about.text.split("Signature", 1)[1]

    assert "unsigned" in status("1.0.0")
    assert "✓ verified" in status("1.1.0") and "trusted key" in status("1.1.0")
    assert "✗ invalid" in status("2.0.0") and "unknown key" in status("2.0.0")
    assert "✗ invalid" in status("2.1.0") and "config.json" in status("2.1.0") and "changed" in status("2.1.0")


def test_signature_is_present_but_unverified_without_trusted_keys(
        catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    # At this commit 1.1.0 is signed and registry.yaml already trusts the key...
    out = tmp_path / "signed"
    build_site(cli, catalog_registry.root, out, "--at", catalog_registry.commits["signed"])
    assert "✓ verified" in card(model_page(out, "credit-approval"), "1.1.0").text
    # ...and a registry that trusts no key can only say a signature is there.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(catalog_registry.root), str(clone))
    text = (clone / "registry.yaml").read_text().replace("trusted_keys:\n- keys/release.pub", "trusted_keys: []")
    (clone / "registry.yaml").write_text(text)
    git(clone, "commit", "--quiet", "-am", "Trust nobody")
    out = tmp_path / "untrusted"
    build_site(cli, clone, out)
    about = card(model_page(out, "credit-approval"), "1.1.0").text
    assert "signed, unverified" in about and "lists no trusted_keys" in about


def test_a_signed_artifact_without_its_committed_pointer_is_missing(
        catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    # A DVC-tracked artifact counts at its card's digest only while its pointer is committed: the
    # rule `show` uses (signing.verify). The site used to count every artifact the card lists as
    # dvc, so a version whose weights were gone from the commit still showed "verified".
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(catalog_registry.root), str(clone))
    git(clone, "rm", "--quiet", "models/credit-approval/1.1.0/model.safetensors.dvc")
    git(clone, "commit", "--quiet", "-m", "Drop the weights' pointer")
    out = tmp_path / "site"
    build_site(cli, clone, out)
    about = card(model_page(out, "credit-approval"), "1.1.0").text
    assert "✗ invalid" in about and "signed but missing: model.safetensors" in about
    shown = cli("show", "credit-approval@1.1.0", "--json", cwd=clone)
    assert "signed but missing: model.safetensors" in shown.out, shown.err


def test_card_and_history_payloads_are_escaped(site: Path) -> None:
    for path in [site / "index.html", site / "models" / "churn-model.html"]:
        page = parse(path)
        scripts = page.find_all("script")
        assert [s.attrs.get("src") for s in scripts] == (["search.js"] if path.name == "index.html" else [])
        assert not page.find_all("img") and not page.find_all("style") and not page.find_all("u")
        assert not page.find_all("b") and not page.find_all("i")
        for node in page.iter():
            assert not any(a.startswith("on") for a in node.attrs), f"{path.name}: <{node.tag} {node.attrs}>"
            assert not (node.attrs.get("href") or "").startswith("javascript:")
        assert [n.tag for n in page.find_all("svg") if n.attrs.get("onload") is not None] == []
    churn = model_page(site, "churn-model")
    text = churn.text
    assert f"{SCRIPT_PAYLOAD} & friends" in churn.find("p", **{"class": "lede"}).text
    for payload in (SCRIPT_PAYLOAD, IMG_PAYLOAD, "</p><script>alert(2)</script>", "<svg onload=alert(3)>",
                    "javascript:alert(4)", "<b>key</b>", "<i>value</i>", "<style>body{display:none}</style>",
                    REASON_PAYLOAD, "team=<u>retention</u>"):
        assert payload in text, payload
    raw = (site / "models" / "churn-model.html").read_text()
    assert "<script>" not in raw and "&lt;script&gt;alert(&quot;card&quot;)&lt;/script&gt;" in raw
    index = parse(site / "index.html")
    row = index.find("table", id="models").find("tbody").find_all("tr")[0]
    assert SCRIPT_PAYLOAD in row.text and "team=<u>retention</u>" in row.text
    assert SCRIPT_PAYLOAD.lower() in (row.attrs["data-search"] or "")


def test_csp_forbids_inline_script(site: Path) -> None:
    for path in site.rglob("*.html"):
        meta = parse(path).find("meta", http_equiv="Content-Security-Policy")
        policy = meta.attrs["content"] or ""
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy


# --- determinism and what is read ---------------------------------------------------------


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_is_deterministic_and_rebuilds_in_place(
        site: Path, catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    first = files_of(site)
    # Built again without the parse cache: cached and freshly parsed cards render alike.
    cache = catalog_registry.root / ".git" / "registry" / "site-cache.json"
    assert cache.is_file()
    cache.unlink()
    assert set(first) == {"index.html", "style.css", "search.js", "models/churn-model.html",
                          "models/credit-approval.html"}
    build_site(cli, catalog_registry.root, site)  # over the earlier catalog
    assert files_of(site) == first
    other = tmp_path / "again"
    build_site(cli, catalog_registry.root, other, "--at", catalog_registry.commits["head"])
    assert files_of(other) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "site"], "no temporary folders left"
    head = catalog_registry.commits["head"]
    assert head in first["index.html"].decode()


def test_reads_the_committed_tree_not_the_work_tree(
        catalog_registry: Built, cli: Callable[..., Result], site: Path, tmp_path: Path) -> None:
    card_path = catalog_registry.root / "models" / "credit-approval" / "1.1.0" / "card.yaml"
    original = card_path.read_bytes()
    try:
        card_path.write_bytes(original.replace(b"Ranking credit", b"UNCOMMITTED EDIT"))
        out = tmp_path / "dirty"
        build_site(cli, catalog_registry.root, out)
    finally:
        card_path.write_bytes(original)
    assert files_of(out) == files_of(site)


def test_at_an_older_commit_shows_that_commit(
        catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "old"
    first = catalog_registry.commits["first"]
    result = build_site(cli, catalog_registry.root, out, "--at", first[:10])
    assert first[:8] in result.out
    assert sorted(p.name for p in (out / "models").iterdir()) == ["credit-approval.html"]
    page = model_page(out, "credit-approval")
    assert [r.find("th").text for r in page.find("table", **{"class": "versions"}).find("tbody").find_all("tr")] \
        == ["1.0.0"]
    assert first in page.find("footer").text
    index = parse(out / "index.html")
    assert "no version staged" not in index.text and "none" in index.find("tbody").text
    svg = page.find("svg", role="img")
    assert all(len((p.attrs["points"] or "").split()) == 1 for p in svg.find_all("polyline"))


def test_commits_link_to_github_when_origin_is_github(
        catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(catalog_registry.root), str(clone))
    git(clone, "remote", "set-url", "origin", "git@github.com:acme/models.git")
    out = tmp_path / "s"
    build_site(cli, clone, out)
    rows = model_page(out, "credit-approval").find("section", id="audit").find("tbody").find_all("tr")
    links = [r.find("code").attrs["title"] for r in rows]
    assert [r.find_all("a")[-1].attrs["href"] for r in rows] == \
        [f"https://github.com/acme/models/commit/{sha}" for sha in links]
    # Only those links leave the site.
    external = [n.attrs["href"] or "" for p in out.rglob("*.html") for n in parse(p).iter()
                if (n.attrs.get("href") or "").startswith("https://")]
    assert external and all(h.startswith("https://github.com/acme/models/commit/") for h in external)


def test_json_output(catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    import json

    result = cli("site", "--out", str(tmp_path / "s"), "--json", cwd=catalog_registry.root)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["registry_commit"] == catalog_registry.commits["head"]
    assert "models/credit-approval.html" in data["files"] and "index.html" in data["files"]


def test_empty_registry(registry_dir: Path, cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "empty-site"
    build_site(cli, registry_dir, out)
    index = parse(out / "index.html")
    assert "No models registered" in index.find("main").text
    assert not (out / "models").exists()


# --- bad input: one message, exit code, nothing changed --------------------------------------


def test_unknown_ref_is_refused(catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = cli("site", "--out", str(out), "--at", "no-such-branch", cwd=catalog_registry.root)
    assert result.code == 2
    assert "--at no-such-branch: no such commit, branch or tag" in result.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_overwritten(catalog_registry: Built, cli: Callable[..., Result],
                                            tmp_path: Path) -> None:
    out = tmp_path / "docs"
    out.mkdir()
    (out / "index.html").write_text("<p>my own page</p>\n")
    (out / "notes.txt").write_text("keep me\n")
    before = snapshot(tmp_path)
    result = cli("site", "--out", str(out), cwd=catalog_registry.root)
    assert result.code == 2
    assert "is not empty and holds no catalog made by `registry site`" in result.err
    assert snapshot(tmp_path) == before


def test_out_is_a_file(catalog_registry: Built, cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "site.html"
    out.write_text("x")
    result = cli("site", "--out", str(out), cwd=catalog_registry.root)
    assert result.code == 2 and "is a file; give a folder" in result.err
    assert out.read_text() == "x"


def test_outside_a_registry(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("site", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert result.code == 1 and "not a registry" in result.err
    assert not (tmp_path / "s").exists()


def test_invalid_card_in_the_tree_names_the_file(catalog_registry: Built, cli: Callable[..., Result],
                                                  tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(catalog_registry.root), str(clone))
    path = clone / "models" / "credit-approval" / "1.0.0" / "card.yaml"
    path.write_text(path.read_text().replace("framework: numpy", "framework: 42"))
    git(clone, "commit", "--quiet", "-am", "break a card")
    out = tmp_path / "s"
    result = cli("site", "--out", str(out), cwd=clone)
    assert result.code == 1
    assert "models/credit-approval/1.0.0/card.yaml" in result.err and "framework" in result.err
    assert not out.exists()


# --- in a real browser ------------------------------------------------------------------------


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={profile}", *args, url],
        capture_output=True, text=True, timeout=120, check=False,
    )


def png_rows(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the (filtered) scanlines of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0
    channels = {2: 3, 6: 4, 0: 1, 4: 2}[colour]
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    assert len(raw) == stride * height
    return width, height, [raw[i * stride:(i + 1) * stride] for i in range(height)]


@needs_chromium
@pytest.mark.parametrize("page", ["index.html", "models/credit-approval.html"])
def test_renders_in_headless_chromium(site: Path, tmp_path: Path, page: str) -> None:
    shot = tmp_path / "shot.png"
    proc = chromium(tmp_path, (site / page).as_uri(), f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.is_file(), proc.stderr[-2000:]
    width, height, rows = png_rows(shot)
    assert (width, height) == (1280, 900)
    # A blank page filters to a handful of identical scanlines; a rendered one to hundreds.
    assert len(set(rows)) > 100
    assert shot.stat().st_size > 20_000


@needs_chromium
def test_search_filters_rows_in_the_browser(site: Path, tmp_path: Path) -> None:
    proc = chromium(tmp_path, (site / "index.html").as_uri() + "?q=canary", "--dump-dom")
    dom = proc.stdout
    assert '<form id="search"' in dom, proc.stderr[-2000:]
    form = re.search(r'<form id="search"[^>]*>', dom)
    assert form and "hidden" not in form.group(0), "the script shows the search box"
    rows = re.findall(r'<tr data-search="[^"]*"( hidden="")?>\s*<th scope="row"><a href="models/([a-z-]+)\.html"', dom)
    assert rows == [(" hidden=\"\"", "churn-model"), ("", "credit-approval")]
    assert "1 of 2 models match" in dom


@needs_chromium
def test_inline_script_would_not_run(site: Path, tmp_path: Path) -> None:
    # Defence in depth: even an unescaped inline script is blocked by the page's policy.
    page = site / "models" / "churn-model.html"
    text = page.read_text().replace("</main>", "<script>document.title='pwned'</script></main>")
    page.write_text(text)
    dom = chromium(tmp_path, page.as_uri(), "--dump-dom").stdout
    assert "<title>churn-model · Model catalog</title>" in dom

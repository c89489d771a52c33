"""Reading one registry commit into the site's frozen values (`Catalog`): no work tree, no DVC.

Everything comes from the committed tree at ``--at`` (one ``git ls-tree`` and one
``git cat-file --batch``), so the catalog shows what is on main and nothing half-edited.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registry.errors import RegistryError, UsageError, ValidationError
from registry.files import cards, config, schemas, stages
from registry.files.names import MODEL_NAME_RE, Version
from registry.queries import audit
from registry.queries.audit import AuditEntry
from registry.repo import git
from registry.repo.blobcache import BlobCache
from registry.repo.registry import (
    MODEL_FILE,
    MODELS_DIR,
    ModelInfo,
    Registry,
    parse_model_info,
    version_sort_key,
)
from registry.signing.bundle import Bundle
from registry.signing.keys import keys_in_commit
from registry.signing.manifest import (
    SIGNATURE_FILE,
    Manifest,
    Resource,
    SignatureError,
    is_signed_file,
)
from registry.signing.verify import verify_at_card_digests

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


# --- reading one commit's tree -----------------------------------------------------


def read_catalog(reg: Registry, at: str = "HEAD") -> Catalog:
    commit = git.rev_parse(at, reg.root)
    if commit is None:
        raise UsageError(f"--at {at}: no such commit, branch or tag in this registry")
    date = git.commit_date(reg.root, commit)
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
            info = parse_model_info(name, blobs.get(tree[MODEL_FILE].sha) or b"",
                                    f"{MODELS_DIR}/{name}/{MODEL_FILE}")
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


def _trusted_keys(cat: git.CatFile, commit: str, paths: Sequence[str]) -> tuple[list[Any], str | None]:
    """The public keys registry.yaml trusts, read from the same commit; and why none, if none."""
    if not paths:
        return [], "registry.yaml lists no trusted_keys"
    keys, problems = keys_in_commit(paths, lambda path: cat.read(f"{commit}:{path}"), "this commit")
    return keys, ("; ".join(problems) or None)


def _signature(cat: git.CatFile, name: str, card: cards.Card, folder: Mapping[str, git.TreeEntry],
               blobs: Mapping[str, bytes | None], keys: Sequence[Any], key_problem: str | None) -> SignatureStatus:
    """Verify signature.json against the committed files, without fetching anything from DVC.

    Files in git are hashed from their blobs. A DVC-tracked artifact (its pointer committed,
    the file not) is taken at the sha256 its card records, by the rule `show` uses: the card
    itself is a signed file, so a signature only verifies if the signed digests are the ones
    the card states.
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
        absent = sorted(p.removesuffix(".dvc") for p in folder
                        if p.endswith(".dvc") and p.removesuffix(".dvc") not in folder)
        present = Manifest(name, card.version, tuple(resources))
        verified, _ = verify_at_card_digests(keys, bundle, source, present, card, absent)
    except RegistryError as exc:
        return SignatureStatus("invalid", str(exc))
    return SignatureStatus("verified", f"verified with trusted key {verified.key_id[:16]}")

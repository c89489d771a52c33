"""`registry record-approvals`: store each merged pull request's reviews as a git note.

The main-branch workflow runs this after a merge. For each pull request it asks the
forge's REST API (GitHub: `/repos/{owner}/{repo}/pulls/{n}` and `.../pulls/{n}/reviews`)
who wrote it, who merged it and who approved it, and writes one small JSON note on the
merge (or squash) commit under refs/notes/registry/approvals, then pushes that ref.
`registry log` and `registry verify-history` read approvers only from these notes (or,
without one, from who merged): nothing a pull request's author writes names an approver.

A note is written only for a commit the forge says that pull request merged
(`merge_commit_sha`), and only on main's first-parent history.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.queries import audit
from registry.repo import git
from registry.repo.registry import Registry

DEFAULT_API = "https://api.github.com"
PAGE = 100
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+")
_PR_RANGE = re.compile(r"[^\s.]+\.\.[^\s.]+")
BOT = ("registry record-approvals", "registry-bot@users.noreply.github.com")


class ForgeError(RegistryError):
    """The forge's API refused or could not be reached."""


@dataclass(frozen=True)
class Recorded:
    pr: int
    commit: str
    note: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"pr": self.pr, "commit": self.commit, **{k: v for k, v in self.note.items() if k != "pr"}}


class GitHub:
    """The two REST endpoints the recorder reads, with a token from the environment."""

    def __init__(self, api_url: str, slug: str, token: str | None) -> None:
        if not _SLUG.fullmatch(slug):
            raise UsageError(f"--repo {slug!r}: use OWNER/NAME")
        if not api_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise UsageError(f"--api-url {api_url!r}: use an https:// URL")
        self.base = f"{api_url.rstrip('/')}/repos/{slug}"
        self.token = token

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path, headers={
            "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "registry-record-approvals",
            **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
        })
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            hint = {401: "; is GITHUB_TOKEN set?", 403: "; the token lacks pull-requests: read",
                    404: "; no such pull request in this repository"}.get(exc.code, "")
            raise ForgeError(f"GET {self.base}{path}: HTTP {exc.code}{hint}") from None
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            raise ForgeError(f"GET {self.base}{path}: {getattr(exc, 'reason', exc)}") from None

    def pull(self, number: int) -> dict[str, Any]:
        data = self.get(f"/pulls/{number}")
        if not isinstance(data, dict):
            raise ForgeError(f"GET {self.base}/pulls/{number}: not a pull request")
        return data

    def reviews(self, number: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(1, 101):
            batch = self.get(f"/pulls/{number}/reviews?per_page={PAGE}&page={page}")
            if not isinstance(batch, list):
                raise ForgeError(f"GET {self.base}/pulls/{number}/reviews: not a list of reviews")
            found += [r for r in batch if isinstance(r, dict)]
            if len(batch) < PAGE:
                break
        return found


def _login(obj: object) -> str | None:
    login = obj.get("login") if isinstance(obj, dict) else None
    return login if isinstance(login, str) else None


def approvers(reviews: list[dict[str, Any]]) -> list[str]:
    """Who approved, as GitHub counts it: a reviewer's latest approve/request-changes/dismissal wins."""
    latest: dict[str, str] = {}
    order: list[str] = []
    for review in reviews:
        login, state = _login(review.get("user")), review.get("state")
        if login is None or state not in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            continue
        latest[login] = state
        if login not in order:
            order.append(login)
    return [login for login in order if latest[login] == "APPROVED"]


def note_for(number: int, pull: dict[str, Any], reviews: list[dict[str, Any]]) -> dict[str, Any]:
    head = pull.get("head")
    return {
        "pr": number,
        "author": _login(pull.get("user")),
        "merged_by": _login(pull.get("merged_by")),
        "merged_at": pull.get("merged_at"),
        "head": head.get("sha") if isinstance(head, dict) else None,
        "approvers": approvers(reviews),
    }


def _first_parent(reg: Registry, ref: str) -> set[str]:
    return git.first_parent_commits(reg.root, ref)


def _prs_in_range(reg: Registry, span: str) -> list[tuple[int, str]]:
    if not _PR_RANGE.fullmatch(span):
        raise UsageError(f"--range {span!r}: use BEFORE..AFTER (two commits)")
    found = []
    for sha, message in git.first_parent_messages(reg.root, span):
        number = audit.pr_number(message)
        if number is not None:
            found.append((number, sha))
    return list(reversed(found))


def _identity(reg: Registry) -> list[str]:
    """-c options giving git an identity for the notes commit when none is configured (CI)."""
    if git.config_value(reg.root, "user", "email").strip():
        return []
    return ["-c", f"user.name={BOT[0]}", "-c", f"user.email={BOT[1]}"]


def record(reg: Registry, prs: tuple[int, ...] = (), span: str | None = None, *, api_url: str | None = None,
           slug: str | None = None, push: bool = False, remote: str = "origin",
           ref: str = "HEAD") -> list[Recorded]:
    if not reg.config.record_approvals:
        raise UsageError("registry.yaml does not opt in: set audit: {record_approvals: true} to record approvals")
    if not prs and span is None:
        raise UsageError("give --pr N (repeatable) or --range BEFORE..AFTER")
    slug = slug or os.environ.get("GITHUB_REPOSITORY") or audit.github_slug(reg)
    if not slug:
        raise UsageError("--repo OWNER/NAME: not a GitHub origin and GITHUB_REPOSITORY is not set")
    forge = GitHub(api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API, slug, os.environ.get("GITHUB_TOKEN"))
    mainline = _first_parent(reg, ref)
    expected: dict[int, str | None] = {n: None for n in prs}
    if span is not None:
        expected.update({n: sha for n, sha in _prs_in_range(reg, span)})
    if push:
        _fetch_notes(reg, remote)
    recorded = []
    for number, named_commit in expected.items():
        pull = forge.pull(number)
        commit = pull.get("merge_commit_sha")
        if not pull.get("merged") and not pull.get("merged_at"):
            raise ForgeError(f"pull request #{number} is not merged: nothing to record")
        if not isinstance(commit, str) or commit not in mainline:
            raise ForgeError(f"pull request #{number} merged {commit}, which is not on {ref}'s first-parent "
                             "history here (fetch it first)")
        if named_commit is not None and named_commit != commit:
            raise ForgeError(f"commit {named_commit[:12]} says it is pull request #{number}, but the forge says "
                             f"#{number} merged {commit[:12]}")
        note = note_for(number, pull, forge.reviews(number))
        text = json.dumps(note, sort_keys=True, separators=(",", ":")) + "\n"
        git.notes_add(reg.root, audit.APPROVALS_REF, commit, text, _identity(reg))
        recorded.append(Recorded(number, commit, note))
    if push and recorded:
        _push_notes(reg, remote)
    return recorded


_REMOTE_COPY = "refs/notes/registry/approvals-remote"


def _fetch_notes(reg: Registry, remote: str) -> None:
    """The remote's notes, merged into ours (ours win for a commit both annotate)."""
    if not git.fetch_ref(reg.root, remote, audit.APPROVALS_REF, _REMOTE_COPY):
        return  # the remote has no notes yet
    if git.rev_parse(audit.APPROVALS_REF, reg.root) is None:
        git.update_ref(reg.root, audit.APPROVALS_REF, _REMOTE_COPY)
    else:
        git.notes_merge_ours(reg.root, audit.APPROVALS_REF, _REMOTE_COPY, _identity(reg))


def _push_notes(reg: Registry, remote: str) -> None:
    for _ in range(3):
        if git.push_ref(reg.root, remote, audit.APPROVALS_REF):
            return
        _fetch_notes(reg, remote)  # someone pushed notes meanwhile: merge theirs and try again
    raise RegistryError(f"could not push {audit.APPROVALS_REF} to {remote}; run again")

"""The REST API's write side: who may propose a stage change, and proposing it.

A proposal is exactly what `registry promote --push` makes (a branch
`promote/NAME/VERSION-to-STAGE` with one commit editing stages.yaml), made in a
private work clone of the served registry and pushed to it; the commit's author is
the token's user. Nothing is ever pushed to --ref: merging the branch (after review)
is the promotion. A GitHub pull request is opened only when GITHUB_TOKEN and
GITHUB_REPOSITORY are set.

Who may propose what (roles from registry.yaml, owners from the model's model.yaml,
matched on the user's handle, ``@user``; team handles cannot be resolved here and
match nobody):

- ``admin``: any stage change of any model;
- an owner of the model: any stage change of that model;
- ``data-scientist``: staging and canary;
- anyone else (developer, viewer, no role): nothing.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from registry.changes import promote
from registry.changes.promote import Promoted
from registry.errors import GitError, RegistryError, UsageError, ValidationError
from registry.files.config import RegistryConfig
from registry.repo import git
from registry.repo.registry import Registry

TOKENS_ENV = "REGISTRY_API_TOKENS"
EMAIL_DOMAIN_ENV = "REGISTRY_API_EMAIL_DOMAIN"
DEFAULT_EMAIL_DOMAIN = "users.noreply.github.com"
BASE_REF = "refs/registry-api/base"
# GitHub's user name rules: what goes into a commit's author and an e-mail address.
_USER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
ANY_STAGE = ("development", "staging", "canary", "production", "deprecated", "archived")
PROPOSALS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "admin": ANY_STAGE,
    "data-scientist": ("staging", "canary"),
}


class NotFound(RegistryError):
    """The model or version named in the URL does not exist at --ref."""


class Forbidden(RegistryError):
    """The user's roles do not allow this stage change."""


class Conflict(RegistryError):
    """The change conflicts with the registry's state (lifecycle, an open proposal)."""


class UpstreamError(RegistryError):
    """Pushing the branch or opening the pull request failed."""


@dataclass(frozen=True)
class User:
    name: str
    email: str

    @property
    def handle(self) -> str:
        return f"@{self.name}"


class Tokens:
    """Bearer tokens from REGISTRY_API_TOKENS: ``token=user,token2=user2``."""

    def __init__(self, users: Mapping[str, str], email_domain: str = DEFAULT_EMAIL_DOMAIN) -> None:
        self._users = dict(users)
        self.email_domain = email_domain

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tokens:
        env = os.environ if env is None else env
        domain = env.get(EMAIL_DOMAIN_ENV, "").strip() or DEFAULT_EMAIL_DOMAIN
        if not _DOMAIN.fullmatch(domain):
            raise UsageError(f"{EMAIL_DOMAIN_ENV}={domain!r}: give a domain name, e.g. example.com")
        return cls(parse_tokens(env.get(TOKENS_ENV, "")), domain)

    def __len__(self) -> int:
        return len(self._users)

    def user(self, token: str) -> User | None:
        found = None
        for known, name in self._users.items():  # every entry compared: no early exit to time
            if hmac.compare_digest(known.encode(), token.encode()):
                found = name
        return User(found, f"{found}@{self.email_domain}") if found else None


def parse_tokens(text: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        token, sep, user = (part.strip() for part in item.partition("="))
        if not sep or not token or not user:
            raise UsageError(f"{TOKENS_ENV}: entry {number} is not token=user; "
                             "give comma-separated pairs, e.g. s3cr3t=dana,0th3r=rita")
        if not _USER.fullmatch(user):
            raise UsageError(f"{TOKENS_ENV}: entry {number}: user {user!r} is not a GitHub-style user name "
                             "(letters, digits and single hyphens, at most 39)")
        if token in users:
            raise UsageError(f"{TOKENS_ENV}: entry {number} repeats a token; each token names one user")
        users[token] = user
    return users


def _is(handle: str, user: User) -> bool:
    return handle.strip().lstrip("@").lower() == user.name.lower()


def roles_of(config: RegistryConfig, user: User) -> list[str]:
    return [role for role, members in config.roles.items() if any(_is(m, user) for m in members)]


def check_may_propose(config: RegistryConfig, owners: tuple[str, ...], user: User, name: str, to: str) -> None:
    if any(_is(owner, user) for owner in owners):
        return
    roles = roles_of(config, user)
    if any(to in PROPOSALS_BY_ROLE.get(role, ()) for role in roles):
        return
    who = f"{user.handle} (roles: {', '.join(roles)})" if roles else f"{user.handle} (no role in registry.yaml)"
    allowed = [role for role, stages in PROPOSALS_BY_ROLE.items() if to in stages]
    owner_list = ", ".join(owners) or "none"
    raise Forbidden(
        f"{who} may not propose moving {name} to {to}: that needs the role {' or '.join(allowed)} "
        f"(registry.yaml roles) or being an owner of {name} (models/{name}/model.yaml owners: {owner_list})"
    )


@dataclass(frozen=True)
class Proposal:
    promoted: Promoted
    pull_request_url: str | None


@dataclass(frozen=True)
class GitHub:
    """Opens the pull request of a pushed branch through GitHub's REST API."""

    token: str
    repository: str
    api_url: str = "https://api.github.com"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GitHub | None:
        env = os.environ if env is None else env
        token, repository = env.get("GITHUB_TOKEN", ""), env.get("GITHUB_REPOSITORY", "")
        if not token or not repository:
            return None
        if not _REPOSITORY.fullmatch(repository):
            raise UsageError(f"GITHUB_REPOSITORY={repository!r}: use OWNER/NAME")
        return cls(token, repository, env.get("GITHUB_API_URL", "").rstrip("/") or cls.api_url)

    def request(self, head: str, base: str, title: str, body: str) -> urllib.request.Request:
        data = json.dumps({"title": title, "head": head, "base": base, "body": body}).encode()
        return urllib.request.Request(
            f"{self.api_url}/repos/{self.repository}/pulls", data=data, method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json",
                     "User-Agent": "gitops-registry-api"},
        )

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> str:
        try:
            with urllib.request.urlopen(self.request(head, base, title, body), timeout=30) as response:
                return str(json.load(response)["html_url"])
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise UpstreamError(f"branch {head} is pushed, but GitHub refused the pull request "
                                f"({exc.code}): {detail}") from None
        except (urllib.error.URLError, TimeoutError, KeyError, ValueError) as exc:
            raise UpstreamError(f"branch {head} is pushed, but opening the pull request failed: {exc}") from None


class Proposer:
    """A private work clone of the served registry where proposal branches are made, one at a time."""

    def __init__(self, url: str, ref: str, cache: Path, github: GitHub | None = None) -> None:
        self.url = url
        self.ref = ref
        self.work = cache / "work"
        self.github = github
        self._lock = threading.Lock()

    def propose(self, user: User, name: str, version: str, to: str, reason: str,
                traffic: float | None = None) -> Proposal:
        with self._lock:
            reg = self._fresh_clone()
            if not reg.has_model(name):
                raise NotFound(f"no model named {name!r} at {self.ref}")
            if version not in reg.versions(name):
                raise NotFound(f"{name}@{version} is not registered at {self.ref}")
            check_may_propose(reg.config, reg.model_info(name).owners, user, name, to)
            branch = f"promote/{name}/{version}-to-{to}"
            if self._on_origin(branch):
                raise Conflict(f"branch {branch} already exists: that change is already proposed; "
                               "merge or close its pull request (and delete the branch) first")
            if git.rev_parse(f"refs/heads/{branch}", reg.root):
                git.delete_branch(reg.root, branch)  # left by a failed push
            try:
                done = promote.promote(reg, name, version, to, reason, traffic=traffic, push=True,
                                       author=(user.name, user.email))
            except (UsageError, ValidationError) as exc:
                # The request was checked before: what is left is the registry's state at --ref.
                raise Conflict(str(exc)) from None
            except RegistryError as exc:
                raise UpstreamError(str(exc)) from None
            finally:
                git.detach(reg.root, BASE_REF)
                git.delete_branch(reg.root, branch, check=False)  # it lives on origin
        url = None
        if self.github is not None and done.branch:
            subject = promote.commit_message(name, version, to, reason, traffic).splitlines()[0]
            body = (f"Proposed through the registry API by {user.handle}.\n\n"
                    f"Reason: {' '.join(reason.split())}\n")
            url = self.github.open_pull_request(done.branch, self.ref, subject, body)
        return Proposal(done, url)

    def _on_origin(self, branch: str) -> bool:
        """Whether origin has the branch now (a remote-tracking ref may be stale after a merge)."""
        try:
            found = git.remote_heads(self.work, f"refs/heads/{branch}")
        except GitError as exc:
            raise UpstreamError(str(exc)) from None
        if found is None:
            raise UpstreamError(f"git ls-remote origin failed: cannot tell whether branch {branch} exists there")
        return bool(found)

    def _fresh_clone(self) -> Registry:
        """The work clone at the tip of --ref, with a clean tree."""
        if not (self.work / ".git").is_dir():
            if self.work.exists():
                shutil.rmtree(self.work)
            self.work.parent.mkdir(parents=True, exist_ok=True)
            try:
                git.clone_no_checkout(self.url, self.work)
            except GitError as exc:
                raise UpstreamError(str(exc)) from None
        try:
            git.fetch_into(self.work, self.ref, BASE_REF)
        except GitError as exc:
            raise UpstreamError(str(exc)) from None
        git.checkout_clean(self.work, BASE_REF)
        return Registry(self.work)

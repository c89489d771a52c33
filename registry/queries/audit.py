"""`registry log`: the audit trail, derived from what changed along main's first-parent history.

One `git log` process streams every first-parent commit that touched models/ (and
registry.yaml) with its raw diff (blob ids); stages.yaml blobs, registry.yaml blobs and
pull-request branch commits are then read through one `git cat-file --batch`. Entries
come from the stage assignments that actually changed, from cards added or removed and
from registry.yaml changes (`policy` events), not from commit messages.

Who made a change and why come from the commit that made it: for a merge, the commit
on the pull request's branch that changed that file, not the branch's last commit.
Who approved it never comes from anything the pull request's author wrote: it comes
from the forge's review records, stored as git notes under refs/notes/registry/approvals
by the main-branch workflow (`registry record-approvals`), else from who merged.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from registry.errors import UsageError, ValidationError
from registry.files import config, stages
from registry.files.names import check_model_name, check_version
from registry.queries.policy_changes import describe_policy_change, key_labeller
from registry.queries.shapes import ApprovalSource
from registry.queries.shapes import AuditEntry as AuditEntry  # the entries log() gives (site, api)
from registry.repo import git
from registry.repo.registry import MODELS_DIR, Registry

ZERO = "0" * 40
APPROVALS_REF = "refs/notes/registry/approvals"
_FORMAT = "%x1e%H%x00%P%x00%cI%x00%an <%ae>%x00%cn <%ce>%x00%B%x00"
ACTIONS = ("registered", "promoted", "demoted", "rolled back", "deprecated", "archived", "purged", "deleted",
           "policy")
APPROVAL_SOURCES = ("review", "merge", "none")
_STAGES_PATH = re.compile(rf"{MODELS_DIR}/([^/]+)/{stages.STAGES_FILE}")
_CARD_PATH = re.compile(rf"{MODELS_DIR}/([^/]+)/([^/]+)/card\.yaml")
_PR_MERGE = re.compile(r"^Merge pull request #(\d+)")
_PR_SQUASH = re.compile(r"\(#(\d+)\)\s*$")
_REASON = re.compile(r"^Reason:[ \t]*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
_HANDLE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")
# How far back a pull request's branch is walked to find the commit that made a change.
_BRANCH_DEPTH = 200


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: tuple[str, ...]
    timestamp: str
    author: str
    committer: str
    message: str
    changes: tuple[tuple[str, str, str, str], ...]  # (old blob, new blob, status, path)


@dataclass(frozen=True)
class Approval:
    """Who approved one commit on main, and where that comes from."""

    approvers: tuple[str, ...]
    source: ApprovalSource  # review | merge | none
    self_approved: bool
    reviews: int | None  # approving reviews by someone other than the author, from the notes; None: no notes
    self_reviews: int = 0  # approving reviews by the pull request's author (notes only)
    note: dict[str, Any] | None = None

    @property
    def approved_by(self) -> str | None:
        return ", ".join(self.approvers) or None


def reason_of(message: str) -> str | None:
    found = _REASON.search(message)
    return found.group(1) if found else None


def pr_number(message: str) -> int | None:
    first = message.splitlines()[0] if message else ""
    match = _PR_MERGE.match(message) or _PR_SQUASH.search(first)
    return int(match.group(1)) if match else None


def _email(person: str) -> str:
    return person.rsplit("<", 1)[-1].rstrip(">").strip().lower()


def _logins(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and _HANDLE.fullmatch(v)]


def parse_note(raw: bytes | None) -> dict[str, Any] | None:
    """An approvals note (JSON written by `registry record-approvals`), or None when unreadable."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    author = data.get("author")
    merged_by = data.get("merged_by")
    return {
        "pr": data.get("pr") if isinstance(data.get("pr"), int) else None,
        "author": author if isinstance(author, str) and _HANDLE.fullmatch(author) else None,
        "merged_by": merged_by if isinstance(merged_by, str) and _HANDLE.fullmatch(merged_by) else None,
        "approvers": _logins(data.get("approvers")),
    }


def approval_of(commit_author: str, parents: Sequence[str], branch_author: str,
                note: dict[str, Any] | None) -> Approval:
    """The one rule for who approved a commit on main (the log and verify-history share it).

    The forge's review records (notes) when there are some; else who merged, when a merge
    commit's author is not the branch's author. Nothing the pull request's author wrote
    (trailers, committer fields of the branch's commits) ever names an approver.
    """
    if note is not None:
        author = note["author"]
        approvers = note["approvers"]
        others = [a for a in approvers if a != author]
        if approvers:
            return Approval(tuple(f"@{a}" for a in approvers), "review", author in approvers, len(others),
                            len(approvers) - len(others), note)
        merged_by = note["merged_by"]
        if merged_by and merged_by != author:
            return Approval((f"@{merged_by}",), "merge", False, 0, 0, note)
        return Approval((), "none", False, 0, 0, note)
    if len(parents) > 1 and _email(commit_author) != _email(branch_author):
        return Approval((commit_author,), "merge", False, None)
    return Approval((), "none", False, None)


def read_notes(reg: Registry, cat: git.CatFile, commits: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The approvals notes of these commits, parsed (commits without a note are left out)."""
    if not commits or cat.read(f"{APPROVALS_REF}^{{commit}}") is None:
        return {}
    wanted = set(commits)
    chosen = [(note, target) for note, target in git.notes_list(reg.root, APPROVALS_REF) if target in wanted]
    blobs = cat.read_many([note for note, _ in chosen])
    found = {}
    for (_, target), blob in zip(chosen, blobs, strict=True):
        parsed = parse_note(blob)
        if parsed is not None:
            found[target] = parsed
    return found


def _parse_commit_object(raw: bytes) -> tuple[str, str, tuple[str, ...]]:
    """(author "Name <email>", message, parents) of a raw commit object."""
    head, _, message = raw.decode(errors="replace").partition("\n\n")
    author = ""
    parents = []
    for line in head.splitlines():
        if line.startswith("parent "):
            parents.append(line[len("parent "):].strip())
        elif line.startswith("author ") and not author:
            author = line[len("author "):].rsplit(" ", 2)[0]
    return author, message, tuple(parents)


def _stream_commits(reg: Registry, pathspecs: Sequence[str], ref: str = "HEAD") -> Iterator[_Commit]:
    args = [
        "log", "--first-parent", "--diff-merges=first-parent", "--raw", "--no-abbrev",
        "--no-renames", "-z", "--reverse", f"--format={_FORMAT}",
    ]
    if git.rev_parse(ref, reg.root) is None:
        return
    args += [ref, "--", *pathspecs]
    for record in git.stream_records(reg.root, args, b"\x1e"):
        yield _parse_record(record)


def _parse_record(record: bytes) -> _Commit:
    sha, parents, timestamp, author, committer, message, rest = record.split(b"\0", 6)
    fields = rest.lstrip(b"\0\n").split(b"\0")
    changes = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        _, _, old, new, status = meta[1:].decode().split()
        changes.append((old, new, status, path.decode()))
    return _Commit(
        sha.decode(), tuple(parents.decode().split()), timestamp.decode(), author.decode(),
        committer.decode(), message.decode(errors="replace"), tuple(changes),
    )


def _check_date(option: str, value: str) -> None:
    # fromisoformat also takes 20250101 and 2025-W01-1, which the text comparison cannot.
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value, re.ASCII):
            raise ValueError(value)
        dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r}: use an ISO date, YYYY-MM-DD") from None


def to_csv(entries: list[AuditEntry]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(AuditEntry.__dataclass_fields__), lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow(entry.as_json())
    return out.getvalue()


def _purged(blob: bytes | None) -> bool:
    """Whether a card blob carries gc's purge mark (checked on text: history may hold odd cards)."""
    return blob is not None and re.search(rb"^purged:", blob, re.MULTILINE) is not None


def commit_url_base(reg: Registry) -> str | None:
    """https://github.com/ORG/REPO/commit/ for a GitHub origin, so entries link their commit."""
    slug = github_slug(reg)
    return f"https://github.com/{slug}/commit/" if slug else None


def github_slug(reg: Registry) -> str | None:
    """ORG/REPO of a GitHub origin."""
    url = git.remote_url(reg.root) or ""
    match = re.match(r"(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)([^/]+/[^/]+?)(?:\.git)?/?$", url)
    return match.group(1) if match else None


def _action(source: str, target: str) -> str:
    if target == "deprecated":
        return "deprecated"
    if target == "archived":
        return "archived"
    if source == "deprecated" and target == "production":
        return "rolled back"
    if target == "development":
        return "demoted"
    return "promoted"


# -- who made a change on a pull request's branch -----------------------------------------

@dataclass(frozen=True)
class _BranchCommit:
    sha: str
    parents: tuple[str, ...]
    author: str
    message: str


def _reorder(parsed: tuple[str, str, tuple[str, ...]]) -> tuple[tuple[str, ...], str, str]:
    author, message, parents = parsed
    return parents, author, message


class _Branches:
    """A merged pull request's branch, walked back from its tip along first parents."""

    def __init__(self, reg: Registry, cat: git.CatFile, ref: str, known: dict[str, bytes | None]) -> None:
        self._reg, self._cat, self._ref = reg, cat, ref
        self._mainline: set[str] | None = None
        self._walks: dict[str, list[_BranchCommit]] = {}
        self._known = known  # raw commit objects already read (the branch tips)
        self._blobs: dict[str, bytes | None] = {}  # "commit:path" → content
        self._commits: dict[str, _BranchCommit | None] = {}

    def _blob(self, spec: str) -> bytes | None:
        if spec not in self._blobs:
            self._blobs[spec] = self._cat.read(spec)
        return self._blobs[spec]

    def mainline(self) -> set[str]:
        if self._mainline is None:
            self._mainline = git.first_parent_commits(self._reg.root, self._ref, check=False)
        return self._mainline

    def walk(self, tip: str) -> list[_BranchCommit]:
        """Newest first; read lazily, one commit at a time, as deep as a caller asks."""
        return self._walks.setdefault(tip, [])

    def extend(self, tip: str) -> _BranchCommit | None:
        walked = self.walk(tip)
        if len(walked) >= _BRANCH_DEPTH:
            return None
        sha = tip if not walked else (walked[-1].parents[0] if walked[-1].parents else None)
        if sha is None or (walked and sha in self.mainline()):
            return None
        found = self.commit(sha)
        if found is not None:
            walked.append(found)
        return found

    def commit(self, sha: str) -> _BranchCommit | None:
        if sha not in self._commits:
            raw = self._known[sha] if sha in self._known else self._cat.read(sha)
            self._commits[sha] = None if raw is None else _BranchCommit(sha, *_reorder(_parse_commit_object(raw)))
        return self._commits[sha]

    def maker(self, tip: str, path: str, made: Callable[[bytes | None, bytes | None], bool]) -> _BranchCommit | None:
        """The newest branch commit whose change to path (its blob vs its parent's) made(before, after)."""
        index = 0
        while True:
            walked = self.walk(tip)
            if index >= len(walked) and self.extend(tip) is None:
                return None
            commit = walked[index]
            if not commit.parents:
                return None
            if index == 0 and len(commit.parents) == 1 and commit.parents[0] in self.mainline():
                return commit  # a one-commit branch off main: that commit made every change the merge brought
            after, before = self._blob(f"{commit.sha}:{path}"), self._blob(f"{commit.parents[0]}:{path}")
            if made(before, after):
                return commit
            index += 1


def log(
    reg: Registry,
    name: str | None = None,
    version: str | None = None,
    since: str | None = None,
    ref: str = "HEAD",
    until: str | None = None,
    actions: tuple[str, ...] = (),
) -> list[AuditEntry]:
    """Entries oldest first; since/until are inclusive dates (YYYY-MM-DD) of reaching the branch."""
    if name is not None:
        check_model_name(name)
    if version is not None:
        check_version(version)
    for option, value in (("--since", since), ("--until", until)):
        if value is not None:
            _check_date(option, value)
    for action in actions:
        if action not in ACTIONS:
            raise UsageError(f"--action {action!r}: use one of {', '.join(ACTIONS)}")
    from registry.repo import commitgraph

    commitgraph.ensure(reg.root, ref)  # path-limited history reads Bloom filters, not every tree
    with_policy = name is None and version is None and (not actions or "policy" in actions)
    pathspecs = [f"{MODELS_DIR}/{name}/" if name else f"{MODELS_DIR}/"]
    if with_policy:
        pathspecs.append(f":(top){config.CONFIG_FILE}")
    # Filtered here, on the date the change reached the branch: git's own --since stops
    # walking at the first older commit, which clock skew between machines can make wrong.
    commits = [c for c in _stream_commits(reg, pathspecs, ref)
               if (since is None or c.timestamp[:10] >= since) and (until is None or c.timestamp[:10] <= until)]
    url_base = commit_url_base(reg)

    blob_ids = {
        blob for c in commits for old, new, status, path in c.changes
        if _STAGES_PATH.fullmatch(path) or (status == "M" and _CARD_PATH.fullmatch(path))
        or path == config.CONFIG_FILE
        for blob in (old, new) if blob != ZERO
    }
    branch_tips = {c.parents[1] for c in commits if len(c.parents) > 1}
    wanted = sorted(blob_ids) + sorted(branch_tips)
    entries: list[AuditEntry] = []
    with git.CatFile(reg.root) as cat:
        contents = dict(zip(wanted, cat.read_many(wanted), strict=True))
        notes = read_notes(reg, cat, [c.sha for c in commits])
        branches = _Branches(reg, cat, ref, {tip: contents.get(tip) for tip in branch_tips})
        for commit in commits:
            entries += _entries(commit, contents, notes.get(commit.sha), branches, cat, url_base,
                                version, actions)
    return entries


def _assignments(blob: bytes | None, path: str) -> dict[str, tuple[str, object]]:
    """version → (stage, detail); detail is the deprecation (sunset, reason), so re-dating shows."""
    try:
        held = stages.parse(blob, path) if blob is not None else stages.Stages()
    except ValidationError:
        held = stages.Stages()  # an invalid file in history holds no stages
    return {v: (s, held.deprecated.get(v)) for v, s in held.assignments()}


def _entries(commit: _Commit, contents: dict[str, bytes | None], note: dict[str, Any] | None,
             branches: _Branches, cat: git.CatFile, url_base: str | None,
             version: str | None, actions: tuple[str, ...]) -> list[AuditEntry]:
    merged = len(commit.parents) > 1
    tip_author = commit.author
    if merged:
        tip = branches.commit(commit.parents[1])
        if tip is not None:
            tip_author = tip.author
    approval = approval_of(commit.author, commit.parents, tip_author, note)
    pr = pr_number(commit.message)
    if note is not None and note.get("pr") is not None:
        pr = note["pr"]
    # The pull request's own words: a merge's body (GitHub puts the PR title there), else its subject.
    body = [line for line in commit.message.strip().splitlines()[1:] if line.strip() and not _REASON.match(line)]
    subject = commit.message.strip().splitlines()[0] if commit.message.strip() else ""
    pr_title = body[0].strip() if merged and body else None
    pr_message = pr_title or subject or None
    url = f"{url_base}{commit.sha}" if url_base else None
    cache: dict[str, dict[str, tuple[str, object]]] = {}

    def assignments(blob_id: str, path: str) -> dict[str, tuple[str, object]]:
        if blob_id not in cache:
            cache[blob_id] = _assignments(contents.get(blob_id) if blob_id != ZERO else None, path)
        return cache[blob_id]

    def who_and_why(path: str, made: Callable[[bytes | None, bytes | None], bool]) -> tuple[str, str | None]:
        """The author and reason of the commit that made this change."""
        if not merged:
            return commit.author, reason_of(commit.message) or pr_message
        maker = branches.maker(commit.parents[1], path, made)
        if maker is None:
            return tip_author, reason_of(commit.message) or pr_message
        maker_subject = maker.message.strip().splitlines()[0] if maker.message.strip() else None
        return maker.author, (reason_of(maker.message) or reason_of(commit.message) or pr_title
                              or maker_subject or pr_message)

    entries: list[AuditEntry] = []

    def add(action: str, model: str, ver: str, source: str | None, target: str | None,
            author: str, reason: str | None, detail: str | None = None) -> None:
        if (version is None or ver == version) and (not actions or action in actions):
            entries.append(AuditEntry(
                commit.timestamp, action, model, ver, source, target, author, approval.approved_by, reason,
                commit.sha, pr, url, approval.source, approval.self_approved, detail))

    moves: list[tuple[str, str, str, str, str, tuple[str, object]]] = []
    for old, new, status, path in commit.changes:
        if path == config.CONFIG_FILE:
            if version is not None or (actions and "policy" not in actions):
                continue
            old_blob = contents.get(old) if old != ZERO else None
            new_blob = contents.get(new) if new != ZERO else None
            words = describe_policy_change(old_blob, new_blob,
                                           key_labeller(lambda p: cat.read(f"{commit.sha}:{p}")))
            if not words:
                continue

            def wrote(before: bytes | None, after: bytes | None, want: bytes | None = new_blob) -> bool:
                return after == want and before != want

            author, reason = who_and_why(path, wrote)
            add("policy", "", "", None, None, author, reason, "; ".join(words))
            continue
        card = _CARD_PATH.fullmatch(path)
        if card:
            model, ver = card.groups()
            if status == "A":
                author, reason = who_and_why(path, lambda b, a: a is not None and b is None)
                add("registered", model, ver, None, "development", author, reason)
            elif status == "D":
                author, reason = who_and_why(path, lambda b, a: a is None and b is not None)
                add("deleted", model, ver, None, None, author, reason)
            elif status == "M" and _purged(contents.get(new)) and not _purged(contents.get(old)):
                author, reason = who_and_why(path, lambda b, a: _purged(a) and not _purged(b))
                add("purged", model, ver, None, None, author, reason)
            continue
        match = _STAGES_PATH.fullmatch(path)
        if match:
            model = match.group(1)
            before, after = assignments(old, path), assignments(new, path)
            for ver in sorted(set(before) | set(after)):
                source, old_detail = before.get(ver, ("development", None))
                target, new_detail = after.get(ver, ("development", None))
                if source != target or old_detail != new_detail:
                    moves.append((model, ver, source, target, path, (target, new_detail)))
    # The version a change is about comes first; versions it pushed aside follow.
    moves.sort(key=lambda m: m[3] in ("deprecated", "archived", "development"))
    for model, ver, source, target, path, final in moves:
        def made(b: bytes | None, a: bytes | None, ver: str = ver, final: object = final, path: str = path) -> bool:
            now = _assignments(a, path).get(ver, ("development", None))
            then = _assignments(b, path).get(ver, ("development", None))
            return now == final and then != final

        author, reason = who_and_why(path, made)
        add(_action(source, target), model, ver, source, target, author, reason)
    return entries


"""`registry log`: the audit trail, derived from what changed along main's first-parent history.

One `git log` process streams every first-parent commit that touched models/ with
its raw diff (blob ids); stages.yaml blobs and PR-branch commits are then read
through one `git cat-file --batch`. Entries come from the stage assignments that
actually changed and from cards added or removed, not from commit messages.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from registry import git, stages
from registry.errors import GitError, UsageError, ValidationError
from registry.names import check_model_name, check_version
from registry.repo import MODELS_DIR, Registry

ZERO = "0" * 40
_FORMAT = "%x1e%H%x00%P%x00%cI%x00%an <%ae>%x00%cn <%ce>%x00%B%x00"
# Who commits when GitHub's web merge buttons squash or rebase: not a reviewer.
WEB_FLOW = {"GitHub <noreply@github.com>"}
ACTIONS = ("registered", "promoted", "demoted", "rolled back", "deprecated", "archived", "purged", "deleted")
_STAGES_PATH = re.compile(rf"{MODELS_DIR}/([^/]+)/{stages.STAGES_FILE}")
_CARD_PATH = re.compile(rf"{MODELS_DIR}/([^/]+)/([^/]+)/card\.yaml")
_PR_MERGE = re.compile(r"^Merge pull request #(\d+)")
_PR_SQUASH = re.compile(r"\(#(\d+)\)\s*$")
_TRAILER = re.compile(r"^(Reason|Approved-by|Reviewed-by):[ \t]*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class AuditEntry:
    timestamp: str
    action: str
    model: str
    version: str
    from_stage: str | None
    to_stage: str | None
    performed_by: str
    approved_by: str | None
    reason: str | None
    commit: str
    pr: int | None
    url: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp, "action": self.action, "model": self.model,
            "version": self.version, "from_stage": self.from_stage, "to_stage": self.to_stage,
            "performed_by": self.performed_by, "approved_by": self.approved_by,
            "reason": self.reason, "commit": self.commit, "pr": self.pr, "url": self.url,
        }


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: tuple[str, ...]
    timestamp: str
    author: str
    committer: str
    message: str
    changes: tuple[tuple[str, str, str, str], ...]  # (old blob, new blob, status, path)


def _trailers(message: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in _TRAILER.findall(message):
        found.setdefault(key.lower(), []).append(value)
    return found


def _parse_commit_object(raw: bytes) -> tuple[str, str]:
    """(author "Name <email>", message) of a raw commit object."""
    head, _, message = raw.decode(errors="replace").partition("\n\n")
    author = ""
    for line in head.splitlines():
        if line.startswith("author "):
            author = line[len("author "):].rsplit(" ", 2)[0]
            break
    return author, message


def _stream_commits(reg: Registry, pathspec: str, ref: str = "HEAD") -> Iterator[_Commit]:
    args = [
        "git", "log", "--first-parent", "--diff-merges=first-parent", "--raw", "--no-abbrev",
        "--no-renames", "-z", "--reverse", f"--format={_FORMAT}",
    ]
    if git.rev_parse(ref, reg.root) is None:
        return
    args += [ref, "--", pathspec]
    with subprocess.Popen(args, cwd=reg.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        buffer = b""
        while chunk := proc.stdout.read(1 << 16):
            *records, buffer = (buffer + chunk).split(b"\x1e")
            for record in records:
                if record:
                    yield _parse_record(record)
        if buffer:
            yield _parse_record(buffer)
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise GitError(f"git log failed: {err.strip()}")


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
    url = git.run(["config", "--get", "remote.origin.url"], reg.root, check=False).strip()
    match = re.match(r"(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)([^/]+/[^/]+?)(?:\.git)?/?$", url)
    return f"https://github.com/{match.group(1)}/commit/" if match else None


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
    pathspec = f"{MODELS_DIR}/{name}/" if name else f"{MODELS_DIR}/"
    # Filtered here, on the date the change reached the branch: git's own --since stops
    # walking at the first older commit, which clock skew between machines can make wrong.
    commits = [c for c in _stream_commits(reg, pathspec, ref)
               if (since is None or c.timestamp[:10] >= since) and (until is None or c.timestamp[:10] <= until)]
    url_base = commit_url_base(reg)

    blob_ids = {
        blob for c in commits for old, new, status, path in c.changes
        if _STAGES_PATH.fullmatch(path) or (status == "M" and _CARD_PATH.fullmatch(path))
        for blob in (old, new) if blob != ZERO
    }
    branch_tips = {c.parents[1] for c in commits if len(c.parents) > 1}
    wanted = sorted(blob_ids) + sorted(branch_tips)
    with git.CatFile(reg.root) as cat:
        contents = dict(zip(wanted, cat.read_many(wanted), strict=True))

    parsed: dict[str, dict[str, tuple[str, object]]] = {ZERO: {}}

    def assignments(blob: str, path: str) -> dict[str, tuple[str, object]]:
        """version → (stage, detail); detail is the deprecation (sunset, reason), so re-dating shows."""
        if blob not in parsed:
            raw = contents.get(blob)
            try:
                held = stages.parse(raw, path) if raw is not None else stages.Stages()
            except ValidationError:
                held = stages.Stages()  # an invalid file in history holds no stages
            parsed[blob] = {v: (s, held.deprecated.get(v)) for v, s in held.assignments()}
        return parsed[blob]

    entries: list[AuditEntry] = []
    for commit in commits:
        author, message = commit.author, commit.message
        approver: str | None = None
        if len(commit.parents) > 1:
            tip = contents.get(commit.parents[1])
            if tip is not None:
                author, message = _parse_commit_object(tip)
            approver = commit.author
        elif commit.committer != commit.author and commit.committer not in WEB_FLOW:
            approver = commit.committer  # rebased or cherry-picked onto the branch by someone else
        trailers = _trailers(commit.message) if commit.message != message else {}
        for key, values in _trailers(message).items():
            trailers.setdefault(key, []).extend(values)
        approvals = trailers.get("approved-by", []) + trailers.get("reviewed-by", [])
        if approvals:
            approver = ", ".join(dict.fromkeys(approvals if approver is None else [approver, *approvals]))
        subject = message.strip().splitlines()[0] if message.strip() else ""
        reason = trailers["reason"][0] if "reason" in trailers else (subject or None)
        pr_match = _PR_MERGE.match(commit.message) or _PR_SQUASH.search(commit.message.splitlines()[0] if commit.message else "")
        pr = int(pr_match.group(1)) if pr_match else None

        def add(action: str, model: str, ver: str, source: str | None, target: str | None,
                commit: _Commit = commit, author: str = author, approver: str | None = approver,
                reason: str | None = reason, pr: int | None = pr) -> None:
            if (version is None or ver == version) and (not actions or action in actions):
                url = f"{url_base}{commit.sha}" if url_base else None
                entries.append(AuditEntry(commit.timestamp, action, model, ver, source, target,
                                          author, approver, reason, commit.sha, pr, url))

        moves: list[tuple[str, str, str, str]] = []
        for old, new, status, path in commit.changes:
            card = _CARD_PATH.fullmatch(path)
            if card:
                model, ver = card.groups()
                if status == "A":
                    add("registered", model, ver, None, "development")
                elif status == "D":
                    add("deleted", model, ver, None, None)
                elif status == "M" and _purged(contents.get(new)) and not _purged(contents.get(old)):
                    add("purged", model, ver, None, None)
                continue
            match = _STAGES_PATH.fullmatch(path)
            if match:
                model = match.group(1)
                before, after = assignments(old, path), assignments(new, path)
                for ver in sorted(set(before) | set(after)):
                    source, old_detail = before.get(ver, ("development", None))
                    target, new_detail = after.get(ver, ("development", None))
                    if source != target or old_detail != new_detail:
                        moves.append((model, ver, source, target))
        # The version a change is about comes first; versions it pushed aside follow.
        moves.sort(key=lambda m: m[3] in ("deprecated", "archived", "development"))
        for model, ver, source, target in moves:
            add(_action(source, target), model, ver, source, target)
    return entries

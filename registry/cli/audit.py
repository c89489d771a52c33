"""The audit commands (record-approvals, verify-history): loaded only when one of them runs."""

from __future__ import annotations

import sys

import click

from registry.cli.main import _open, _print_json, json_option


@click.command(name="record-approvals")
@click.option("--pr", "prs", multiple=True, type=click.IntRange(min=1), metavar="N",
              help="A merged pull request (repeatable).")
@click.option("--range", "span", metavar="BEFORE..AFTER",
              help="Every pull request merged in these first-parent commits (a push's before..after).")
@click.option("--repo", "slug", metavar="OWNER/NAME", help="Default: $GITHUB_REPOSITORY, else the GitHub origin.")
@click.option("--api-url", metavar="URL", help="Default: $GITHUB_API_URL, else https://api.github.com.")
@click.option("--push/--no-push", default=False, show_default=True,
              help="Fetch, merge and push refs/notes/registry/approvals to --remote.")
@click.option("--remote", default="origin", show_default=True)
@json_option
def record_approvals(prs: tuple[int, ...], span: str | None, slug: str | None, api_url: str | None, push: bool,
                     remote: str, as_json: bool) -> None:
    """Store merged pull requests' reviews (from the forge's API) as git notes for the audit log.

    Run by the main-branch workflow; needs $GITHUB_TOKEN with pull-requests: read, and
    registry.yaml's audit: {record_approvals: true}.
    """
    from registry.changes import approvals

    done = approvals.record(_open(), prs, span, api_url=api_url, slug=slug, push=push, remote=remote)
    if as_json:
        _print_json([r.as_json() for r in done])
        return
    for r in done:
        who = ", ".join(f"@{a}" for a in r.note["approvers"]) or "nobody"
        click.echo(f"#{r.pr} {r.commit[:12]}: approved by {who}; merged by @{r.note['merged_by']}")
    if not done:
        click.echo("No merged pull requests in that range")


@click.command(name="verify-history")
@click.option("--since", metavar="REF|DATE", help="Only changes after this commit, or on or after this date.")
@json_option
def verify_history(since: str | None, as_json: bool) -> None:
    """Re-check every past stage change against the policy in force at its parent commit."""
    from registry.gates import history

    result = history.verify(_open(), since=since)
    if as_json:
        _print_json(result.as_json())
    else:
        for v in result.violations:
            pr = f"#{v.pr}" if v.pr else "no PR"
            click.echo(f"{v.commit[:12]} {pr:<7} {v.model}@{v.version} {v.rule}: {v.message}")
        click.echo(f"{result.checked} stage change{'s' if result.checked != 1 else ''} checked in "
                   f"{result.commits} commit{'s' if result.commits != 1 else ''}, "
                   f"{len(result.violations)} violation{'s' if len(result.violations) != 1 else ''}"
                   + (f", {result.unrecorded} without approval records" if result.unrecorded else ""),
                   err=bool(result.violations))
    if result.violations:
        sys.exit(1)

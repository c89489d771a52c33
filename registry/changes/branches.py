"""A registry change as a branch for review: made whole, or not at all, then pushed.

promote, rollback/deprecate/archive, sign and gc all do the same: switch to a new
branch (unless --no-branch), write and commit, and on any failure put the index,
the files and the branch back as they were. Then, if asked, push with a hint that
says how to finish by hand when the push fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from registry.errors import GitError, RegistryError
from registry.repo import git


@contextmanager
def change_on_branch(root: Path, branch: str | None, restore: Callable[[], None]) -> Iterator[None]:
    """Run the body on `branch` (created from HEAD), or on the current branch when None.

    If the body raises, `restore` puts the work-tree files back, the index is reset and
    the new branch is deleted, so the registry is exactly as it was before.
    """
    original = git.current_branch(root)
    if branch:
        git.switch_new_branch(root, branch)
    try:
        yield
    except BaseException:
        git.reset_index(root)
        restore()
        if branch:
            git.abandon_branch(root, branch, original)
        raise


def push(root: Path, branch: str | None, what: str) -> None:
    """Push a review branch, or the current branch when None (`--no-branch --push`);
    on failure say that the commit is safe and how to push it."""
    if branch is None:
        branch = git.current_branch(root)
        if branch is None:
            raise RegistryError(f"{what} is committed, but HEAD is detached, so there is no branch to push; "
                                "create one with `git switch -c NAME` and push it")
    try:
        git.push_branch(root, branch)
    except GitError as exc:
        raise RegistryError(
            f"{exc}\n{what} is committed on branch {branch}; push it with `git push -u origin {branch}`"
        ) from None

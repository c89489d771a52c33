"""`registry init`: make a registry repository (git, DVC with a default remote, config, workflow)."""

from __future__ import annotations

import shutil
from pathlib import Path

from registry.changes import workflows as templates
from registry.errors import UsageError
from registry.files import codeowners, config, schemas, yamlio
from registry.repo import git, storage
from registry.repo.registry import Registry


def default_remote(root: Path) -> Path:
    """A local folder beside the work tree: DVC's remote must not live inside the repo."""
    return root.parent / f"{root.name}.dvc-storage"


def init(path: Path, dvc_remote: str | None = None) -> Registry:
    root = path.resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a directory")
    # From the nearest existing folder: a PATH not made yet inside a repository is inside it too.
    existing = next((p for p in (root, *root.parents) if p.is_dir()), None)
    top = git.toplevel(existing) if existing is not None else None
    if top is not None and top != root:
        raise UsageError(
            f"{root} is inside the git repository {top}; run `registry init` at the top of a repository"
        )
    if (root / config.CONFIG_FILE).exists():
        raise UsageError(f"{root}: already a registry ({config.CONFIG_FILE} exists); nothing changed")
    if (root / ".dvc").exists():
        raise UsageError(f"{root}: already has a .dvc folder; init expects a repository without DVC")
    if top is not None and git.dirty_paths(root):
        raise UsageError(f"{root}: has uncommitted changes; commit or stash them first")

    remote = dvc_remote
    if remote is None:
        remote_dir = default_remote(root)
        if remote_dir.exists() and any(remote_dir.iterdir()):
            raise UsageError(
                f"{remote_dir} exists and is not empty; give a remote with --dvc-remote"
            )
        remote = str(remote_dir)
    elif "://" not in remote:
        local = Path(remote).expanduser().resolve()
        if local == root or root in local.parents:
            raise UsageError(f"--dvc-remote {remote} is inside the registry; use a folder outside it")
        remote = str(local)

    created_root = not root.exists()
    created_git = top is None
    written: list[Path] = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        if created_git:
            git.init_repository(root)
        # Keep the commit-graph (and its changed-path Bloom filters, see registry.commitgraph)
        # fresh on every fetch, so a model's history stays fast to read.
        git.set_config(root, "fetch.writeCommitGraph", "true")
        if "://" not in remote:
            Path(remote).mkdir(parents=True, exist_ok=True)
        storage.init(root, remote)
        written += [root / ".dvc", root / ".dvcignore"]
        files = {
            config.CONFIG_FILE: config.default_text(),
            templates.WORKFLOW_FILE: templates.workflow(remote),
            codeowners.CODEOWNERS_FILE: codeowners.generate(config.DEFAULT_CONFIG["roles"], {}),
        }
        for kind in schemas.KINDS:
            files[f"{schemas.REPO_SCHEMA_DIR}/{kind}.schema.json"] = schemas.schema_file(kind).read_text()
        for rel, text in files.items():
            target = root / rel
            written.append(target)
            yamlio.atomic_write(target, text)
        git.commit_paths(root, [".dvc", ".dvcignore", *files], "Initialise model registry")
    except BaseException:
        _undo(root, created_root, created_git, written)
        raise
    return Registry(root)


def _undo(root: Path, created_root: bool, created_git: bool, written: list[Path]) -> None:
    if created_root:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in written:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if created_git:
        shutil.rmtree(root / ".git", ignore_errors=True)




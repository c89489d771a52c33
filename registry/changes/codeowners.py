"""`registry codeowners`: regenerate .github/CODEOWNERS in the work tree."""

from __future__ import annotations

from registry.files import yamlio
from registry.files.codeowners import CODEOWNERS_FILE, generate
from registry.repo.registry import MODEL_FILE, Registry

__all__ = ["CODEOWNERS_FILE", "generate_worktree", "write"]


def generate_worktree(reg: Registry) -> str:
    owners = {}
    for name in reg.model_names():
        path = reg.model_dir(name) / MODEL_FILE
        if path.is_file():
            owners[name] = list(reg.model_info(name).owners)
    return generate(reg.config.roles, owners)


def write(reg: Registry) -> bool:
    """Regenerate .github/CODEOWNERS in the work tree; True when it changed."""
    text = generate_worktree(reg)
    path = reg.root / CODEOWNERS_FILE
    if path.is_file() and path.read_text() == text:
        return False
    yamlio.atomic_write(path, text)
    return True

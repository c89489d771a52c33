"""Hands the bytes `registry fetch` pulled from the workflow job that holds the DVC
credentials to the job that runs the gates (and with them the model's code).

The workflow's `fetch` job pulls the artifacts of the checked versions, then

    python -I -m registry.handover pack --base origin/main DIR

moves those files out of the work tree into DIR (files named 0, 1, ... and a
`paths.json` that lists where each came from), which `actions/upload-artifact`
uploads. The `gates` job downloads DIR into a fresh checkout of the same commit and

    python -I -m registry.handover unpack --base origin/main DIR

puts the files back: only at the paths that the plan, recomputed there from git,
names (the outputs of the DVC pointers `registry fetch` pulls), as new regular files,
never through a symbolic link and never outside the work tree. Everything else in
DIR is refused. The bytes themselves are not trusted either: the consistency gate
checks each file's digest against the card and pointer, as after a plain pull.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from registry.errors import RegistryError, UsageError
from registry.gates import fetch
from registry.repo.registry import Registry

PATHS_FILE = "paths.json"


def planned_outputs(root: Path, base: str) -> list[str]:
    """Work-tree paths of the files `registry fetch --base BASE` pulls (pointer path minus `.dvc`)."""
    planned = fetch.plan(Registry.find(root), base)
    return [target.removesuffix(".dvc") for target in planned.targets if target.endswith(".dvc")]


def _plain(relative: str) -> bool:
    path = PurePosixPath(relative)
    return bool(relative) and not path.is_absolute() and all(p not in ("", ".", "..") for p in path.parts) \
        and "\\" not in relative and path.parts[0] != ".git"


def _no_link_on_the_way(root: Path, relative: str) -> bool:
    """True when no component of root/relative (root itself excluded) is a symbolic link."""
    current = root
    for part in PurePosixPath(relative).parts:
        current = current / part
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return False
        except FileNotFoundError:
            return True
    return True


def _regular_files(root: Path, relative: str) -> list[str]:
    """The regular files at or below root/relative, reached without following any link."""
    if not _plain(relative) or not _no_link_on_the_way(root, relative):
        return []
    path = root / relative
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return []
    if stat.S_ISREG(mode):
        return [relative]
    if not stat.S_ISDIR(mode):
        return []
    found: list[str] = []
    for folder, dirs, files in os.walk(path, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            full = Path(folder, name)
            if stat.S_ISREG(os.lstat(full).st_mode):
                found.append(full.relative_to(root).as_posix())
    return found


def pack(root: Path, outputs: Sequence[str], out: Path) -> list[str]:
    """Move the outputs' regular files from the work tree into `out` (made, must be new or empty)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise UsageError(f"{out} is not empty")
    moved: list[str] = []
    for output in dict.fromkeys(outputs):
        for relative in _regular_files(root, output):
            shutil.move(root / relative, out / str(len(moved)))
            moved.append(relative)
    (out / PATHS_FILE).write_text(json.dumps(moved), encoding="utf-8")
    return moved


def _make_parents(root: Path, relative: str) -> Path:
    current = root
    for part in PurePosixPath(relative).parts[:-1]:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            current.mkdir()
            continue
        if not stat.S_ISDIR(mode):  # a link or a file where a folder must be
            raise RegistryError(f"{relative}: {current.relative_to(root)} is not a folder")
    return current / PurePosixPath(relative).name


def unpack(root: Path, outputs: Sequence[str], source: Path) -> list[str]:
    """Copy the handed-over files back into the work tree, only where `outputs` allow."""
    try:
        listed = json.loads((source / PATHS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{source / PATHS_FILE}: no list of handed-over files ({exc})") from None
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise RegistryError(f"{source / PATHS_FILE}: not a list of paths")
    allowed = [o for o in outputs if _plain(o)]
    placed: list[str] = []
    for index, relative in enumerate(listed):
        if not _plain(relative) or not any(relative == o or relative.startswith(o + "/") for o in allowed):
            raise RegistryError(f"{relative!r} is not a file that registry fetch pulls for this pull request")
        item = source / str(index)
        if not stat.S_ISREG(os.lstat(item).st_mode):
            raise RegistryError(f"{item}: not a regular file")
        target = _make_parents(root, relative)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            raise RegistryError(f"{relative}: already in the work tree, not replaced") from None
        with os.fdopen(fd, "wb") as sink, item.open("rb") as stream:
            shutil.copyfileobj(stream, sink, 1 << 20)
        placed.append(relative)
    return placed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -I -m registry.handover", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("--base", required=True, metavar="REF", help="What the PR merges into, e.g. origin/main.")
    parser.add_argument("folder", type=Path, help="The folder uploaded / downloaded as a workflow artifact.")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        outputs = planned_outputs(root, args.base)
        if args.action == "pack":
            files = pack(root, outputs, args.folder)
            print(f"Handed over {len(files)} file{'s' if len(files) != 1 else ''} in {args.folder}")
        else:
            files = unpack(root, outputs, args.folder)
            print(f"Placed {len(files)} fetched file{'s' if len(files) != 1 else ''} into the work tree")
        for relative in files:
            print(f"  {relative}")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

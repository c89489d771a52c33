"""The V2 model repository layout (MLServer's; the Open Inference Protocol repository API), written atomically.

    REPOSITORY/<name>/<version>/model-settings.json   {"name", "implementation", "parameters": {"version", "uri", "extra"}}
    REPOSITORY/<name>/<version>/registry_runtime.py   the runtime (formats/v2_runtime.py, copied)
    REPOSITORY/<name>/<version>/.model/               a copy of the verified version folder

`write_model` writes that versioned folder (what `registry export --format v2` ships, and
what the `v2` adapter loads beside the served version to check it). With `current=True` it
writes `REPOSITORY/<name>/<name>/` instead (named after the model, as MLServer expects of an
unversioned folder): the same, without `parameters.version` (MLServer's
unversioned default, which it swaps without a gap: the new instance loads before the old one
goes) and with the registry version in `parameters.extra.registry_version`, which the runtime
answers as `model_version`.

MLServer finds models by globbing `**/model-settings.json` below its repository, hidden folders
left out. So the copy of the version folder is the hidden `.model/` (a `model-settings.json`
among a version's files never becomes a model of its own), and a folder is built in a hidden
`.tmp-*` folder beside its place, `model-settings.json` written last, everything fsynced, then
renamed into place: a scan sees the whole folder or none of it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from registry.errors import RegistryError
from registry.files.fsutil import fsync_dir
from registry.files.names import check_model_name, check_version

__all__ = ["MODEL_DIR", "RUNTIME_FILE", "SETTINGS_FILE", "current_folder", "current_version", "remove_model",
           "version_folders", "write_model"]

SETTINGS_FILE = "model-settings.json"
RUNTIME_FILE = "registry_runtime.py"
MODEL_DIR = ".model"
IMPLEMENTATION = "registry_runtime.RegistryRuntime"
_RUNTIME_SOURCE = Path(__file__).with_name("v2_runtime.py")


def _entrypoint(card: Mapping[str, Any], folder: Path) -> str:
    entrypoint = card.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint:
        raise RegistryError(f"{folder}: card.yaml has no entrypoint; the V2 (MLServer) runtime runs a "
                            "version's predict.py (docs/model-code.md): add `entrypoint: predict.py`")
    parts = PurePosixPath(entrypoint).parts
    if entrypoint.startswith("/") or "\\" in entrypoint or any(p in ("..", ".") for p in parts):
        raise RegistryError(f"{folder}: entrypoint {entrypoint!r} must be a relative path inside the version folder")
    path = folder.joinpath(*parts)
    if path.is_symlink() or not path.is_file():
        raise RegistryError(f"{folder}: entrypoint {entrypoint!r} is not a file in the version folder")
    return entrypoint


def _copy_file(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a version folder, refusing anything but plain files and folders (a link could point anywhere)."""
    target.mkdir()
    for entry in sorted(source.iterdir()):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            raise RegistryError(f"{entry}: not a plain file or folder; a version folder holds only its files")
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        else:
            _copy_file(entry, target / entry.name)
    fsync_dir(target)


def _write(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _discard(path: Path) -> None:
    """Remove a folder: renamed to a hidden name first, so no scan sees it half removed."""
    if not path.exists():
        return
    gone = Path(tempfile.mkdtemp(prefix=f".gone-{path.name}-", dir=path.parent))
    os.replace(path, gone / path.name)
    fsync_dir(path.parent)
    shutil.rmtree(gone, ignore_errors=True)


def write_model(folder: Path, card: Mapping[str, Any], repository: Path, *, name: str, version: str,
                current: bool = False) -> Path:
    """Write `REPOSITORY/<name>/<version>/` (or, current, `<name>/<name>/`) for a verified version folder; returns it.

    An existing folder there is replaced (the new one is complete before the old one moves
    away). The version folder itself is only read.
    """
    check_model_name(name)
    check_version(version)
    folder, repository = Path(folder), Path(repository)
    entrypoint = _entrypoint(card, folder)
    slot = name if current else version  # a name has no dots, a version has two: never the same folder
    parent = repository / name
    parent.mkdir(parents=True, exist_ok=True)
    for leftover in parent.glob(f".tmp-{slot}-*"):  # a write killed part-way
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{slot}-", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: the server may run as another user
        _copy_tree(folder, tmp / MODEL_DIR)
        _write(tmp / RUNTIME_FILE, _RUNTIME_SOURCE.read_text(encoding="utf-8"))
        parameters: dict[str, Any] = {"uri": f"./{MODEL_DIR}",
                                      "extra": {"entrypoint": entrypoint, "registry_version": version}}
        if not current:
            parameters = {"version": version, **parameters}
        settings = {"name": name, "platform": "registry", "implementation": IMPLEMENTATION, "parameters": parameters}
        _write(tmp / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")  # last: it makes the folder a model
        fsync_dir(tmp)
        target = parent / slot
        _discard(target)
        os.replace(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def current_folder(repository: Path, name: str) -> Path:
    """`REPOSITORY/<name>/<name>/`: the unversioned folder, the version the server answers with."""
    return Path(repository) / name / name


def current_version(repository: Path, name: str) -> str | None:
    """The registry version in the model's unversioned folder, or None when there is none."""
    try:
        settings = json.loads((current_folder(repository, name) / SETTINGS_FILE).read_text(encoding="utf-8"))
        version = settings["parameters"]["extra"]["registry_version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return version if isinstance(version, str) else None


def version_folders(repository: Path, name: str) -> dict[str, Path]:
    """The versioned folders of `name` (not its unversioned one): visible folders that hold a model-settings.json."""
    parent = Path(repository) / name
    if not parent.is_dir():
        return {}
    return {p.name: p for p in sorted(parent.iterdir())
            if not p.name.startswith(".") and p.name != name and p.is_dir() and (p / SETTINGS_FILE).is_file()}


def remove_model(repository: Path, name: str, slot: str) -> None:
    """Take one folder (a version, or the model's name) out of the repository: renamed away first, then deleted."""
    _discard(Path(repository) / name / slot)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

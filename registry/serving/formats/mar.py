"""`.mar` archives for TorchServe, built from a verified version folder with `torch-model-archiver`.

The archive holds the version folder as it was signed (card.yaml, the artifacts, the
entrypoint, signature.json) at its root, `registry_model.json` (entrypoint, model and
version, so the handler needs no YAML reader), and the generic handler
`registry_handler.py` (`torchserve_handler.py` in this package) that calls the version's
`load(path)` and `predict(model, inputs)`. The card's `environment` (requirements file), if
any, becomes the archive's requirements file. The card has no field that names a handler of
its own, so every archive uses that one. The archiver's `--version` is the registry
version; that is the version TorchServe reports and routes (`/predictions/<m>/<version>`).

The archiver runs as a child process (argv list, no shell) in a private temporary folder:
it stages files under `tempfile.gettempdir()/<model name>` and removes that folder first,
so it gets a TMPDIR of its own. The result is renamed into `out_dir`, never half-written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from registry.errors import RegistryError
from registry.files.fsutil import fsync_dir
from registry.files.names import MODEL_NAME_RE, SEMVER_RE

__all__ = ["CONFIG_FILE", "HANDLER_FILE", "MarError", "archiver_command", "build_mar"]

HANDLER_FILE = "registry_handler.py"
CONFIG_FILE = "registry_model.json"
_HANDLER_SOURCE = Path(__file__).with_name("torchserve_handler.py")
ARCHIVER_TIMEOUT = 600.0


class MarError(RegistryError):
    """A `.mar` could not be built: the message says why and what to do."""


def archiver_command() -> list[str]:
    """How to run torch-model-archiver: the module in this Python, else the command on PATH."""
    if importlib.util.find_spec("model_archiver") is not None:
        return [sys.executable, "-m", "model_archiver.model_packaging"]
    found = shutil.which("torch-model-archiver", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise MarError("torch-model-archiver is not installed: pip install 'gitops-registry[torchserve]'")
    return [found]


def _check_folder(folder: Path, entrypoint: str) -> None:
    """Refuse what would not survive archiving as the signed folder: links, odd files, name clashes."""
    if not folder.is_dir():
        raise MarError(f"{folder}: not a version folder")
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise MarError(f"{folder}: {relative} is a symbolic link; a version folder holds regular files only")
        if not (path.is_file() or path.is_dir()):
            raise MarError(f"{folder}: {relative} is not a regular file")
        if relative in (HANDLER_FILE, CONFIG_FILE, "MAR-INF"):
            raise MarError(f"{folder}: {relative} would clash with the archive's own {relative}; rename it in a new version")
    if not (folder / entrypoint).is_file():
        raise MarError(f"{folder}: the card's entrypoint {entrypoint} is not in the folder")


def _entrypoint(card: Mapping[str, Any], name: str, version: str) -> str:
    entry = card.get("entrypoint")
    if not isinstance(entry, str) or not entry.endswith(".py") or "/" in entry or entry.startswith("."):
        raise MarError(
            f"{name}@{version}: the card names no Python entrypoint (entrypoint: predict.py); "
            "TorchServe's generic handler serves a version through its predict.py (docs/model-code.md)"
        )
    return entry


def _requirements_argv(folder: Path, card: Mapping[str, Any]) -> list[str]:
    """The card's `environment` as the archive's requirements file (TorchServe installs it only
    with `install_py_dep_per_model=true`). The archiver copies it to the archive's root."""
    environment = card.get("environment")
    if not isinstance(environment, str) or not (folder / environment).is_file():
        return []
    root_name = Path(environment).name
    if root_name != environment and (folder / root_name).exists():
        raise MarError(f"{folder}: the environment {environment} would replace the folder's own {root_name} "
                       "in the archive (TorchServe reads the requirements file from the root)")
    return ["--requirements-file", f"src/{environment}"]


def build_mar(folder: Path, card: Mapping[str, Any], out_dir: Path, *, name: str, version: str) -> Path:
    """Write `<out_dir>/<name>.mar` for `name@version` from its version folder; return its path."""
    if not MODEL_NAME_RE.fullmatch(name) or not SEMVER_RE.fullmatch(version):
        raise MarError(f"{name!r}@{version!r}: not a model name and version the registry accepts")
    entry = _entrypoint(card, name, version)
    folder = Path(folder)
    _check_folder(folder, entry)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.mar"
    with tempfile.TemporaryDirectory(prefix=f".mar-{name}-", dir=out_dir) as work_text:
        work = Path(work_text)
        # Relative names only in the archiver's argv: it splits --extra-files on commas and
        # expands glob characters, which a folder path could contain.
        (work / "src").symlink_to(folder.resolve(), target_is_directory=True)
        shutil.copyfile(_HANDLER_SOURCE, work / HANDLER_FILE)
        config = {"model": name, "version": version, "entrypoint": entry}
        (work / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        (work / "tmp").mkdir()
        (work / "out").mkdir()
        argv = [*archiver_command(), "--model-name", name, "--version", version,
                "--handler", HANDLER_FILE, "--extra-files", f"src,{CONFIG_FILE}",
                "--export-path", "out", "--archive-format", "default",
                *_requirements_argv(folder, card)]
        env = {**os.environ, "TMPDIR": str(work / "tmp")}
        try:
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=ARCHIVER_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise MarError(f"{name}@{version}: torch-model-archiver took more than {ARCHIVER_TIMEOUT:.0f} s") from None
        built = work / "out" / f"{name}.mar"
        if done.returncode != 0 or not built.is_file():
            detail = " ".join((done.stderr or done.stdout).split())[-500:]
            raise MarError(f"{name}@{version}: torch-model-archiver failed (exit {done.returncode}): {detail}")
        with built.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(built, target)
    fsync_dir(out_dir)
    return target

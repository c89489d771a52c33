"""A version's declared runtime environment (`environment: requirements.txt`): checked, built once, reused.

The card's `environment` names a requirements file among the version's artifacts. The
model's code (smoke, latency, the metrics recomputation) then runs with the Python of an
isolated virtual environment built from that file, never with the registry's own.

The file comes from a pull request, so it is attacker-controlled:

- only plain requirement lines are accepted: `name[extras] <op> version` (several
  specifiers separated by commas, or none), optional `--hash=algo:hex` pins, comments and
  blank lines. Any option (`--index-url`, `--extra-index-url`, `--trusted-host`, `-e`,
  `-r other.txt`, `-c`, ...), direct URL or path, and environment marker is refused with
  `file:line`;
- packages are installed from wheels only (`pip --only-binary=:all:`, `uv --no-build`):
  no sdist's `setup.py` or build backend runs on the host. Installing a wheel runs none of
  its code; a `.pth` file it ships would run at interpreter start-up, so the child starts
  the environment's Python with `-S` and imports `site` only once it has confined itself;
- the build has network (the sandboxed child has none) and runs before any of the model's
  code, with the registry's environment minus credentials (`_build_environment`): pip or uv
  read their index configuration from it as they would for any install.

Environments are cached under `$REGISTRY_ENV_CACHE` (default `~/.cache/registry/envs`),
one folder per sha256 of the file's bytes and the Python version, built in a temporary
folder and renamed into place, so a half-built environment is never used. `uv` builds it
when it is on PATH; otherwise `python -m venv` and pip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path, PurePosixPath

from registry.runner.sandbox import last_line

__all__ = [
    "BUILD_TIMEOUT_S",
    "CACHE_ENV",
    "DECLARE_HINT",
    "MARKER_FILE",
    "EnvironmentProblem",
    "cache_dir",
    "environment_key",
    "prepare",
    "requirement_problems",
]

CACHE_ENV = "REGISTRY_ENV_CACHE"
BUILD_TIMEOUT_S = float(os.environ.get("REGISTRY_ENV_BUILD_TIMEOUT_S", "900"))
MARKER_FILE = "registry-environment.json"  # written last, inside the temporary folder, before the rename
FORMAT = "registry-env-1"  # bump when the way environments are built changes
DECLARE_HINT = ("list the model's dependencies in a requirements.txt among the version's artifacts and "
                "name it in the card (`environment: requirements.txt`); see docs/model-code.md")

# `name[extra,extra] >=1.0, <2` then optional --hash pins. Names as PEP 508 spells them.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_EXTRAS = rf"\[\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\]"
_SPEC = r"(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"
_REQUIREMENT = re.compile(rf"({_NAME})\s*(?:{_EXTRAS})?\s*(?:{_SPEC}(?:\s*,\s*{_SPEC})*)?")
_HASH = re.compile(r"--hash[= ]\s*(?:sha256|sha384|sha512):[0-9a-fA-F]+")

_lock = threading.Lock()


class EnvironmentProblem(Exception):
    """The declared environment cannot be used; the message says why (with file:line where one applies)."""


def requirement_problems(text: str, label: str) -> list[str]:
    """What in a requirements file is not a plain requirement line: `label:line: why`."""
    problems: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        logical = lines[index]
        while logical.endswith("\\") and index + 1 < len(lines):  # pip-compile's continued --hash lines
            index += 1
            logical = logical[:-1] + " " + lines[index]
        index += 1
        line = re.sub(r"(^|\s)#.*$", "", logical).strip()
        if not line:
            continue
        option = re.search(r"(?:^|\s)-", line)  # where options start: --hash pins, or something refused
        head = line[: option.start()].strip() if option else line
        rest = _HASH.sub("", line[option.start():]).strip() if option and head else ""
        why = _line_problem(head or line, rest)
        if why:
            problems.append(f"{label}:{number}: {why}")
    return problems


def _line_problem(head: str, rest: str) -> str | None:
    shown = head if len(head) <= 80 else head[:79] + "…"
    if head.startswith("-"):
        option = head.split()[0].split("=")[0]
        return (f"the option {option} is not allowed: only `name[extras] <op> version` lines, "
                "--hash pins and comments (the index comes from the registry's pip or uv configuration)")
    if "://" in head or head.startswith((".", "/", "~")) or " @ " in f" {head} " or "@" in head:
        return f"{shown!r} installs from a URL or path; name a package from the index instead"
    if ";" in head:
        return f"{shown!r} has an environment marker; pin what this Python needs instead"
    if not _REQUIREMENT.fullmatch(head):
        return f"{shown!r} is not a requirement line (`name[extras] <op> version`, e.g. `requests==2.32.3`)"
    if rest:
        return f"{rest.split()[0]!r} after the requirement: only --hash=sha256:... pins may follow it"
    return None


def cache_dir() -> Path:
    """Where environments are kept: $REGISTRY_ENV_CACHE, else ~/.cache/registry/envs."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "registry" / "envs"


def environment_key(content: bytes) -> str:
    """sha256 of the build format, this Python's version and platform, and the file's bytes."""
    digest = hashlib.sha256()
    python = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}"
    for part in (FORMAT, python, sys.platform, os.uname().machine if hasattr(os, "uname") else ""):
        digest.update(part.encode() + b"\0")
    digest.update(content)
    return digest.hexdigest()


def _python_in(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def prepare(folder: Path, relative: str, label: str) -> Path:
    """The Python of the environment built from `folder/relative` (built now unless cached).

    `label` is how messages name the file (`models/m/1.0.0/requirements.txt`). Raises
    EnvironmentProblem for a file that is missing or refused, or a build that fails.
    """
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise EnvironmentProblem(f"{label}: the environment must be a file inside the version folder")
    source = folder / relative
    if not source.is_file() or not source.resolve().is_relative_to(folder.resolve()):
        raise EnvironmentProblem(f"{label}: the environment file is not in the version folder")
    content = source.read_bytes()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvironmentProblem(f"{label}: not UTF-8 text; a requirements file is expected") from None
    problems = requirement_problems(text, label)
    if problems:
        raise EnvironmentProblem("; ".join(problems))
    key = environment_key(content)
    root = cache_dir()
    env = root / key[:32]
    with _lock:  # one build at a time in this process; another process's race ends in the rename
        if not (env / MARKER_FILE).is_file():
            _build(root, env, key, content, label)
    return _python_in(env)


def _build_environment() -> dict[str, str]:
    """The registry's environment minus anything that looks like a credential, for pip or uv."""
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|^AWS_|^GITHUB_|^ACTIONS_|^GIT_|^SSH_|KEY$")
    return {name: value for name, value in os.environ.items() if not secret.search(name.upper())}


def _run(command: list[str], cwd: Path, label: str, what: str) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, env=_build_environment(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"{label}: {what} took longer than {BUILD_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise EnvironmentProblem(f"{label}: {what} could not start: {exc}") from None
    if done.returncode != 0:
        why = last_line(done.stderr) or last_line(done.stdout) or f"exit code {done.returncode}"
        raise EnvironmentProblem(f"{label}: {what} failed: {why}")


def _build(root: Path, env: Path, key: str, content: bytes, label: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=root))
    try:
        requirements = building / "requirements.txt"  # the bytes checked above, not a file that may change
        requirements.write_bytes(content)
        target = building / "env"
        uv = shutil.which("uv")
        if uv:
            _run([uv, "venv", "--quiet", "--python", sys.executable, str(target)], building, label,
                 "creating the environment (uv venv)")
            _run([uv, "pip", "install", "--quiet", "--no-build", "--python", str(_python_in(target)),
                  "-r", str(requirements)], building, label, "installing its requirements (uv pip install)")
        else:
            _run([sys.executable, "-I", "-m", "venv", str(target)], building, label,
                 "creating the environment (python -m venv)")
            _run([str(_python_in(target)), "-I", "-m", "pip", "install", "--quiet", "--only-binary=:all:",
                  "--no-input", "--disable-pip-version-check", "-r", str(requirements)], building, label,
                 "installing its requirements (pip install --only-binary=:all:)")
        marker = {"key": key, "python": sys.version.split()[0], "builder": "uv" if uv else "pip",
                  "requirements_sha256": hashlib.sha256(content).hexdigest()}
        (target / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            target.rename(env)
        except OSError:
            if not (env / MARKER_FILE).is_file():  # not another process's finished build: a real error
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(building)

"""A version's declared environment (`environment: requirements.txt`): checked, built once, and the model run in it."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from registry.errors import ValidationError
from registry.files import cards
from registry.runner import environment
from registry.runner.environment import (
    MARKER_FILE,
    EnvironmentProblem,
    prepare,
    requirement_problems,
)
from registry.runner.metrics import evaluate
from registry.runner.run import latency, smoke

# predict.py for a bare environment: no numpy there, and it must be that environment's Python.
IN_ENVIRONMENT = """\
import importlib.util
import sys


def load(path):
    return None


def predict(model, inputs):
    if not sys.executable.startswith({cache!r}) or not sys.prefix.startswith({cache!r}):
        raise RuntimeError("not the environment's Python: " + sys.executable + " " + sys.prefix)
    if sys.prefix == sys.base_prefix:
        raise RuntimeError("not in a virtual environment")
    if importlib.util.find_spec("numpy") is not None:
        raise RuntimeError("the registry's packages are visible")
    return [sys.prefix]
"""

MISSING_MODULE = """\
import not_a_module_anyone_installed


def load(path):
    return None


def predict(model, inputs):
    return [1]
"""


def version_folder(tmp_path: Path, predict: str, requirements: str | None) -> Path:
    folder = tmp_path / "models" / "m" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(textwrap.dedent(predict), encoding="utf-8")
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements, encoding="utf-8")
    return folder


# -- the requirements file is checked line by line -----------------------------------------------


def test_plain_requirement_lines_hashes_and_comments_are_accepted() -> None:
    text = textwrap.dedent("""\
        # a comment
        inflection==0.5.1  # trailing comment
        requests[socks] >=2.31, <3
        numpy
        torch~=2.3.0 \\
            --hash=sha256:0123456789abcdef \\
            --hash=sha256:fedcba9876543210

        """)
    assert requirement_problems(text, "req.txt") == []


@pytest.mark.parametrize(("line", "why"), [
    ("--index-url https://evil.example/simple", "the option --index-url is not allowed"),
    ("--extra-index-url=https://evil.example/simple", "the option --extra-index-url is not allowed"),
    ("--trusted-host evil.example", "the option --trusted-host is not allowed"),
    ("-e .", "the option -e is not allowed"),
    ("-r other.txt", "the option -r is not allowed"),
    ("-c constraints.txt", "the option -c is not allowed"),
    ("pkg @ https://evil.example/pkg.whl", "installs from a URL or path"),
    ("https://evil.example/pkg-1.0-py3-none-any.whl", "installs from a URL or path"),
    ("./local_pkg", "installs from a URL or path"),
    ("/abs/pkg.whl", "installs from a URL or path"),
    ("pkg==1.0 --no-binary :all:", "only --hash=sha256:... pins may follow it"),
    ('pkg==1.0; python_version < "3.12"', "has an environment marker"),
    ("not a requirement!", "is not a requirement line"),
])
def test_options_urls_and_paths_are_refused_with_file_and_line(line: str, why: str) -> None:
    problems = requirement_problems(f"# pinned\ninflection==0.5.1\n{line}\n", "models/m/1.0.0/requirements.txt")
    assert len(problems) == 1, problems
    assert problems[0].startswith("models/m/1.0.0/requirements.txt:3: "), problems
    assert why in problems[0]


def test_a_refused_file_is_never_built(tmp_path: Path, cache: Path) -> None:
    folder = version_folder(tmp_path, MISSING_MODULE, "inflection==0.5.1\n--index-url https://evil.example/\n")
    with pytest.raises(EnvironmentProblem, match=r"^m/requirements.txt:2: the option --index-url"):
        prepare(folder, "requirements.txt", "m/requirements.txt")
    assert not any(p.name.startswith(".build-") for p in cache.iterdir()) if cache.exists() else True


@pytest.mark.parametrize("relative", ["../requirements.txt", "/etc/passwd", "absent.txt"])
def test_the_environment_file_must_be_inside_the_version_folder(tmp_path: Path, cache: Path, relative: str) -> None:
    folder = version_folder(tmp_path, MISSING_MODULE, "")
    (folder.parent / "requirements.txt").write_text("")
    with pytest.raises(EnvironmentProblem, match="version folder"):
        prepare(folder, relative, f"m/{relative}")


# -- the card -------------------------------------------------------------------------------------

CARD = """\
name: m
version: 1.0.0
description: d
created: 2026-01-01
framework: none
task: classification
metrics: {{accuracy: 0.9}}
artifacts:
  - {{path: predict.py, size: 1, sha256: %s, storage: git}}
entrypoint: predict.py
environment: {env}
""" % ("a" * 64)


def test_the_card_environment_must_be_one_of_its_artifacts() -> None:
    with pytest.raises(ValidationError) as caught:
        cards.parse(CARD.format(env="requirements.txt"), "models/m/1.0.0/card.yaml")
    problem = caught.value.problems[0]
    assert problem.line == 11 and problem.field == "environment"
    assert "'requirements.txt' is not one of the card's artifacts" in problem.message


def test_the_card_environment_is_a_relative_txt_file() -> None:
    with pytest.raises(ValidationError) as caught:
        cards.parse(CARD.format(env="../env.toml"), "models/m/1.0.0/card.yaml")
    assert caught.value.problems[0].field == "environment"


def test_a_card_with_its_environment_among_the_artifacts_keeps_it() -> None:
    text = CARD.format(env="requirements.txt").replace(
        "entrypoint:", f"  - {{path: requirements.txt, size: 1, sha256: {'b' * 64}, storage: git}}\nentrypoint:")
    card = cards.parse(text, "models/m/1.0.0/card.yaml")
    assert card.data["environment"] == "requirements.txt"
    assert "environment: requirements.txt" in card.to_text()


# -- the model runs with the environment's Python --------------------------------------------------


def test_smoke_runs_in_a_bare_environment_built_from_a_comment_only_file(tmp_path: Path, cache: Path) -> None:
    folder = version_folder(tmp_path, IN_ENVIRONMENT.format(cache=str(cache)), "# nothing beyond the stdlib\n")
    python = prepare(folder, "requirements.txt", "requirements.txt")
    assert python.is_relative_to(cache) and python != Path(sys.executable)
    result = smoke(folder, "predict.py", [[1.0]], timeout_s=60, python=python)
    assert result.status == "pass", result.message
    assert result.output_preview is not None and str(cache) in result.output_preview
    timed = latency(folder, "predict.py", [[1.0]], runs=3, timeout_s=60, python=python)
    assert timed.status == "pass", timed.message


def test_the_same_file_reuses_the_cached_environment(tmp_path: Path, cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder = version_folder(tmp_path, MISSING_MODULE, "# nothing beyond the stdlib\n")
    python = prepare(folder, "requirements.txt", "requirements.txt")
    marker = python.parent.parent / MARKER_FILE
    before = marker.stat().st_mtime_ns

    def no_build(*args: object) -> None:
        raise AssertionError("rebuilt a cached environment")

    monkeypatch.setattr(environment, "_build", no_build)
    other = version_folder(tmp_path / "other", MISSING_MODULE, "# nothing beyond the stdlib\n")
    assert prepare(other, "requirements.txt", "requirements.txt") == python
    assert marker.stat().st_mtime_ns == before
    # Other bytes, another environment (and here, a build).
    third = version_folder(tmp_path / "third", MISSING_MODULE, "# another comment\n")
    with pytest.raises(AssertionError, match="rebuilt"):
        prepare(third, "requirements.txt", "requirements.txt")
    assert not any(p.name.startswith(".build-") for p in cache.iterdir())


def test_without_an_environment_the_message_says_how_to_declare_one(tmp_path: Path) -> None:
    folder = version_folder(tmp_path, MISSING_MODULE, None)
    result = smoke(folder, "predict.py", [[1.0]], timeout_s=60)
    assert result.status == "fail"
    assert "No module named 'not_a_module_anyone_installed'" in result.message
    assert "environment: requirements.txt" in result.message and "docs/model-code.md" in result.message


def test_the_metrics_recomputation_says_numpy_must_be_in_the_environment(tmp_path: Path, cache: Path) -> None:
    folder = version_folder(tmp_path, MISSING_MODULE, "# nothing beyond the stdlib\n")
    python = prepare(folder, "requirements.txt", "requirements.txt")
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((2, 1)), y=np.array([0, 1]))
    result = evaluate(folder, "predict.py", data, ["accuracy"], timeout_s=60, python=python)
    assert result.status == "fail" and "add numpy to its requirements file" in result.message, result.message


def test_with_an_environment_a_missing_module_is_not_blamed_on_a_missing_declaration(
        tmp_path: Path, cache: Path) -> None:
    folder = version_folder(tmp_path, MISSING_MODULE, "# nothing beyond the stdlib\n")
    python = prepare(folder, "requirements.txt", "requirements.txt")
    result = smoke(folder, "predict.py", [[1.0]], timeout_s=60, python=python)
    assert result.status == "fail" and "No module named" in result.message
    assert "environment: requirements.txt" not in result.message


# -- a real package from the index -----------------------------------------------------------------

WITH_INFLECTION = """\
import inflection


def load(path):
    return None


def predict(model, inputs):
    return [inflection.underscore("DeviceType")]
"""


@pytest.mark.slow
def test_a_package_only_the_environment_has_lets_the_model_pass_smoke(tmp_path: Path, cache: Path) -> None:
    """inflection (a small pure-Python wheel) is not in the registry's venv, only in the model's requirements."""
    with pytest.raises(ImportError):
        __import__("inflection")
    folder = version_folder(tmp_path, WITH_INFLECTION, "inflection==0.5.1\n")
    assert smoke(folder, "predict.py", [[1.0]], timeout_s=60).status == "fail"
    python = prepare(folder, "requirements.txt", "models/m/1.0.0/requirements.txt")
    result = smoke(folder, "predict.py", [[1.0]], timeout_s=60, python=python)
    assert result.status == "pass", result.message
    assert result.output_preview == '["device_type"]'


@pytest.mark.slow
def test_a_requirement_that_cannot_be_installed_leaves_no_environment(tmp_path: Path, cache: Path) -> None:
    """The build fails with pip's reason, and nothing half-built stays in the cache."""
    folder = version_folder(tmp_path, MISSING_MODULE, "registry-no-such-package-anywhere==0.0.1\n")
    with pytest.raises(EnvironmentProblem, match=r"installing its requirements .* failed"):
        prepare(folder, "requirements.txt", "requirements.txt")
    assert not any(p.name.startswith(".build-") for p in cache.iterdir())
    assert os.listdir(cache)  # the cache folder is there, with only finished environments


def test_a_pth_file_in_the_environment_runs_only_once_the_child_is_confined(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel may ship a .pth file, which runs at start-up: with -S, only after Landlock applies."""
    from registry.runner.sandbox import sandbox

    if not sys.platform.startswith("linux") or sandbox().landlock_abi == 0:
        pytest.skip("no Landlock here")
    monkeypatch.setenv(environment.CACHE_ENV, str(tmp_path / "own-cache"))  # this env gets planted on
    folder = version_folder(tmp_path, IN_ENVIRONMENT.format(cache=str(tmp_path / "own-cache")), "# stdlib\n")
    python = prepare(folder, "requirements.txt", "requirements.txt")
    site_packages = next(python.parent.parent.glob("lib/python*/site-packages"))
    outside = tmp_path / "written-by-pth"
    (site_packages / "planted.pth").write_text(f"import os; open({str(outside)!r}, 'w').write('x')\n")
    result = smoke(folder, "predict.py", [[1.0]], timeout_s=60, python=python)
    assert result.status == "pass", result.message  # site-packages was read, the .pth line failed confined
    assert not outside.exists()


def test_uv_builds_the_environment_when_it_is_on_path_and_never_builds_an_sdist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in `uv` records its arguments (and makes the venv with `python -m venv`)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "uv.log"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {log}
        env > {tmp_path / "uv.env"}
        if [ "$1" = venv ]; then eval "last=\\${{$#}}"; exec {sys.executable} -I -m venv --without-pip "$last"; fi
        """))
    uv.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(environment.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("GITHUB_TOKEN", "not-for-the-build")
    folder = version_folder(tmp_path, MISSING_MODULE, "inflection==0.5.1\n")
    python = prepare(folder, "requirements.txt", "requirements.txt")
    venv_call, install_call = log.read_text().splitlines()
    assert venv_call.startswith("venv ")
    assert install_call.startswith("pip install ") and "--no-build" in install_call.split()
    assert "/.build-" in install_call and str(python) not in install_call  # built aside, then renamed
    assert "GITHUB_TOKEN" not in (tmp_path / "uv.env").read_text()  # no credential reaches the build
    assert '"builder": "uv"' in (python.parent.parent / MARKER_FILE).read_text()


WITH_TORCH = """\
import torch


def load(path):
    return torch.nn.Linear(2, 1)


def predict(model, inputs):
    with torch.no_grad():
        rows = model(torch.tensor(inputs, dtype=torch.float32)).shape[0]
    return [torch.__version__.split("+")[0], rows]
"""


@pytest.mark.slow
def test_a_torch_model_passes_smoke_through_its_declared_environment(tmp_path: Path, cache: Path) -> None:
    """The issue's case: a predict.py that imports torch, which the registry's own Python does not
    need to have (`make test` has no torch), passes smoke with the Python its requirements build.
    torch 2.13.0 is the CPU wheel this machine and CI keep on disk (see .ci/run)."""
    folder = version_folder(tmp_path, WITH_TORCH, "torch==2.13.0\n")
    python = prepare(folder, "requirements.txt", "models/m/1.0.0/requirements.txt")
    assert str(python).startswith(str(cache))
    result = smoke(folder, "predict.py", [[1.0, 2.0]], timeout_s=300, python=python)
    assert result.status == "pass", result.message
    assert result.output_preview == '["2.13.0", 1]'  # torch ran, the environment's 2.13.0

"""Bad input, refused.

Every case asserts the exit code (2 usage, 1 invalid content or failed validation),
a message naming the file, line and field (or the argument) at fault, no traceback,
JSON errors as ``{"error": ...}`` on stdout where the command has ``--json``, and that
nothing changed on disk: every file of the registry, its DVC remote and its origin,
HEAD, the current branch, every ref and the index.

Tables hold the cases: (id, args, setup, expected code, expected substrings).
``{reg}``, ``{inputs}``, ``{tmp}`` and ``{card}`` in args and substrings are filled in
per test. A setup function edits the registry on purpose; the "nothing changed"
snapshot is taken after it, so it measures only the refused command.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CARD, Result, git, index_tree, snapshot

USAGE, INVALID = 2, 1
MODEL = "models/credit-approval"
V1 = f"{MODEL}/1.0.0"
HEADER = "# yaml-language-server: $schema=../../.registry/schemas/stages.schema.json\n"


@dataclass(frozen=True)
class Env:
    tmp: Path
    reg: Path
    inputs: Path
    cli: Callable[..., Result]

    def fill(self, text: str) -> str:
        return text.format(reg=self.reg, inputs=self.inputs, tmp=self.tmp, card=self.tmp / "cards" / "candidate.yaml")

    def read(self, rel: str) -> str:
        return (self.reg / rel).read_text()

    def write(self, rel: str, text: str | bytes) -> None:
        path = self.reg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    def edit(self, rel: str, old: str, new: str) -> None:
        text = self.read(rel)
        assert old in text, f"{old!r} not in {rel}"
        self.write(rel, text.replace(old, new, 1))

    def ok(self, *args: str, cwd: Path | None = None) -> None:
        result = self.cli(*args, cwd=cwd or self.reg)
        assert result.code == 0, result.err


Setup = Callable[[Env], None]


def nothing(env: Env) -> None:
    pass


def state(roots: Sequence[Path], repo: Path | None) -> dict[str, Any]:
    """Everything a refused command must leave alone."""
    found: dict[str, Any] = {}
    if repo is not None and (repo / ".git").exists():
        found["head"] = git(repo, "rev-parse", "HEAD").strip()
        found["branch"] = git(repo, "branch", "--show-current").strip()
        found["refs"] = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
        found["index"] = index_tree(repo)  # may write tree objects: before the file snapshot
        found["status"] = git(repo, "status", "--porcelain", "--untracked-files=all")
    found["roots"] = [r.exists() for r in roots]
    found["files"] = snapshot(*[r for r in roots if r.exists()])
    return found


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    files_before, files_after = before["files"], after["files"]
    changed = sorted(k for k in files_before.keys() | files_after.keys() if files_before.get(k) != files_after.get(k))
    assert not changed, f"a refused command changed files: {changed}"
    assert after == before, "a refused command changed HEAD, the branch, a ref or the index"


def assert_refused(result: Result, code: int, expected: Sequence[str], json_mode: bool) -> None:
    shown = f"exit {result.code}\n--- out\n{result.out}\n--- err\n{result.err}"
    assert result.code == code, shown
    assert "Traceback" not in result.out + result.err, shown
    assert "internal error" not in result.out + result.err, shown
    if json_mode:
        data = json.loads(result.out)
        assert list(data) == ["error"], shown
        message = data["error"]
        assert isinstance(message, str) and message
    else:
        assert result.out == "", shown  # errors never go to stdout, which is for data
        message = result.err
    for text in expected:
        assert text in message, f"{text!r} not in message\n{shown}"


def refused(env: Env, args: Sequence[str], code: int, expected: Sequence[str], *, has_json: bool = True,
            cwd: Path | None = None, roots: Sequence[Path] | None = None, repo: Path | None = None) -> None:
    """Run args (and again with --json where the command has it); both refused, nothing changed."""
    cwd = cwd or env.reg
    roots = roots or [env.reg, env.tmp / "dvc-remote", env.tmp / "origin.git"]
    repo = repo or env.reg
    args = [env.fill(a) for a in args]
    expected = [env.fill(e) for e in expected]
    before = state(roots, repo)
    assert_refused(env.cli(*args, cwd=cwd), code, expected, json_mode=False)
    if has_json:
        # --json goes right after the command name: after "--" it would be an argument.
        assert_refused(env.cli(args[0], "--json", *args[1:], cwd=cwd), code, expected, json_mode=True)
    assert_unchanged(before, state(roots, repo))


@pytest.fixture
def fresh(registry_dir: Path, inputs: Path, tmp_path: Path, cli: Callable[..., Result]) -> Env:
    return Env(tmp_path, registry_dir, inputs, cli)


@pytest.fixture
def env(registered: Path, inputs: Path, tmp_path: Path, cli: Callable[..., Result]) -> Env:
    """credit-approval 1.0.0 (model.safetensors in DVC, config.json in git) and 1.1.0 on main."""
    return Env(tmp_path, registered, inputs, cli)


# 1. register with a bad card ------------------------------------------------------------------

BOMB = "".join(
    f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)
BOMB = "hyperparameters:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB

# CARD (tests/conftest.py): 1 description, 2 framework, 3 task, 4 creator, 5 metrics.
BAD_CARDS: list[tuple[str, str, list[str]]] = [
    ("unclosed-bracket", CARD.replace("f1: 0.91}", "f1: 0.91"), ["{card}:6: invalid YAML"]),
    ("bad-indentation", CARD.replace("task:", "  task:"), ["{card}:3: invalid YAML", "mapping values"]),
    ("tab-indent", CARD.replace("metrics: {accuracy: 0.93, f1: 0.91}", "metrics:\n\taccuracy: 0.93"),
     ["{card}:6: invalid YAML", "(a tab: YAML indents with spaces)"]),
    ("duplicate-key", CARD + "framework: torch\n",
     ["{card}:6: duplicate key 'framework' (first defined on line 2)"]),
    ("metric-is-text", CARD.replace("accuracy: 0.93", "accuracy: high"),
     ["{card}:5: metrics.accuracy: expected number, got str 'high'"]),
    ("metrics-a-list", CARD.replace("{accuracy: 0.93, f1: 0.91}", "[0.93, 0.91]"),
     ["{card}:5: metrics: expected object, got list"]),
    ("created-not-a-date", CARD + "created: last tuesday\n", ["{card}:6: created: 'last tuesday'"]),
    ("created-impossible-date", CARD + "created: 2024-02-30\n", ["{card}:6: created: '2024-02-30' is not a valid date"]),
    ("name-a-number", "name: 42\n" + CARD, ["{card}:1: name: is 42 but you are registering credit-approval@1.0.0"]),
    ("version-a-float", "version: 1.0\n" + CARD, ["{card}:1: version: is 1.0 but you are registering"]),
    ("framework-a-number", CARD.replace("framework: numpy", "framework: 3"),
     ["{card}:2: framework: expected string, got int 3"]),
    ("no-description", CARD.replace("description: Credit approval classifier\n", ""),
     ["{card}:1: description: required field is missing"]),
    ("no-framework", CARD.replace("framework: numpy\n", ""), ["{card}:", ": framework: required field is missing"]),
    ("no-task", CARD.replace("task: classification\n", ""), ["{card}:", ": task: required field is missing"]),
    ("no-metrics", CARD.replace("metrics: {accuracy: 0.93, f1: 0.91}\n", ""),
     ["{card}:", ": metrics: required field is missing"]),
    ("typo-metric", CARD.replace("metrics:", "metric:"),
     ["{card}:5: metric: unknown field", "free-form data goes under tags or hyperparameters"]),
    ("typo-nested", CARD + "training: {sampels: 10}\n", ["{card}:6: training.sampels: unknown field"]),
    ("name-disagrees", "name: fraud-detector\n" + CARD,
     ["{card}:1: name: is 'fraud-detector' but you are registering credit-approval@1.0.0"]),
    ("version-disagrees", CARD + "version: 2.0.0\n", ["{card}:6: version: is '2.0.0' but you are registering"]),
    ("artifacts-given", CARD + "artifacts:\n- {path: model.safetensors, size: 1, sha256: x, storage: git}\n",
     ["{card}:7: artifacts[0].size: is 1 but", "the file is not the one the card describes"]),
    ("artifacts-not-given", CARD + "artifacts:\n- {path: other.bin}\n",
     ["{card}:7: artifacts[0].path: 'other.bin' is not among the --artifact files (model.safetensors)"]),
    ("artifacts-not-a-list", CARD + "artifacts: model.safetensors\n",
     ["{card}:6: artifacts: must be a list of", "path, size, sha256, storage"]),
    ("alias-bomb", CARD + BOMB, ["{card}:", "aliases expand to more than 100000 nodes"]),
    ("merge-key", CARD + "tags: {<<: {a: 1}}\n", ["{card}:6: invalid YAML", "merge keys (<<) are not allowed"]),
    ("two-megabytes", CARD + "tags: {blob: " + "x" * 2_000_000 + "}\n",
     ["{card}: file is 2000", "over the 1048576-byte limit"]),
    ("empty", "", ["{card}:1: a card must be a mapping"]),
    ("only-a-comment", "# TODO\n", ["{card}:1: a card must be a mapping"]),
    ("a-list", "- " + CARD.replace("\n", "\n  ").rstrip() + "\n", ["{card}:1: a card must be a mapping"]),
    ("a-scalar", "credit approval\n", ["{card}:1: a card must be a mapping"]),
    ("not-utf8", CARD + "creator2: \udcff\n", ["{card}", "invalid YAML"]),
]


@pytest.mark.parametrize(("card_text", "expected"), [pytest.param(t, e, id=i) for i, t, e in BAD_CARDS])
def test_register_refuses_a_bad_card(fresh: Env, card_text: str, expected: list[str]) -> None:
    card = fresh.tmp / "cards" / "candidate.yaml"
    card.parent.mkdir()
    card.write_bytes(card_text.encode("utf-8", errors="surrogateescape"))
    refused(fresh, ["register", "credit-approval", "1.0.0", "--card", str(card),
                    "--artifact", "{inputs}/model.safetensors"], INVALID, expected)


# 2. register with bad names, versions, artifacts; re-registration ------------------------------

def reg_args(name: str = "credit-approval", version: str | None = "1.0.0", *extra: str,
             artifacts: Sequence[str] = ("{inputs}/model.safetensors",)) -> list[str]:
    args = ["register", "--card", "{inputs}/card.yaml"]
    for artifact in artifacts:
        args += ["--artifact", artifact]
    return [*args, *extra, "--", name, *([version] if version is not None else [])]


def outside_link(env: Env) -> None:
    (env.tmp / "outside").mkdir()
    (env.tmp / "outside" / "secret.txt").write_text("not yours\n")
    (env.inputs / "secret.txt").symlink_to(env.tmp / "outside" / "secret.txt")


def etc_link(env: Env) -> None:
    (env.inputs / "hostname").symlink_to("/etc/hostname")


def same_name_elsewhere(env: Env) -> None:
    (env.tmp / "other").mkdir()
    shutil.copy(env.inputs / "model.safetensors", env.tmp / "other" / "model.safetensors")


def unicode_file(env: Env) -> None:
    shutil.copy(env.inputs / "config.json", env.inputs / "c\u043enfig.json")  # Cyrillic о


def fifo(env: Env) -> None:
    os.mkfifo(env.inputs / "pipe.bin")


def registered_on_other_branch(env: Env, clean: bool = True) -> None:
    env.ok(*[env.fill(a) for a in reg_args()])
    git(env.reg, "switch", "--quiet", "main")
    if clean:  # DVC-tracked weights are git-ignored: switching back to main leaves them behind
        shutil.rmtree(env.reg / MODEL)


def leftover_of_other_branch(env: Env) -> None:
    registered_on_other_branch(env, clean=False)


def pushed_then_deleted_locally(env: Env) -> None:
    env.ok(*[env.fill(a) for a in reg_args("credit-approval", "1.0.0", "--push")])
    git(env.reg, "switch", "--quiet", "main")
    git(env.reg, "branch", "--quiet", "-D", "register/credit-approval/1.0.0")
    shutil.rmtree(env.reg / MODEL)


def pushed_from_a_clone(env: Env) -> None:
    clone = env.tmp / "clone"
    git(env.tmp, "clone", "--quiet", str(env.tmp / "origin.git"), str(clone))
    env.ok(*[env.fill(a) for a in reg_args("credit-approval", "1.0.0", "--push")], cwd=clone)
    shutil.rmtree(clone)
    os.chdir(env.reg)


def dirty_config(env: Env) -> None:
    env.write("registry.yaml", env.read("registry.yaml") + "# an edit not yet committed\n")


def staged_file(env: Env) -> None:
    env.write("models/notes.txt", "draft\n")
    git(env.reg, "add", "models/notes.txt")


CYRILLIC_A = "credit-\u0430pproval"
FULLWIDTH = "\uff43redit-approval"
REGISTER_CASES: list[tuple[str, list[str], Setup, list[str]]] = [
    ("name-uppercase", reg_args("Credit-Approval"), nothing, ["invalid model name 'Credit-Approval'"]),
    ("name-space", reg_args("credit approval"), nothing, ["invalid model name 'credit approval'"]),
    ("name-dotdot", reg_args(".."), nothing, ["invalid model name '..'"]),
    ("name-traversal", reg_args("../x"), nothing, ["invalid model name '../x'"]),
    ("name-slash", reg_args("a/b"), nothing, ["invalid model name 'a/b'"]),
    ("name-leading-dash", reg_args("-credit"), nothing, ["invalid model name '-credit'"]),
    ("name-65-chars", reg_args("a" * 65), nothing, [f"invalid model name '{'a' * 65}'", "1-64"]),
    ("name-underscore", reg_args("credit_approval"), nothing, ["invalid model name 'credit_approval'"]),
    ("name-cyrillic-a", reg_args(CYRILLIC_A), nothing, [f"invalid model name '{CYRILLIC_A}'", "U+0430"]),
    ("name-fullwidth", reg_args(FULLWIDTH), nothing, [f"invalid model name '{FULLWIDTH}'", "U+FF43"]),
    ("name-empty", reg_args(""), nothing, ["invalid model name ''"]),
    ("name-trailing-newline", reg_args("credit\n"), nothing, ["invalid model name 'credit\\n'"]),
    ("version-two-parts", reg_args(version="1.0"), nothing, ["invalid version '1.0'", "1.2.0"]),
    ("version-v-prefix", reg_args(version="v1.0.0"), nothing, ["invalid version 'v1.0.0'"]),
    ("version-leading-zero", reg_args(version="01.0.0"), nothing, ["invalid version '01.0.0'"]),
    ("version-traversal-after", reg_args(version="1.0.0/.."), nothing, ["invalid version '1.0.0/..'"]),
    ("version-traversal-before", reg_args(version="../1.0.0"), nothing, ["invalid version '../1.0.0'"]),
    ("version-trailing-space", reg_args(version="1.0.0 "), nothing, ["invalid version '1.0.0 '"]),
    ("version-arabic-digit", reg_args(version="1.0.1\u0660"), nothing, ["invalid version '1.0.1\u0660'"]),
    ("version-fullwidth-digit", reg_args(version="\uff11.0.0"), nothing, ["invalid version '\uff11.0.0'"]),
    ("version-missing", reg_args(version=None), nothing, ["missing VERSION"]),
    ("version-and-bump", reg_args("credit-approval", "1.0.0", "--bump", "minor"), nothing,
     ["give either VERSION or --bump, not both"]),
    ("bump-unknown", reg_args("credit-approval", None, "--bump", "huge"), nothing,
     ["Invalid value for '--bump'", "'huge'"]),
    ("card-missing", ["register", "credit-approval", "1.0.0", "--card", "{inputs}/nosuch.yaml",
                      "--artifact", "{inputs}/model.safetensors"], nothing, ["--card {inputs}/nosuch.yaml: no such file"]),
    ("card-a-directory", ["register", "credit-approval", "1.0.0", "--card", "{inputs}",
                          "--artifact", "{inputs}/model.safetensors"], nothing, ["--card {inputs}: is a directory"]),
    ("artifact-missing", reg_args(artifacts=["{inputs}/nosuch.safetensors"]), nothing,
     ["--artifact {inputs}/nosuch.safetensors: no such file"]),
    # A folder's contents are registered with their relative paths: the card in it is refused, by its path.
    ("artifact-directory", reg_args(artifacts=["{inputs}"]), nothing,
     ["--artifact {inputs}/card.yaml: the name 'card.yaml' is reserved"]),
    ("artifact-symlink-outside", reg_args(artifacts=["{inputs}/secret.txt"]), outside_link,
     ["--artifact {inputs}/secret.txt: a symlink to {tmp}/outside/secret.txt, outside its own folder"]),
    ("artifact-symlink-etc", reg_args(artifacts=["{inputs}/hostname"]), etc_link,
     ["--artifact {inputs}/hostname: a symlink to /etc/hostname"]),
    ("artifact-named-card", reg_args(artifacts=["{inputs}/card.yaml"]), nothing,
     ["--artifact {inputs}/card.yaml: the name 'card.yaml' is reserved"]),
    ("artifact-two-same-name", reg_args(artifacts=["{inputs}/model.safetensors", "{tmp}/other/model.safetensors"]),
     same_name_elsewhere, ["--artifact {tmp}/other/model.safetensors: two artifacts are named 'model.safetensors'"]),
    ("artifact-none", reg_args(artifacts=[]), nothing, ["give at least one --artifact FILE"]),
    ("artifact-unicode-name", reg_args(artifacts=["{inputs}/c\u043enfig.json"]), unicode_file,
     ["--artifact {inputs}/c\u043enfig.json: file names may use ASCII letters"]),
    ("artifact-fifo", reg_args(artifacts=["{inputs}/pipe.bin"]), fifo, ["--artifact {inputs}/pipe.bin: not a regular file"]),
    ("again-on-other-branch", reg_args(), registered_on_other_branch,
     ["credit-approval@1.0.0 is already registered on branch register/credit-approval/1.0.0"]),
    ("again-leftover-in-work-tree", reg_args(), leftover_of_other_branch,
     ["models/credit-approval/1.0.0 holds files that no commit on this branch tracks: leftovers of an unmerged branch",
      "rm -rf models/credit-approval/1.0.0"]),
    ("again-remote-tracking", reg_args(), pushed_then_deleted_locally,
     ["credit-approval@1.0.0 is already registered on branch origin/register/credit-approval/1.0.0"]),
    ("again-only-on-origin", reg_args(), pushed_from_a_clone,
     ["credit-approval@1.0.0 is already proposed on origin (branch register/credit-approval/1.0.0)"]),
    ("again-only-on-origin-no-branch", reg_args("credit-approval", "1.0.0", "--no-branch"), pushed_from_a_clone,
     ["credit-approval@1.0.0 is already proposed on origin (branch register/credit-approval/1.0.0)"]),
    ("uncommitted-changes", reg_args(), dirty_config, ["uncommitted changes (registry.yaml)"]),
    ("staged-file", reg_args(), staged_file, ["uncommitted changes (models/notes.txt)"]),
]


@pytest.mark.parametrize(("args", "setup", "expected"), [pytest.param(a, s, e, id=i) for i, a, s, e in REGISTER_CASES])
def test_register_refuses_bad_arguments(fresh: Env, args: list[str], setup: Setup, expected: list[str]) -> None:
    setup(fresh)
    refused(fresh, args, USAGE, expected)


def test_register_refuses_a_version_already_on_main(env: Env) -> None:
    refused(env, reg_args(), USAGE, ["credit-approval@1.0.0 already exists", "versions are immutable"])


# 3. promote -------------------------------------------------------------------------------------

def promote(version: str, to: str, *extra: str, name: str = "credit-approval", reason: str = "r") -> list[str]:
    return ["promote", name, version, "--to", to, "--reason", reason, *extra]


def in_staging(env: Env) -> None:
    env.ok(*promote("1.0.0", "staging", "--no-branch"))


def canary_held(env: Env) -> None:
    in_staging(env)
    env.ok(*promote("1.1.0", "staging", "--no-branch"))
    env.ok(*promote("1.0.0", "canary", "--no-branch", "--traffic", "0.1"))


def branch_exists(env: Env) -> None:
    git(env.reg, "branch", "promote/credit-approval/1.0.0-to-staging")


def stages_duplicate(env: Env) -> None:
    env.write(f"{MODEL}/stages.yaml", HEADER + "staging: [1.0.0]\nstaging: [1.1.0]\n")
    git(env.reg, "commit", "--quiet", "-am", "hand edit")


def stages_huge(env: Env) -> None:
    env.write(f"{MODEL}/stages.yaml", HEADER + "staging: [1.0.0]\n" + "#" * 2_000_000 + "\n")
    git(env.reg, "commit", "--quiet", "-am", "hand edit")


def stages_a_folder(env: Env) -> None:
    (env.reg / MODEL / "stages.yaml").unlink(missing_ok=True)
    env.write(f"{MODEL}/stages.yaml/README", "a folder where the stages file belongs\n")


def config_broken(env: Env) -> None:
    env.edit("registry.yaml", "keep_latest: 3", "keep_latest: three")
    git(env.reg, "commit", "--quiet", "-am", "hand edit")


def card_edited(env: Env) -> None:
    env.edit(f"{V1}/card.yaml", "accuracy: 0.93", "accuracy: '0.93'")
    git(env.reg, "commit", "--quiet", "-am", "hand edit")


PROMOTE_CASES: list[tuple[str, list[str], Setup, int, list[str]]] = [
    ("unknown-model", promote("1.0.0", "staging", name="fraud-detector"), nothing, USAGE,
     ["no model named 'fraud-detector'"]),
    ("bad-model-name", promote("1.0.0", "staging", name="../credit-approval"), nothing, USAGE,
     ["invalid model name '../credit-approval'"]),
    ("unregistered-version", promote("9.9.9", "staging"), nothing, USAGE, ["credit-approval@9.9.9 is not registered"]),
    ("bad-version", promote("1.0", "staging"), nothing, USAGE, ["invalid version '1.0'"]),
    ("unknown-stage", promote("1.0.0", "prod"), nothing, USAGE, ["Invalid value for '--to'", "'prod'"]),
    ("development-to-production", promote("1.0.0", "production"), nothing, USAGE,
     ["credit-approval@1.0.0 is in development; development → production is not allowed",
      "lifecycle.transitions"]),
    ("development-to-canary", promote("1.0.0", "canary"), nothing, USAGE, ["development → canary is not allowed"]),
    ("already-in-stage", promote("1.0.0", "staging"), in_staging, USAGE, ["credit-approval@1.0.0 is already in staging"]),
    ("already-in-development", promote("1.0.0", "development"), nothing, USAGE, ["is already in development"]),
    ("traffic-without-canary", promote("1.0.0", "staging", "--traffic", "0.1"), nothing, USAGE,
     ["--traffic applies only to --to canary"]),
    ("traffic-above-one", promote("1.0.0", "canary", "--traffic", "1.5"), in_staging, USAGE,
     ["--traffic 1.5: give a share between 0 and 1"]),
    ("traffic-zero", promote("1.0.0", "canary", "--traffic", "0"), in_staging, USAGE, ["--traffic 0.0: give a share"]),
    ("traffic-nan", promote("1.0.0", "canary", "--traffic", "nan"), in_staging, USAGE, ["--traffic nan: give a share"]),
    ("traffic-not-a-number", promote("1.0.0", "canary", "--traffic", "lots"), in_staging, USAGE,
     ["Invalid value for '--traffic'", "'lots'"]),
    ("canary-held-by-another", promote("1.1.0", "canary"), canary_held, USAGE,
     ["credit-approval@1.0.0 holds canary"]),
    ("empty-reason", promote("1.0.0", "staging", reason=""), nothing, USAGE, ["--reason is required"]),
    ("blank-reason", promote("1.0.0", "staging", reason=" \n\t"), nothing, USAGE, ["--reason is required"]),
    ("no-reason", ["promote", "credit-approval", "1.0.0", "--to", "staging"], nothing, USAGE,
     ["Missing option '--reason'"]),
    ("branch-exists", promote("1.0.0", "staging"), branch_exists, USAGE,
     ["branch promote/credit-approval/1.0.0-to-staging already exists"]),
    ("uncommitted-changes", promote("1.0.0", "staging"), dirty_config, USAGE, ["uncommitted changes (registry.yaml)"]),
    ("stages-file-broken", promote("1.0.0", "canary"), stages_duplicate, INVALID,
     [f"{MODEL}/stages.yaml:3: duplicate key 'staging' (first defined on line 2)"]),
    ("config-broken", promote("1.0.0", "staging"), config_broken, INVALID,
     ["registry.yaml:", ": retention.keep_latest: expected integer, got str 'three'"]),
    ("card-broken", promote("1.0.0", "staging"), card_edited, INVALID,
     [f"{V1}/card.yaml:10: metrics.accuracy: expected number, got str '0.93'"]),
]


@pytest.mark.parametrize(("args", "setup", "code", "expected"),
                         [pytest.param(a, s, c, e, id=i) for i, a, s, c, e in PROMOTE_CASES])
def test_promote_refuses(env: Env, args: list[str], setup: Setup, code: int, expected: list[str]) -> None:
    setup(env)
    refused(env, args, code, expected)


# 4. hand-edited registry files, then `registry validate` ------------------------------------------

def write(rel: str, text: str) -> Setup:
    return lambda env: env.write(rel, text)


def edit(rel: str, old: str, new: str) -> Setup:
    return lambda env: env.edit(rel, old, new)


def remove(rel: str) -> Setup:
    return lambda env: (env.reg / rel).unlink()


def copy(src: str, dest: str) -> Setup:
    def run(env: Env) -> None:
        (env.reg / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(env.reg / src, env.reg / dest)
    return run


def card_size(env: Env) -> None:
    size = (env.reg / V1 / "model.safetensors").stat().st_size
    env.edit(f"{V1}/card.yaml", f"size: {size}", f"size: {size + 1}")


def bad_md5(env: Env) -> None:
    text = env.read(f"{V1}/model.safetensors.dvc")
    md5 = text.split("md5: ")[1].split()[0]
    env.write(f"{V1}/model.safetensors.dvc", text.replace(md5, "not-an-md5"))


STAGES = f"{MODEL}/stages.yaml"
CONFIG_BOMB = "scan:\n  allow_globals: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"trusted_keys{i}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for i, (p, n) in enumerate(zip("abcdef", "bcdefg", strict=True)))

# (id, setup, expected substrings of one problem line, expected {path, line, field} in --json)
VALIDATE_CASES: list[tuple[str, Setup, list[str], tuple[str, int | None, str | None]]] = [
    ("stages-two-productions", write(STAGES, HEADER + "production: 1.0.0\nproduction: 1.1.0\n"),
     [f"{STAGES}:3: duplicate key 'production' (first defined on line 2)"], (STAGES, 3, None)),
    ("stages-production-a-list", write(STAGES, HEADER + "production: [1.0.0, 1.1.0]\n"),
     [f"{STAGES}:2: production: expected string, got list"], (STAGES, 2, "production")),
    ("stages-production-a-float", write(STAGES, HEADER + "staging: [1.1.0]\nproduction: 1.0\n"),
     [f"{STAGES}:3: production: expected string, got float 1.0 (quote it"], (STAGES, 3, "production")),
    ("stages-unknown-version", write(STAGES, HEADER + "staging: [1.1.0]\nproduction: 9.9.9\n"),
     [f"{STAGES}:3: production: names credit-approval@9.9.9, which is not registered"], (STAGES, 3, "production")),
    ("stages-staging-and-archived", write(STAGES, HEADER + "staging: [1.0.0]\narchived: [1.1.0, 1.0.0]\n"),
     [f"{STAGES}:3: archived: version 1.0.0 is in both staging and archived"], (STAGES, 3, "archived")),
    ("stages-canary-traffic-zero", write(STAGES, HEADER + "canary: {version: 1.1.0, traffic: 0}\n"),
     [f"{STAGES}:2: canary.traffic: 0 is less than or equal to the minimum of 0"], (STAGES, 2, "canary.traffic")),
    ("stages-canary-traffic-two", write(STAGES, HEADER + "canary:\n  version: 1.1.0\n  traffic: 2\n"),
     [f"{STAGES}:4: canary.traffic: 2 is greater than or equal to the maximum of 1"], (STAGES, 4, "canary.traffic")),
    ("stages-canary-no-traffic", write(STAGES, HEADER + "canary: {version: 1.1.0}\n"),
     [f"{STAGES}:2: canary.traffic: required field is missing"], (STAGES, 2, "canary.traffic")),
    ("stages-key-typo", write(STAGES, HEADER + "prod: 1.0.0\n"),
     [f"{STAGES}:2: prod: unknown field"], (STAGES, 2, "prod")),
    ("stages-bad-sunset", write(STAGES, HEADER + "deprecated: {1.0.0: {sunset: soon}}\n"),
     [f"{STAGES}:2: deprecated.1.0.0.sunset: 'soon'"], (STAGES, 2, "deprecated.1.0.0.sunset")),
    ("stages-a-list", write(STAGES, HEADER + "- production: 1.0.0\n"),
     [f"{STAGES}:2: (top level): expected"], (STAGES, 2, "(top level)")),
    ("card-name-disagrees", edit(f"{V1}/card.yaml", "name: credit-approval", "name: fraud-detector"),
     [f"{V1}/card.yaml:2: name: is 'fraud-detector' but the card sits in {V1}"], (f"{V1}/card.yaml", 2, "name")),
    ("card-version-disagrees", edit(f"{V1}/card.yaml", "version: 1.0.0", "version: 1.1.0"),
     [f"{V1}/card.yaml:3: version: is '1.1.0' but the card sits in {V1}"], (f"{V1}/card.yaml", 3, "version")),
    ("card-metric-is-text", edit(f"{V1}/card.yaml", "accuracy: 0.93", "accuracy: high"),
     [f"{V1}/card.yaml:10: metrics.accuracy: expected number, got str 'high'"],
     (f"{V1}/card.yaml", 10, "metrics.accuracy")),
    ("card-duplicate-key", edit(f"{V1}/card.yaml", "task: classification\n", "task: classification\ntask: ranking\n"),
     [f"{V1}/card.yaml:9: duplicate key 'task' (first defined on line 8)"], (f"{V1}/card.yaml", 9, None)),
    ("card-broken-yaml", edit(f"{V1}/card.yaml", "metrics:\n", "metrics: [\n"),
     [f"{V1}/card.yaml:11: invalid YAML: while parsing a flow sequence"], (f"{V1}/card.yaml", 11, None)),
    ("card-unknown-key", edit(f"{V1}/card.yaml", "creator:", "author:"),
     [f"{V1}/card.yaml:6: author: unknown field"], (f"{V1}/card.yaml", 6, "author")),
    ("card-size-vs-pointer", card_size,
     [f"{V1}/model.safetensors.dvc:3: outs[0].size: size 2736 disagrees with the card's 2737"],
     (f"{V1}/model.safetensors.dvc", 3, "outs[0].size")),
    ("pointer-bad-md5", bad_md5,
     [f"{V1}/model.safetensors.dvc:2: outs[0].md5: missing or malformed md5"],
     (f"{V1}/model.safetensors.dvc", 2, "outs[0].md5")),
    ("pointer-missing", remove(f"{V1}/model.safetensors.dvc"),
     [f"{V1}/card.yaml:13: artifacts[0]: model.safetensors is stored in DVC but {V1}/model.safetensors.dvc is missing"],
     (f"{V1}/card.yaml", 13, "artifacts[0]")),
    ("git-artifact-bytes-changed", write(f"{V1}/config.json", '{"threshold": 0.9}\n'),
     [f"{V1}/card.yaml:17: artifacts[1]: {V1}/config.json is 19 bytes with sha256"],
     (f"{V1}/card.yaml", 17, "artifacts[1]")),
    ("git-artifact-missing", remove(f"{V1}/config.json"),
     [f"{V1}/card.yaml:17: artifacts[1]: config.json is stored in git but {V1}/config.json is missing"],
     (f"{V1}/card.yaml", 17, "artifacts[1]")),
    ("unlisted-file", write(f"{V1}/notes.txt", "hi\n"),
     [f"{V1}/notes.txt: is not listed in card.yaml's artifacts"], (f"{V1}/notes.txt", None, None)),
    ("card-missing", remove(f"{MODEL}/1.1.0/card.yaml"),
     [f"{MODEL}/1.1.0: version folder has no card.yaml"], (f"{MODEL}/1.1.0", None, None)),
    ("model-folder-bad-name", copy(f"{MODEL}/model.yaml", "models/Credit_Approval/model.yaml"),
     ["models/Credit_Approval/model.yaml: 'Credit_Approval' is not a valid model name"],
     ("models/Credit_Approval/model.yaml", None, None)),
    ("version-folder-1.0", copy(f"{V1}/card.yaml", f"{MODEL}/1.0/card.yaml"),
     [f"{MODEL}/1.0/card.yaml: '1.0' is not a semantic version folder"], (f"{MODEL}/1.0/card.yaml", None, None)),
    ("model-yaml-missing", remove(f"{MODEL}/model.yaml"),
     [f"{MODEL}: model folder has no model.yaml"], (MODEL, None, None)),
    ("model-owners-a-string", edit(f"{MODEL}/model.yaml", "owners:\n- '@dana'", "owners: '@dana'"),
     [f"{MODEL}/model.yaml:3: owners: expected array, got str '@dana'"], (f"{MODEL}/model.yaml", 3, "owners")),
    ("model-unknown-key", edit(f"{MODEL}/model.yaml", "task:", "tsak:"),
     [f"{MODEL}/model.yaml:5: tsak: unknown field"], (f"{MODEL}/model.yaml", 5, "tsak")),
    ("config-wrong-type", edit("registry.yaml", "keep_latest: 3", "keep_latest: three"),
     ["registry.yaml:", ": retention.keep_latest: expected integer, got str 'three'"],
     ("registry.yaml", -1, "retention.keep_latest")),
    ("config-unknown-key", edit("registry.yaml", "retention:", "retension:"),
     ["registry.yaml:", ": retension: unknown field"], ("registry.yaml", -1, "retension")),
    ("config-broken-yaml", edit("registry.yaml", "lifecycle:\n", "lifecycle: [\n"),
     ["registry.yaml:", ": invalid YAML"], ("registry.yaml", -1, None)),
    ("config-alias-bomb", write("registry.yaml", CONFIG_BOMB),
     ["registry.yaml:", "aliases expand to more than 100000 nodes"], ("registry.yaml", -1, None)),
    ("config-two-megabytes", write("registry.yaml", "trusted_keys: [" + "k, " * 700_000 + "k]\n"),
     ["registry.yaml: file is 2100018 bytes, over the 1048576-byte limit"], ("registry.yaml", None, None)),
]


@pytest.mark.parametrize(("setup", "expected", "where"),
                         [pytest.param(s, e, w, id=i) for i, s, e, w in VALIDATE_CASES])
def test_validate_finds_hand_edits(env: Env, setup: Setup, expected: list[str],
                                   where: tuple[str, int | None, str | None]) -> None:
    setup(env)
    before = state([env.reg, env.tmp / "dvc-remote", env.tmp / "origin.git"], env.reg)
    result = env.cli("validate")
    assert_refused(result, INVALID, expected, json_mode=False)
    assert "problem" in result.err.splitlines()[-1]
    result = env.cli("validate", "--json")
    assert result.code == INVALID and "Traceback" not in result.out + result.err
    report = json.loads(result.out)
    assert report["valid"] is False
    path, line, field = where
    located = [(p["path"], p["line"], p["field"]) for p in report["problems"] if p["path"] == path]
    assert located, report
    if line == -1:  # the line exists; its number depends on the generated registry.yaml
        assert any(isinstance(found_line, int) and found_line > 0 and found_field == field
                   for _, found_line, found_field in located), report
    else:
        assert (path, line, field) in located, report
    assert_unchanged(before, state([env.reg, env.tmp / "dvc-remote", env.tmp / "origin.git"], env.reg))


def test_validate_of_a_named_file_outside_the_registry(env: Env) -> None:
    (env.tmp / "elsewhere.yaml").write_text("{}\n")
    refused(env, ["validate", str(env.tmp / "elsewhere.yaml")], INVALID,
            [f"{env.tmp}/elsewhere.yaml: is outside the registry"], has_json=False)


# 5. other commands ----------------------------------------------------------------------------------

OTHER_CASES: list[tuple[str, list[str], int, list[str]]] = [
    ("ls-unknown-option", ["ls", "--bogus"], USAGE, ["No such option '--bogus'"]),
    ("register-unknown-option", reg_args("credit-approval", "2.0.0", "--frobnicate"), USAGE,
     ["No such option '--frobnicate'"]),
    ("unknown-command", ["lsit"], USAGE, ["No such command 'lsit'"]),
    ("ls-unknown-stage", ["ls", "--stage", "prod"], USAGE, ["Invalid value for '--stage'", "'prod'"]),
    ("ls-bad-tag", ["ls", "--tag", "team"], USAGE, ["--tag 'team': use KEY=VALUE"]),
    ("show-unknown-model", ["show", "fraud-detector"], USAGE, ["no model named 'fraud-detector'"]),
    ("show-bad-name", ["show", "../credit-approval"], USAGE, ["invalid model name '../credit-approval'"]),
    ("show-empty-version", ["show", "credit-approval@"], USAGE, ["invalid version ''"]),
    ("show-two-part-version", ["show", "credit-approval@1.0"], USAGE, ["invalid version '1.0'"]),
    ("show-unregistered-version", ["show", "credit-approval@9.9.9"], USAGE, ["credit-approval@9.9.9 is not registered"]),
    ("manifest-unknown-ref", ["manifest", "--at", "nosuchref"], USAGE, ["--at nosuchref: no such commit, branch or tag"]),
    ("manifest-option-as-ref", ["manifest", "--at", "--all"], USAGE, ["--at --all: no such commit"]),
    ("manifest-two-refs-in-one", ["manifest", "--at", "main\nHEAD"], USAGE, ["--at 'main\\nHEAD': no such commit"]),
    ("manifest-a-file-as-ref", ["manifest", "--at", "HEAD:registry.yaml"], USAGE, ["--at HEAD:registry.yaml: no such commit"]),
    ("manifest-archived", ["manifest", "--stage", "archived"], USAGE, ["Invalid value for '--stage'", "'archived'"]),
    ("log-since-yesterday", ["log", "--since", "yesterday"], USAGE, ["--since 'yesterday': use an ISO date, YYYY-MM-DD"]),
    ("log-since-basic-format", ["log", "--since", "20250101"], USAGE, ["--since '20250101': use an ISO date"]),
    ("log-bad-name", ["log", "BAD_NAME"], USAGE, ["invalid model name 'BAD_NAME'"]),
    ("log-bad-version", ["log", "credit-approval@v1"], USAGE, ["invalid version 'v1'"]),
]


@pytest.mark.parametrize(("args", "code", "expected"), [pytest.param(a, c, e, id=i) for i, a, c, e in OTHER_CASES])
def test_other_commands_refuse(env: Env, args: list[str], code: int, expected: list[str]) -> None:
    refused(env, args, code, expected)


def staging_with_bad_card(env: Env) -> None:
    in_staging(env)
    card_edited(env)


# Reading commands on a registry whose committed files were broken by hand: exit 1, file:line: field.
BROKEN_READ_CASES: list[tuple[str, list[str], Setup, list[str]]] = [
    ("ls-stages-duplicate", ["ls"], stages_duplicate, [f"{STAGES}:3: duplicate key 'staging'"]),
    ("ls-stages-huge", ["ls"], stages_huge, [f"{STAGES}: file is 2000", "over the 1048576-byte limit"]),
    ("ls-stages-a-folder", ["ls"], stages_a_folder, [f"{STAGES}: not a regular file"]),
    ("show-model-stages-duplicate", ["show", "credit-approval"], stages_duplicate,
     [f"{STAGES}:3: duplicate key 'staging'"]),
    ("manifest-stages-duplicate", ["manifest", "--stage", "staging"], stages_duplicate,
     [f"{STAGES}:3: duplicate key 'staging'"]),
    ("show-version-card-broken", ["show", "credit-approval@1.0.0"], card_edited,
     [f"{V1}/card.yaml:10: metrics.accuracy: expected number, got str '0.93'"]),
    ("manifest-card-broken", ["manifest", "--stage", "staging"], staging_with_bad_card,
     [f"{V1}/card.yaml:10: metrics.accuracy: expected number, got str '0.93'"]),
]


@pytest.mark.parametrize(("args", "setup", "expected"), [pytest.param(a, s, e, id=i) for i, a, s, e in BROKEN_READ_CASES])
def test_reading_commands_report_broken_files(env: Env, args: list[str], setup: Setup, expected: list[str]) -> None:
    setup(env)
    refused(env, args, INVALID, expected)


OUTSIDE_COMMANDS: list[tuple[str, list[str], bool]] = [
    ("ls", ["ls"], True),
    ("show", ["show", "credit-approval"], True),
    ("validate", ["validate"], False),
    ("manifest", ["manifest"], True),
    ("log", ["log"], True),
    ("register", reg_args(), True),
    ("promote", promote("1.0.0", "staging"), True),
]


@pytest.mark.parametrize("place", ["plain-dir", "git-repo"])
@pytest.mark.parametrize(("args", "has_json"), [pytest.param(a, j, id=i) for i, a, j in OUTSIDE_COMMANDS])
def test_commands_outside_a_registry(tmp_path: Path, inputs: Path, cli: Callable[..., Result], place: str,
                                     args: list[str], has_json: bool) -> None:
    where = tmp_path / "somewhere"
    where.mkdir()
    (where / "README").write_text("not a registry\n")
    if place == "git-repo":
        git(where, "init", "--quiet", "--initial-branch=main")
        git(where, "add", "README")
        git(where, "commit", "--quiet", "-m", "readme")
    env = Env(tmp_path, where, inputs, cli)
    refused(env, args, INVALID, [f"{where}: not a registry (no registry.yaml at the top of a git repository)",
                                 "registry init"], has_json=has_json, roots=[where, inputs], repo=where)


def test_init_on_an_existing_registry(env: Env) -> None:
    refused(env, ["init", str(env.reg)], USAGE, [f"{env.reg}: already a registry (registry.yaml exists)"],
            has_json=False)


def test_init_in_a_subfolder_of_a_git_repo(env: Env) -> None:
    refused(env, ["init", str(env.reg / "models" / "new")], USAGE,
            [f"{env.reg}/models/new is inside the git repository {env.reg}",
             "run `registry init` at the top of a repository"], has_json=False)


def test_init_in_an_existing_subfolder_of_a_git_repo(env: Env) -> None:
    refused(env, ["init", str(env.reg / "models")], USAGE,
            [f"{env.reg}/models is inside the git repository {env.reg}"], has_json=False)


def test_init_on_a_file(env: Env) -> None:
    refused(env, ["init", str(env.reg / "registry.yaml")], USAGE,
            [f"{env.reg}/registry.yaml: exists and is not a directory"], has_json=False)


def test_init_with_a_remote_inside_the_registry(tmp_path: Path, cli: Callable[..., Result]) -> None:
    target = tmp_path / "new"
    env = Env(tmp_path, target, tmp_path, cli)
    refused(env, ["init", str(target), "--dvc-remote", str(target / "storage")], USAGE,
            [f"--dvc-remote {target}/storage is inside the registry"], has_json=False, cwd=tmp_path,
            roots=[tmp_path], repo=None)

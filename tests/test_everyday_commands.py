"""Everyday commands doing what they say: `--push` pushes whatever the command committed (also
with `--no-branch`), an unsigned promotion to a signed stage warns, `--bump` skips proposed
versions, and leftovers of an unmerged branch are told apart from a registered version."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, git, merge

NAME = "credit-approval"


def origin_main(tmp_path: Path) -> str:
    return git(tmp_path / "origin.git", "rev-parse", "main").strip()


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def test_register_no_branch_push_pushes_the_current_branch(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    result = cli("register", NAME, "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), "--no-branch", "--push", cwd=registry_dir)
    assert result.code == 0, result.err
    assert git(registry_dir, "branch", "--show-current").strip() == "main"
    assert origin_main(tmp_path) == head(registry_dir)


def test_promote_and_rollback_no_branch_push_push_the_current_branch(
    registered: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    for version, stage in (("1.0.0", "staging"), ("1.0.0", "production"), ("1.1.0", "staging"),
                           ("1.1.0", "production")):
        result = cli("promote", NAME, version, "--to", stage, "--reason", "r", "--no-branch", "--push",
                     cwd=registered)
        assert result.code == 0, result.err
        assert origin_main(tmp_path) == head(registered)
    result = cli("rollback", NAME, "--reason", "bad", "--no-branch", "--push", cwd=registered)
    assert result.code == 0, result.err
    assert origin_main(tmp_path) == head(registered)
    assert "production: 1.0.0" in git(tmp_path / "origin.git", "show", f"main:models/{NAME}/stages.yaml")


def test_sign_no_branch_push_pushes_the_current_branch(
    registered: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("keys", "generate", "--out", str(tmp_path / "alice")).code == 0
    result = cli("sign", f"{NAME}@1.1.0", "--key", str(tmp_path / "alice.key"), "--no-branch", "--push",
                 cwd=registered)
    assert result.code == 0, result.err
    assert origin_main(tmp_path) == head(registered)


def test_push_from_a_detached_head_says_what_to_do(
    registered: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    before = origin_main(tmp_path)
    git(registered, "switch", "--quiet", "--detach", "main")
    result = cli("promote", NAME, "1.0.0", "--to", "staging", "--reason", "r", "--no-branch", "--push",
                 cwd=registered)
    assert result.code == 1
    assert "HEAD is detached" in result.err and "git switch -c" in result.err
    assert "Traceback" not in result.err
    assert origin_main(tmp_path) == before


def test_promotion_to_a_signed_stage_warns_while_unsigned(
    registered: Path, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("promote", NAME, "1.1.0", "--to", "staging", "--reason", "r", cwd=registered)
    assert result.code == 0 and "warning" not in result.err  # staging needs no signature
    merge(registered, f"promote/{NAME}/1.1.0-to-staging", monkeypatch, pr=3)
    result = cli("promote", NAME, "1.1.0", "--to", "production", "--reason", "r", "--json", cwd=registered)
    assert result.code == 0, result.err
    warnings = json.loads(result.out)["warnings"]
    assert len(warnings) == 1 and f"registry sign {NAME}@1.1.0 --key KEY --no-branch" in warnings[0]
    git(registered, "switch", "--quiet", "main")
    git(registered, "branch", "--quiet", "-D", f"promote/{NAME}/1.1.0-to-production")
    # Signed first: no warning.
    assert cli("keys", "generate", "--out", str(tmp_path / "alice")).code == 0
    assert cli("sign", f"{NAME}@1.1.0", "--key", str(tmp_path / "alice.key"), "--no-branch",
               cwd=registered).code == 0
    result = cli("promote", NAME, "1.1.0", "--to", "production", "--reason", "r", cwd=registered)
    assert result.code == 0, result.err
    assert "warning" not in result.err



def register(cli: Callable[..., Result], repo: Path, inputs: Path, *version: str) -> Result:
    return cli("register", NAME, *version, "--card", str(inputs / "card.yaml"),
               "--artifact", str(inputs / "model.safetensors"), cwd=repo)


def test_bump_skips_versions_claimed_by_open_registration_branches(
    registered: Path, inputs: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    from tests.conftest import new_weights

    new_weights(inputs, seed=7)
    result = register(cli, registered, inputs, "--bump", "minor")
    assert result.code == 0, result.err
    assert git(registered, "branch", "--show-current").strip() == f"register/{NAME}/1.2.0"
    git(registered, "push", "--quiet", "origin", f"register/{NAME}/1.2.0")
    git(registered, "switch", "--quiet", "main")
    # Only on origin now: the local branch is gone, the proposal is still open there.
    git(registered, "branch", "--quiet", "-D", f"register/{NAME}/1.2.0")
    git(registered, "branch", "--quiet", "-D", "-r", f"origin/register/{NAME}/1.2.0")
    new_weights(inputs, seed=8)
    result = register(cli, registered, inputs, "--bump", "minor")
    assert result.code == 0, result.err
    assert git(registered, "branch", "--show-current").strip() == f"register/{NAME}/1.3.0"


def test_leftovers_of_an_unmerged_branch_are_told_apart_from_a_registered_version(
    registered: Path, inputs: Path, cli: Callable[..., Result]
) -> None:
    from tests.conftest import new_weights, snapshot

    new_weights(inputs, seed=9)
    assert register(cli, registered, inputs, "1.2.0").code == 0
    git(registered, "switch", "--quiet", "main")
    leftover = registered / "models" / NAME / "1.2.0"
    assert leftover.is_dir()  # git leaves the DVC-tracked (git-ignored) weights behind
    git(registered, "branch", "--quiet", "-D", f"register/{NAME}/1.2.0")
    before = snapshot(registered)
    result = register(cli, registered, inputs, "1.2.0")
    assert result.code == 2
    assert "leftovers of an unmerged branch" in result.err
    assert f"rm -rf models/{NAME}/1.2.0" in result.err
    assert snapshot(registered) == before
    # A version that is registered on this branch keeps its own message.
    result = register(cli, registered, inputs, "1.1.0")
    assert result.code == 2 and "versions are immutable" in result.err


def card_listing(inputs: Path, **override: object) -> Path:
    """The card a training job writes: every field, artifacts with their digests included."""
    import hashlib

    from tests.conftest import CARD

    data = (inputs / "model.safetensors").read_bytes()
    entry = {"path": "model.safetensors", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "storage": "git", **override}  # storage is the registry's choice
    card = inputs / "full-card.yaml"
    card.write_text(CARD + "artifacts:\n- " + json.dumps(entry) + "\n")
    return card


def test_register_accepts_a_card_whose_artifacts_agree_with_the_files(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result]
) -> None:
    card = card_listing(inputs)
    result = cli("register", NAME, "1.0.0", "--card", str(card), "--artifact", str(inputs / "model.safetensors"),
                 "--json", cwd=registry_dir)
    assert result.code == 0, result.err
    written = (registry_dir / "models" / NAME / "1.0.0" / "card.yaml").read_text()
    assert json.loads(card.read_text().split("- ", 1)[1].splitlines()[0])["sha256"] in written


def test_register_refuses_a_card_whose_digest_disagrees_and_changes_nothing(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    from tests.conftest import index_tree, snapshot

    card = card_listing(inputs, sha256="0" * 64)
    before, tree = snapshot(registry_dir, tmp_path / "dvc-remote"), index_tree(registry_dir)
    result = cli("register", NAME, "1.0.0", "--card", str(card), "--artifact", str(inputs / "model.safetensors"),
                 cwd=registry_dir)
    assert result.code == 1
    assert f"{card}:7: artifacts[0].sha256: is '{'0' * 64}' but {inputs / 'model.safetensors'} has" in result.err
    assert snapshot(registry_dir, tmp_path / "dvc-remote") == before and index_tree(registry_dir) == tree
    assert git(registry_dir, "branch", "--list", f"register/{NAME}/*").strip() == ""


def test_register_refuses_a_card_that_leaves_a_given_file_out(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result]
) -> None:
    card = card_listing(inputs)
    result = cli("register", NAME, "1.0.0", "--card", str(card), "--artifact", str(inputs / "model.safetensors"),
                 "--artifact", str(inputs / "config.json"), cwd=registry_dir)
    assert result.code == 1
    assert f"{card}:6: artifacts: does not list config.json, given with --artifact" in result.err


def test_resolve_reads_main_unless_told_otherwise(registered: Path, cli: Callable[..., Result]) -> None:
    import registry
    from registry.errors import UsageError

    assert cli("promote", NAME, "1.0.0", "--to", "staging", "--reason", "r", "--no-branch", cwd=registered).code == 0
    # An unmerged promotion, checked out: a proposal, not what staging serves.
    assert cli("promote", NAME, "1.1.0", "--to", "staging", "--reason", "r", cwd=registered).code == 0
    reg = registry.open(registered)
    assert reg.resolve(NAME, "staging") == "1.0.0"
    assert reg.resolve(NAME, "staging", at=None) == "1.1.0"
    assert reg.resolve(NAME, "staging", at=f"promote/{NAME}/1.1.0-to-staging") == "1.1.0"
    assert reg.resolve(NAME, "production") is None
    with pytest.raises(UsageError, match="no such commit, branch or tag"):
        reg.resolve(NAME, at="no-such-branch")


def test_register_on_a_terminal_leaves_no_visible_escape_codes(registry_dir: Path, inputs: Path) -> None:
    import os
    import pty
    import re
    import sys

    pid, fd = pty.fork()
    if pid == 0:  # the child: register on a terminal, so the progress bars are drawn
        os.chdir(registry_dir)
        os.execv(sys.executable, [sys.executable, "-m", "registry", "register", NAME, "1.0.0", "--card",
                                  str(inputs / "card.yaml"), "--artifact", str(inputs / "model.safetensors")])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    shown = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", out)  # what the terminal interprets
    assert b"Registered credit-approval@1.0.0" in shown
    assert b"\x1b" not in shown and b"[0m" not in shown, shown[-200:]
    assert b"push to the DVC remote" in out


def test_watch_start_event_names_the_registry_it_pulls_from(registry_dir: Path, tmp_path: Path) -> None:
    import threading

    from registry.serving.puller import Puller

    origin, serve = str(tmp_path / "origin.git"), tmp_path / "serve"
    Puller(serve, stage="production", source=origin, insecure_skip_signature=True).poll()
    events: list[dict[str, object]] = []
    stopped = threading.Event()
    stopped.set()  # one start event, then stop
    Puller(serve, stage="production", insecure_skip_signature=True, on_event=events.append,
           stop=stopped).watch(1)
    assert events[0]["event"] == "watching"
    assert events[0]["source"] == origin


@pytest.mark.parametrize("reason", ["ok \x1b[2J", "ok \u202eevil", "ok \x07"])
def test_a_reason_with_control_characters_is_refused_whoever_proposes_it(
    registered: Path, cli: Callable[..., Result], reason: str
) -> None:
    from tests.conftest import snapshot

    before = snapshot(registered)
    result = cli("promote", NAME, "1.0.0", "--to", "staging", "--reason", reason, cwd=registered)
    assert result.code == 2
    assert "is a control or bidirectional-override character" in result.err and "\x1b" not in result.err
    assert snapshot(registered) == before


def test_the_unsigned_warning_follows_the_models_own_policy(registered: Path, cli: Callable[..., Result]) -> None:
    model_yaml = registered / "models" / NAME / "model.yaml"
    model_yaml.write_text(model_yaml.read_text() + "policy: {staging: {require_signature: true}}\n")
    git(registered, "commit", "--quiet", "-am", "staging needs a signature for this model")
    result = cli("promote", NAME, "1.1.0", "--to", "staging", "--reason", "r", cwd=registered)
    assert result.code == 0, result.err
    assert f"registry sign {NAME}@1.1.0 --key KEY --no-branch" in result.err


def test_check_before_fetch_says_to_fetch_first(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    import shutil

    assert register(cli, registry_dir, inputs, "1.0.0").code == 0
    git(registry_dir, "push", "--quiet", "origin", f"register/{NAME}/1.0.0")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", "--branch", f"register/{NAME}/1.0.0", str(tmp_path / "origin.git"),
        str(clone))
    git(clone, "fetch", "--quiet", "origin", "main:refs/remotes/origin/main")
    shutil.rmtree(tmp_path / "dvc-remote")  # the weights are nowhere this machine can read
    result = cli("check", "--base", "origin/main", cwd=clone)
    assert result.code == 1
    assert "models/credit-approval/1.0.0/model.safetensors: not available to scan" in result.out
    assert "hint: some artifacts are not on this machine; run `registry fetch --base origin/main` first" in result.err


def test_scan_calls_the_entrypoint_model_code_not_nothing_executable(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    from tests.conftest import CARD

    (inputs / "predict.py").write_text("def load(path):\n    return None\n\n\ndef predict(model, inputs):\n"
                                       "    return inputs\n")
    (inputs / "code-card.yaml").write_text(CARD + "entrypoint: predict.py\ninput_example: [1]\n")
    result = cli("register", NAME, "1.0.0", "--card", str(inputs / "code-card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), "--artifact", str(inputs / "predict.py"),
                 cwd=registry_dir)
    assert result.code == 0, result.err
    report = tmp_path / "report.json"
    cli("check", "--base", "main", "--json", str(report), cwd=registry_dir)
    scans = {g["message"].split(":")[0]: g["message"] for g in json.loads(report.read_text())["gates"]
             if g["gate"] == "scan"}
    assert scans[f"models/{NAME}/1.0.0/predict.py"].endswith(
        "model code (the card's entrypoint): no loader runs it; the smoke, latency and metrics gates run it "
        "in their sandbox")
    assert scans[f"models/{NAME}/1.0.0/model.safetensors"].endswith("safetensors, nothing executable")


def test_ls_tag_matches_card_tags_unless_model_yaml_sets_the_key(
    registry_dir: Path, inputs: Path, cli: Callable[..., Result]
) -> None:
    from tests.conftest import CARD

    (inputs / "tagged.yaml").write_text(CARD + "tags: {dataset: march, team: card-team}\n")
    assert cli("register", NAME, "1.0.0", "--card", str(inputs / "tagged.yaml"), "--artifact",
               str(inputs / "model.safetensors"), "--no-branch", cwd=registry_dir).code == 0
    model_yaml = registry_dir / "models" / NAME / "model.yaml"
    model_yaml.write_text("".join(line for line in model_yaml.read_text().splitlines(keepends=True)
                                  if not line.startswith("tags:")) + "tags: {team: risk}\n")
    git(registry_dir, "commit", "--quiet", "-am", "team")

    def names(tag: str) -> list[str]:
        result = cli("ls", "--tag", tag, "--json", cwd=registry_dir)
        assert result.code == 0, result.err
        return [m["name"] for m in json.loads(result.out)]

    assert names("dataset=march") == [NAME]  # the card's tag
    assert names("team=risk") == [NAME]  # model.yaml's
    assert names("team=card-team") == []  # model.yaml sets team: it wins
    assert names("dataset=april") == []

"""`registry demo`: the whole story, end to end, offline, on embedded defaults.

An admin makes a registry (local bare origin, local DVC remote), trusts a release
key and pins a hold-out set with DVC. A data scientist trains two real models on
scikit-learn's bundled digits (v1 logistic regression, v2 a small MLP), exports them
to safetensors with a NumPy-only entrypoint, and registers both, signed. The gates
run on every pull request (metrics recomputed on the hold-out set, smoke, latency,
scan...), a reviewer merges, and a serving folder pulls production and predicts
through the Python API. v2 goes through canary to production; the audit log shows
who did what; production is rolled back; a tampered artifact is refused while the
last good version keeps serving; a pull request with a malicious pickle is refused.
Every step is a real `registry` (or `git`, `dvc`) command, printed as it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import RegistryError, UsageError

SCIENTIST = ("Dana Scientist", "dana@example.com")
REVIEWER = ("Rita Reviewer", "rita@example.com")
ADMIN = ("Alex Admin", "alex@example.com")
MODEL = "digits"
HOLDOUT = "datasets/digits-holdout.npz"


class _Story:
    def __init__(self, root: Path, echo: Callable[[str], None]) -> None:
        self.root = root
        self.registry = root / "registry"
        self.echo = echo
        # The demo's repositories stand alone even inside another work tree (make demo writes ./demo
        # inside this project's checkout): git must not look above the demo folder.
        self.env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(root / "home"), DVC_NO_ANALYTICS="1",
                        COLUMNS="120", GIT_CEILING_DIRECTORIES=str(root.parent))
        self.pr = 0

    def as_user(self, who: tuple[str, str]) -> dict[str, str]:
        name, email = who
        return dict(self.env, GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email,
                    GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)

    def say(self, text: str) -> None:
        self.echo("")
        self.echo(f"## {text}")

    def run(self, argv: list[str], shown: str, *, who: tuple[str, str] = SCIENTIST, cwd: Path | None = None,
            expect: int = 0, show_output: bool = True, keep: Callable[[str], bool] | None = None) -> str:
        self.echo(f"$ {shown}")
        proc = subprocess.run(argv, cwd=cwd or self.registry, env=self.as_user(who), capture_output=True,
                              text=True, check=False)
        output = (proc.stdout + proc.stderr).rstrip()
        if keep is not None:
            output = "\n".join(line for line in output.splitlines() if keep(line))
        if show_output and output:
            self.echo(textwrap.indent(output, "  "))
        if proc.returncode != expect:
            raise UsageError(f"demo step failed (exit {proc.returncode}, expected {expect}): {shown}\n{output}")
        return proc.stdout

    def registry_cmd(self, *args: str, **options: Any) -> str:
        shown = "registry " + " ".join(a if " " not in a else repr(a) for a in args)
        shown = shown.replace(str(self.root) + "/", "")
        return self.run([sys.executable, "-m", "registry", *args], shown, **options)

    def git(self, *args: str, who: tuple[str, str] = SCIENTIST, cwd: Path | None = None) -> str:
        return subprocess.run(["git", *args], cwd=cwd or self.registry, env=self.as_user(who),
                              capture_output=True, text=True, check=True).stdout

    def check(self, branch: str, *, expect: int = 0, full: bool = False, summary: bool = False) -> None:
        """What CI does on the pull request: pull the changed versions' files, run the gates
        (and, with summary, show the Markdown summary the reviewer reads on the PR)."""
        self.git("switch", "--quiet", branch)
        self.git("fetch", "--quiet", "origin")
        self.registry_cmd("fetch", "--base", "origin/main", show_output=False)

        def keep(line: str) -> bool:
            return full or line.startswith("FAIL") or "gate" in line or line.startswith(("all gates", "ok   metrics"))

        if not summary:
            self.registry_cmd("check", "--base", "origin/main", expect=expect, keep=keep)
            return
        written = self.root / "work" / "summary.md"
        self.registry_cmd("check", "--base", "origin/main", "--summary", str(written), expect=expect, keep=keep)
        self.echo("  The summary on the pull request (check --summary), as the reviewer reads it:")
        self.echo(textwrap.indent(_summary_head(written.read_text()), "    "))

    def merge(self, branch: str) -> None:
        """What a reviewer's merge button does: a --no-ff merge into main, pushed."""
        self.pr += 1
        self.git("switch", "--quiet", "main")
        self.git("merge", "--quiet", "--no-ff", branch, "-m", f"Merge pull request #{self.pr} from demo/{branch}",
                 who=REVIEWER)
        self.git("push", "--quiet", "origin", "main", who=REVIEWER)
        self.echo(f"  (reviewer {REVIEWER[0]} approves and merges PR #{self.pr}: {branch})")

    def pull(self, into: str, *, expect: int = 0) -> None:
        self.registry_cmd("pull", "--stage", "production", "--with-canary", "--host", "web-1",
                          "--host-key", str(self.root / "keys/web-1.key"),
                          "--from", str(self.root / "origin.git"),
                          "--to", str(self.root / into), "--trusted-keys", str(self.root / "keys/release.pub"),
                          cwd=self.root, expect=expect)

    def write_version(self, label: str, trained: Any, holdout_sha256: str, example: list[list[float]]) -> Path:
        from safetensors.numpy import save_file

        folder = self.root / "work" / label
        folder.mkdir(parents=True)
        save_file(trained.tensors, str(folder / "model.safetensors"))
        (folder / "predict.py").write_text(trained.predict_source)
        # The model's own environment: the gates run predict.py with a Python built from this
        # file (docs/model-code.md), not in the registry's. Pinned to what trained it here.
        (folder / "requirements.txt").write_text("".join(f"{name}=={metadata.version(name)}\n"
                                                         for name in ("numpy", "safetensors")))
        card = {
            "description": f"Handwritten digit classifier (8x8 images), {trained.algorithm}.",
            "creator": "@dana", "framework": "numpy", "task": "image-classification",
            "algorithm": trained.algorithm,
            "metrics": {"accuracy": round(trained.accuracy, 4)},
            "hyperparameters": trained.hyperparameters,
            "training": {"data": {"path": "sklearn.datasets.load_digits", "hash": "first 1400 of seed-0 order"},
                         "samples": 1400},
            "entrypoint": "predict.py",
            "environment": "requirements.txt",
            "signature": {"inputs": [{"name": "pixels", "type": "float32", "shape": [None, 64]}],
                          "outputs": [{"name": "digit", "type": "int64", "shape": [None]}]},
            "input_example": example,
            "evaluation": {"data": {"path": HOLDOUT, "hash": holdout_sha256}, "metrics": ["accuracy"],
                           "tolerance": 0.001},
            "intended_use": "Demonstrates the registry workflow.",
            "limitations": "8x8 grey-scale digits only.",
        }
        from registry.files import yamlio

        (folder / "card.yaml").write_text(yamlio.dumps(card))
        return folder


def _summary_head(markdown: str) -> str:
    """The summary's per-model part (why, what changes, the comparison with production), down
    to its first collapsed section; the gate table above it is what `check` printed."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("### ")), 0)
    end = next((i for i, line in enumerate(lines) if line.startswith("<details")), len(lines))
    return "\n".join(line for line in lines[start:end] if line.strip())


def run(directory: Path | None, echo: Callable[[str], None] = print) -> Path:
    from registry.integrations import demo_models, demo_serving

    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="registry-demo-"))
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} is not empty; give a new folder for the demo")
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    story = _Story(root, echo)
    (root / "home").mkdir()
    echo(f"Demo in {root}")

    story.say("An admin makes the registry: a local bare origin, a local DVC remote, a release key")
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(root / "origin.git")], check=True)
    story.registry_cmd("init", str(story.registry), "--dvc-remote", str(root / "dvc-storage"), cwd=root, who=ADMIN)
    story.git("remote", "add", "origin", str(root / "origin.git"))
    (root / "keys").mkdir()
    story.registry_cmd("keys", "generate", "--out", str(root / "keys/release"), cwd=root, who=ADMIN)
    story.registry_cmd("keys", "generate", "--out", str(root / "keys/web-1"), cwd=root, who=ADMIN, show_output=False)
    (story.registry / "keys").mkdir()
    (story.registry / "keys/release.pub").write_bytes((root / "keys/release.pub").read_bytes())
    config = story.registry / "registry.yaml"
    config.write_text(config.read_text().replace("trusted_keys: []", "trusted_keys:\n- keys/release.pub")
                      .replace("admin: []", "admin:\n  - '@alex'"))
    x_train, y_train, x_test, y_test = demo_models.digits()
    demo_models.write_holdout(story.registry / HOLDOUT, x_test, y_test)
    echo("  (the hold-out set is pinned with DVC, so the metrics gate recomputes accuracy on it)")
    story.run([sys.executable, "-m", "dvc", "add", "--quiet", HOLDOUT], f"dvc add {HOLDOUT}", who=ADMIN)
    story.run([sys.executable, "-m", "dvc", "push", "--quiet"], "dvc push", who=ADMIN, show_output=False)
    story.registry_cmd("codeowners", who=ADMIN)
    story.git("add", "-A", who=ADMIN)
    story.git("commit", "--quiet", "-m", "Trust the release key, pin the digits hold-out set", who=ADMIN)
    story.git("push", "--quiet", "-u", "origin", "main", who=ADMIN)
    import hashlib

    holdout_sha = hashlib.sha256((story.registry / HOLDOUT).read_bytes()).hexdigest()
    example = [[float(v) for v in row] for row in x_test[:2]]

    story.say("A data scientist trains v1 (logistic regression) and v2 (MLP) on scikit-learn's digits")
    v1 = demo_models.train_logistic(x_train, y_train, x_test, y_test)
    v2 = demo_models.train_mlp(x_train, y_train, x_test, y_test)
    echo(f"  v1 hold-out accuracy {v1.accuracy:.4f}; v2 {v2.accuracy:.4f} (weights exported to safetensors)")
    for label, trained, version in (("v1", v1, "1.0.0"), ("v2", v2, "1.1.0")):
        work = story.write_version(label, trained, holdout_sha, example)
        story.git("switch", "--quiet", "main")
        story.registry_cmd("register", MODEL, version, "--card", str(work / "card.yaml"),
                           "--artifact", str(work / "model.safetensors"), "--artifact", str(work / "predict.py"),
                           "--artifact", str(work / "requirements.txt"),
                           "--sign-key", str(root / "keys/release.key"), "--push")
        story.echo("  CI runs the gates on the pull request:")
        story.check(f"register/{MODEL}/{version}", full=version == "1.0.0")
        story.merge(f"register/{MODEL}/{version}")

    story.say("v1 goes to staging, then production; each promotion is a one-line PR with its own gates")
    for stage in ("staging", "production"):
        story.registry_cmd("promote", MODEL, "1.0.0", "--to", stage, "--reason", f"v1 to {stage}", "--push")
        story.check(f"promote/{MODEL}/1.0.0-to-{stage}")
        story.merge(f"promote/{MODEL}/1.0.0-to-{stage}")

    story.say("A serving host pulls production (and any canary), verifies digests and signature, and predicts via the Python API")
    story.pull("serving")
    serve_and_predict(story, x_test, y_test)

    port = demo_serving.free_port()
    story.say("It serves them over HTTP with the built-in server (Open Inference Protocol V2), which follows the folder")
    echo(f"$ registry serve serving --port {port} &")
    command = [str(Path(sys.executable).parent / "registry"), "serve", str(root / "serving"), "--port", str(port),
               "--poll", "0.2"]
    with demo_serving.running(command, story.env, root / "serve.log", port):
        _serve_the_rest(story, port, x_test)

    story.say("A pull request that smuggles a malicious pickle is refused, and nothing is executed")
    work = root / "work/evil"
    work.mkdir(parents=True)
    (work / "card.yaml").write_text((root / "work/v2/card.yaml").read_text())
    (work / "model.safetensors").write_bytes((root / "work/v2/model.safetensors").read_bytes())
    (work / "predict.py").write_text(v2.predict_source)
    (work / "requirements.txt").write_text((root / "work/v2/requirements.txt").read_text())
    marker = root / "pwned"
    payload = (b"\x80\x04\x95" + (0).to_bytes(8, "little") + b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94"
               + b"\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x94\x85\x94R\x94.")
    (work / "tokenizer.pkl").write_bytes(payload)
    story.git("switch", "--quiet", "main")
    story.registry_cmd("register", MODEL, "1.2.0", "--card", str(work / "card.yaml"),
                       "--artifact", str(work / "model.safetensors"), "--artifact", str(work / "predict.py"),
                       "--artifact", str(work / "requirements.txt"), "--artifact", str(work / "tokenizer.pkl"),
                       "--push")
    story.check(f"register/{MODEL}/1.2.0", expect=1)
    echo(f"  payload executed: {marker.exists()}")
    story.git("switch", "--quiet", "main")
    # The PR is closed: its branch goes, and so do the untracked weights git left behind.
    story.git("branch", "--quiet", "-D", f"register/{MODEL}/1.2.0")
    import shutil

    shutil.rmtree(story.registry / f"models/{MODEL}/1.2.0", ignore_errors=True)
    story.registry_cmd("validate")

    story.say("The audit log, from git history alone")
    story.registry_cmd("log", MODEL)
    story.registry_cmd("ls")
    echo("")
    echo(f"Done. Look around: cd {story.registry} && git log --graph --oneline; open the serving folder {root / 'serving'}")
    return root


def _serve_the_rest(story: _Story, port: int, x_test: np.ndarray) -> None:
    """Canary, promotion and rollback as the built-in server sees them, with clients asking all along."""
    from registry.integrations import demo_serving

    echo, root = story.echo, story.root
    body = demo_serving.v2_request(x_test[:2].tolist())
    client = demo_serving.Client(port, MODEL)
    try:
        answer = client.infer(body)
    finally:
        client.close()
    echo(f"  POST /v2/models/{MODEL}/infer (2 images) → HTTP {answer.status}, X-Model-Version: {answer.version}, "
         f"digits {answer.outputs}")

    story.say("v2 goes through staging to a 10% canary; each promotion is a one-line PR with its own gates")
    for stage, extra in (("staging", []), ("canary", ["--traffic", "0.1"])):
        story.registry_cmd("promote", MODEL, "1.1.0", "--to", stage, *extra, "--reason", f"v2 to {stage}", "--push")
        story.check(f"promote/{MODEL}/1.1.0-to-{stage}")
        story.merge(f"promote/{MODEL}/1.1.0-to-{stage}")
    story.registry_cmd("manifest", "--stage", "canary")

    story.say("Someone tampered with v2's weights in storage: the serving host refuses the canary and keeps v1")
    pointer = (story.registry / f"models/{MODEL}/1.1.0/model.safetensors.dvc").read_text()
    md5 = pointer.split("md5: ")[1].split()[0]
    blob = root / "dvc-storage/files/md5" / md5[:2] / md5[2:]
    good = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    echo(f"  (one bit of {blob.relative_to(root)} flipped)")
    story.pull("serving", expect=1)
    answered = demo_serving.split(port, MODEL, body, 200)
    echo(f"  200 requests: answered by {dict(answered)}")
    blob.write_bytes(good)
    echo("  (storage restored from backup; the next pull takes the canary)")
    story.pull("serving")

    story.say("The canary answers its share of live requests (X-Model-Version says which version did)")
    time.sleep(1.0)  # the server loads 1.1.0 beside 1.0.0 and checks it before routing to it
    count = 1000
    answered = demo_serving.split(port, MODEL, body, count)
    low, high = demo_serving.binomial_range(0.1, count)
    share = answered["1.1.0"] / count
    echo(f"  {count} requests: 1.0.0 answered {answered['1.0.0']}, 1.1.0 answered {answered['1.1.0']} "
         f"({share:.1%}; the share is 10%, and 3 standard deviations allow {low:.1%}–{high:.1%})")
    if not low <= share <= high:
        raise RegistryError(f"the canary answered {share:.1%} of requests, outside {low:.1%}–{high:.1%}")

    story.say("v2 goes to production; the host hot-swaps it while clients keep asking")
    story.registry_cmd("promote", MODEL, "1.1.0", "--to", "production", "--reason", "v2 to production", "--push")
    diff = story.git("diff", "main", f"promote/{MODEL}/1.1.0-to-production", "--", f"models/{MODEL}/stages.yaml")
    echo("  The diff the reviewer reads:")
    echo(textwrap.indent("\n".join(line for line in diff.splitlines()
                                   if line[:1] in "+-" and line[:3] not in ("+++", "---")), "    "))
    story.check(f"promote/{MODEL}/1.1.0-to-production", summary=True)
    story.merge(f"promote/{MODEL}/1.1.0-to-production")
    _swap_under_load(story, port, body, "1.1.0")

    story.say("Incident: roll production back to v1 (a PR like any other; v1 is still on the host)")
    story.registry_cmd("rollback", MODEL, "--reason", "v2 misreads 7s in production", "--push")
    story.check(f"rollback/{MODEL}/1.0.0")
    story.merge(f"rollback/{MODEL}/1.0.0")
    _swap_under_load(story, port, body, "1.0.0")
    echo("  What served where and when, from the receipts the host signed with its own key:")
    story.registry_cmd("served", "--receipts", str(root / "serving/receipts.jsonl"),
                       "--trusted-keys", str(root / "keys/web-1.pub"), cwd=root)


def _swap_under_load(story: _Story, port: int, body: bytes, version: str) -> None:
    from registry.integrations import demo_serving

    with demo_serving.Load(port, MODEL, body) as load:
        time.sleep(0.5)
        story.pull("serving")
        load.wait_for(version)
    story.echo(f"  {load.total} requests while the server swapped to {version}: {load.failed} failed; "
               f"answered by {dict(sorted(load.answered.items()))}")
    if load.failed:
        raise RegistryError(f"{load.failed} requests failed during the swap to {version}")


def serve_and_predict(story: _Story, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """What serving code does: read the state the pull wrote, load the current version, predict."""
    import importlib.util

    current = story.root / "serving" / MODEL / "current"
    spec = importlib.util.spec_from_file_location("demo_entrypoint", current / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.load(str(current))
    predicted = np.asarray(module.predict(model, x_test))
    version = current.resolve().name
    story.echo(f"  python: load {MODEL}/current ({version}) → predict {len(y_test)} hold-out digits: "
               f"accuracy {np.mean(predicted == y_test):.4f}; first five {predicted[:5].tolist()}")

"""`registry demo`: the whole story, end to end, on embedded defaults.

A data scientist trains two versions of a small real model, registers them and
asks for promotions; a reviewer merges each pull request (here: `git merge --no-ff`
into a local bare origin); the registry then answers what is in production and
who changed what. Every step is a real `registry` command, printed as it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np

from registry.errors import UsageError

SCIENTIST = ("Dana Scientist", "dana@example.com")
REVIEWER = ("Rita Reviewer", "rita@example.com")

PREDICT_PY = '''\
"""Entry point: load(path) and predict(model, inputs), NumPy only."""
import numpy as np
from safetensors.numpy import load_file


def load(path):
    return load_file(f"{path}/model.safetensors")


def predict(model, inputs):
    x = np.asarray(inputs, dtype=np.float32)
    logits = x @ model["weight"] + model["bias"]
    return (logits > 0).astype(int).tolist()
'''


def make_data(seed: int = 7, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes in 8 features of unequal noise: a small, honest task
    on which longer training pays off."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = np.array([0.6, 4.0, 0.8, 4.0, 1.0, 5.0, 0.7, 3.0])
    separation = np.array([1.0, 2.5, 1.0, 2.5, 1.0, 2.5, 1.0, 2.5])
    centers = np.where(y[:, None] == 1, 0.5, -0.5) * separation
    x = (centers + rng.normal(0, 1, size=(n, 8)) * noise).astype(np.float32)
    return x, y


def train(x: np.ndarray, y: np.ndarray, steps: int, lr: float = 0.1) -> dict[str, np.ndarray]:
    """Logistic regression by gradient descent."""
    w = np.zeros(x.shape[1], dtype=np.float32)
    b = np.zeros(1, dtype=np.float32)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= lr * (x.T @ (p - y) / len(y)).astype(np.float32)
        b -= lr * np.array([np.mean(p - y)], dtype=np.float32)
    return {"weight": w, "bias": b}


def accuracy(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(((x @ model["weight"] + model["bias"]) > 0).astype(int) == y))


class _Story:
    def __init__(self, root: Path, echo: Callable[[str], None]) -> None:
        self.root = root
        self.registry = root / "registry"
        self.echo = echo
        self.env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(root / "home"),
                        DVC_NO_ANALYTICS="1", COLUMNS="120")
        self.pr = 0

    def as_user(self, who: tuple[str, str]) -> dict[str, str]:
        name, email = who
        return dict(self.env, GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email,
                    GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)

    def say(self, text: str) -> None:
        self.echo("")
        self.echo(f"## {text}")

    def registry_cmd(self, *args: str, cwd: Path | None = None, show: bool = True) -> str:
        shown = " ".join(a if " " not in a else repr(a) for a in args)
        if show:
            self.echo(f"$ registry {shown}")
        proc = subprocess.run([sys.executable, "-m", "registry", *args], cwd=cwd or self.registry,
                              env=self.as_user(SCIENTIST), capture_output=True, text=True, check=False)
        output = (proc.stdout + proc.stderr).rstrip()
        if show and output:
            self.echo(textwrap.indent(output, "  "))
        if proc.returncode != 0:
            raise UsageError(f"demo step failed: registry {shown}")
        return proc.stdout

    def git(self, *args: str, who: tuple[str, str] = SCIENTIST, cwd: Path | None = None) -> str:
        return subprocess.run(["git", *args], cwd=cwd or self.registry, env=self.as_user(who),
                              capture_output=True, text=True, check=True).stdout

    def merge(self, branch: str) -> None:
        """What a reviewer's merge button does: a --no-ff merge into main, pushed."""
        self.pr += 1
        self.git("switch", "--quiet", "main")
        self.git("merge", "--quiet", "--no-ff", branch, "-m",
                 f"Merge pull request #{self.pr} from demo/{branch}", who=REVIEWER)
        self.git("push", "--quiet", "origin", "main")
        self.echo(f"  (reviewer {REVIEWER[0]} approves and merges PR #{self.pr}: {branch})")

    def write_version(self, label: str, model: dict[str, np.ndarray], acc: float, steps: int) -> Path:
        from safetensors.numpy import save_file

        folder = self.root / "work" / label
        folder.mkdir(parents=True)
        save_file(model, str(folder / "model.safetensors"))
        (folder / "predict.py").write_text(PREDICT_PY)
        (folder / "card.yaml").write_text(textwrap.dedent(f"""\
            description: Approves or declines credit applications from 8 numeric features.
            creator: "@dana"
            framework: numpy
            task: binary-classification
            algorithm: logistic-regression
            metrics: {{accuracy: {acc:.4f}}}
            hyperparameters: {{steps: {steps}, learning_rate: 0.1}}
            training: {{data: {{path: synthetic://gaussians, hash: seed-7}}, samples: 1500}}
            entrypoint: predict.py
            signature:
              inputs: [{{name: features, type: float32, shape: [null, 8]}}]
              outputs: [{{name: approved, type: int64, shape: [null]}}]
            input_example: [[0.5, -0.2, 1.1, 0.0, 0.3, -0.7, 0.9, 0.1]]
            intended_use: Demo of the registry workflow; not for real credit decisions.
            """))
        return folder


def run(directory: Path | None, echo: Callable[[str], None] = print) -> Path:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="registry-demo-"))
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} is not empty; give a new folder for the demo")
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    story = _Story(root, echo)
    (root / "home").mkdir()
    echo(f"Demo registry in {root}")

    story.say("An admin makes the registry, with a local bare origin and a local DVC remote")
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(root / "origin.git")], check=True)
    story.registry_cmd("init", str(story.registry), "--dvc-remote", str(root / "dvc-storage"), cwd=root)
    story.git("remote", "add", "origin", str(root / "origin.git"))
    story.git("push", "--quiet", "-u", "origin", "main")

    story.say("A data scientist trains v1 (NumPy logistic regression) and registers it")
    x, y = make_data()
    train_x, train_y, test_x, test_y = x[:1500], y[:1500], x[1500:], y[1500:]
    v1 = train(train_x, train_y, steps=300)
    acc1 = accuracy(v1, test_x, test_y)
    work = story.write_version("v1", v1, acc1, steps=300)
    story.registry_cmd("register", "credit-approval", "1.0.0", "--card", str(work / "card.yaml"),
                       "--artifact", str(work / "model.safetensors"), "--artifact", str(work / "predict.py"),
                       "--push")
    story.merge("register/credit-approval/1.0.0")

    story.say("...then trains v2 longer, and registers it as the next minor version")
    v2 = train(train_x, train_y, steps=1000)
    acc2 = accuracy(v2, test_x, test_y)
    work = story.write_version("v2", v2, acc2, steps=1000)
    story.registry_cmd("register", "credit-approval", "--bump", "minor", "--card", str(work / "card.yaml"),
                       "--artifact", str(work / "model.safetensors"), "--artifact", str(work / "predict.py"),
                       "--push")
    story.merge("register/credit-approval/1.1.0")

    story.say("Promotions are pull requests that edit one line of stages.yaml")
    story.registry_cmd("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "offline eval ok", "--push")
    story.merge("promote/credit-approval/1.0.0-to-staging")
    story.registry_cmd("promote", "credit-approval", "1.0.0", "--to", "production", "--reason", "first release", "--push")
    story.merge("promote/credit-approval/1.0.0-to-production")
    story.registry_cmd("promote", "credit-approval", "1.1.0", "--to", "staging", "--reason",
                       f"accuracy {acc2:.3f} vs {acc1:.3f}", "--push")
    story.merge("promote/credit-approval/1.1.0-to-staging")
    story.registry_cmd("promote", "credit-approval", "1.1.0", "--to", "production", "--reason",
                       "better accuracy on hold-out", "--push")
    echo("  The diff the reviewer reads:")
    diff = story.git("diff", "main", "promote/credit-approval/1.1.0-to-production", "--", "models/credit-approval/stages.yaml")
    echo(textwrap.indent("\n".join(line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")), "    "))
    story.merge("promote/credit-approval/1.1.0-to-production")

    story.say("What is registered, and where")
    story.registry_cmd("ls")
    story.registry_cmd("validate")
    story.say("What serving pulls")
    story.registry_cmd("manifest", "--stage", "production")
    story.say("Who changed what, from git history")
    story.registry_cmd("log", "credit-approval")
    story.say("The weights are in DVC, not git: a fresh clone plus `dvc pull` gives the same bytes")
    clone = root / "clone"
    story.git("clone", "--quiet", str(root / "origin.git"), str(clone), cwd=root)
    from registry import storage

    storage.pull(clone, ["models/credit-approval/1.1.0/model.safetensors.dvc"])
    same = (clone / "models/credit-approval/1.1.0/model.safetensors").read_bytes() == \
        (root / "work/v2/model.safetensors").read_bytes()
    echo(f"  identical bytes after dvc pull: {same}")
    if not same:
        raise UsageError("demo: the pulled weights differ from what was registered")
    echo("")
    echo(f"Done. Look around: cd {story.registry} && git log --graph --oneline")
    return root

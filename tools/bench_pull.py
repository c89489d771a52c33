"""Benchmark `registry pull`: the cost of a poll with nothing new, and download + verify throughput.

Builds, in a temporary folder, a registry with a local bare origin and a local DVC
remote holding two signed versions of one model with a large artifact (--mb), then
measures against baselines taken in the same run:

- an unchanged poll (``Puller.poll``) against one bare ``git ls-remote`` of the origin
  (the poll's only git call) -- the target is <= 100 ms per poll;
- a first pull and a promotion (download, sha256 while copying, signature, rename,
  switch) against copying the object file and hashing it, each once, separately.

    .venv/bin/python tools/bench_pull.py [--mb 200] [--polls 50]

Files are in the page cache when read: this measures the client, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CARD = """\
description: Benchmark model
framework: numpy
task: classification
metrics: {accuracy: 0.95}
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_ms(action: Callable[[], object], runs: int) -> float:
    return statistics.median(timed(action) for _ in range(runs)) * 1000


def build(base: Path, megabytes: int) -> tuple[Path, Path, Path]:
    """(origin, public key, the DVC remote) with m@1.0.0 in production and m@1.1.0 in staging."""
    from registry import api
    from registry.signing.bundle import sign_folder
    from registry.signing.keys import generate_keypair, read_private_key

    origin = base / "origin.git"
    git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(origin, "config", "uploadpack.allowFilter", "true")
    reg = api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
    key, public = generate_keypair(base / "release")
    for version in ("1.0.0", "1.1.0"):
        folder = base / f"in-{version}"
        folder.mkdir()
        with open(folder / "weights.bin", "wb") as out:
            block = os.urandom(1 << 20)
            for i in range(megabytes):
                out.write(block[:-8] + i.to_bytes(8, "little"))
        (folder / "card.yaml").write_text(CARD)
        reg.register("m", version, folder / "card.yaml", [folder / "weights.bin"], no_branch=True)
        sign_folder(reg.version_dir("m", version), "m", version, read_private_key(key))
        git(reg.root, "add", "-A")
        git(reg.root, "commit", "--quiet", "-m", f"Sign m@{version}")
        reg.promote("m", version, "staging", "bench", no_branch=True)
    reg.promote("m", "1.0.0", "production", "bench", no_branch=True)
    git(reg.root, "remote", "add", "origin", str(origin))
    git(reg.root, "push", "--quiet", "origin", "main")
    return origin, public, base / "dvc-remote"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="artifact size in MiB")
    parser.add_argument("--polls", type=int, default=50, help="unchanged polls to time")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    os.environ.update({"HOME": str(base), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(base / ".gitconfig"),
                       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                       "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"})
    try:
        from registry.serving.puller import Puller
        from registry.serving.remote import hash_file
        from registry.signing.bundle import verify_folder
        from registry.signing.keys import load_public_keys

        print(f"building a registry with two signed {options.mb} MiB versions in {base} ...", flush=True)
        origin, public, remote = build(base, options.mb)
        serve = base / "serve"
        size = options.mb << 20
        gb = size / 1e9
        puller = Puller(serve, stage="production", source=str(origin), trusted_keys=public)

        objects = sorted(p for p in (remote / "files").rglob("*") if p.is_file() and p.stat().st_size == size)
        copy_s = timed(lambda: shutil.copyfile(objects[0], base / "copy.bin"))
        with open(objects[0], "rb") as handle:
            hash_s = timed(lambda: hashlib.file_digest(handle, "sha256"))
        first_s = timed(puller.poll)
        verify_s = timed(lambda: hash_file(serve / "m" / "current" / "weights.bin", lambda: None))
        ls_remote_ms = median_ms(lambda: git(base, "ls-remote", str(origin), "main"), options.polls)
        poll_ms = median_ms(puller.poll, options.polls)
        cli_ms = median_ms(lambda: subprocess.run(
            [sys.executable, "-m", "registry", "pull", "--stage", "production", "--to", str(serve),
             "--trusted-keys", str(public)], check=True, capture_output=True), 5)

        reg = base / "reg"
        from registry import api

        api.open(reg).promote("m", "1.1.0", "production", "bench", no_branch=True)
        git(reg, "push", "--quiet", "origin", "main")
        promote_s = timed(puller.poll)
        assert os.readlink(serve / "m" / "current") == "versions/1.1.0"
        verify_folder(serve / "m" / "current", "m", "1.1.0", load_public_keys(public))

        print(f"\nunchanged poll        {poll_ms:8.1f} ms   (median of {options.polls}; target <= 100 ms)")
        print(f"  baseline ls-remote  {ls_remote_ms:8.1f} ms   poll / ls-remote = {poll_ms / ls_remote_ms:.2f}x")
        print(f"  one-shot CLI        {cli_ms:8.1f} ms   (a new Python process each time)")
        print(f"\nfirst pull            {first_s:8.2f} s    {gb / first_s:.2f} GB/s downloaded + verified + fsynced")
        print(f"promotion pull        {promote_s:8.2f} s    {gb / promote_s:.2f} GB/s")
        print(f"  baseline copy       {copy_s:8.2f} s    {gb / copy_s:.2f} GB/s (no hash, no fsync)")
        print(f"  baseline sha256     {hash_s:8.2f} s    {gb / hash_s:.2f} GB/s (read + hash)")
        print(f"  pull / (copy+hash)  {first_s / (copy_s + hash_s):.2f}x  (< 1: one read of each byte pays off)")
        print(f"in-place re-verify    {verify_s:8.2f} s    {gb / verify_s:.2f} GB/s")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

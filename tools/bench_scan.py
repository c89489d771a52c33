"""Benchmark the security scan on a large PyTorch checkpoint.

Builds a ~500 MB state dict checkpoint in a temporary folder (torch's zip format and,
with --legacy, the legacy format too; a synthetic zip of the same layout when torch
is not installed), then a safetensors file, a joblib dump and a text vocabulary of the
same size (when safetensors, joblib and NumPy are installed), and prints the scan's
throughput next to a baseline measured in the same run: reading the whole file once.
The scan should beat the baseline by far where tensor data is skipped, not read; text
is read once (it must all be checked to be text).

    .venv/bin/python tools/bench_scan.py [--mb 500] [--legacy] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from registry.artifacts.scan import scan_file


def build_torch(path: Path, megabytes: int, legacy: bool) -> None:
    import torch

    tensor_mb = 8
    state = OrderedDict(
        (f"layers.{i}.weight", torch.randn(tensor_mb * 1024 * 256))
        for i in range(max(1, megabytes // tensor_mb))
    )
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


def build_synthetic(path: Path, megabytes: int) -> None:
    """The torch zip layout without torch: data.pkl naming storages, data/N blobs."""
    tensor_bytes = 8 * 1024 * 1024
    count = max(1, megabytes // 8)
    opcodes = bytearray(b"\x80\x02}q\x00(")
    for i in range(count):
        key = f"layers.{i}.weight".encode()
        opcodes += b"X" + len(key).to_bytes(4, "little") + key
        opcodes += b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
        opcodes += b"ctorch\nFloatStorage\n" + pickle.dumps(str(i), 2)[2:-1]
        opcodes += b"X\x03\x00\x00\x00cpuJ" + (tensor_bytes // 4).to_bytes(4, "little")
        opcodes += b"tQK\x00J" + (tensor_bytes // 4).to_bytes(4, "little") + b"\x85K\x01\x85"
        opcodes += b"\x89ccollections\nOrderedDict\n)RtR"
    opcodes += b"u."
    blob = os.urandom(tensor_bytes)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", bytes(opcodes))
        archive.writestr("archive/byteorder", "little")
        for i in range(count):
            archive.writestr(f"archive/data/{i}", blob)
        archive.writestr("archive/version", "3\n")


def build_safetensors(path: Path, megabytes: int) -> bool:
    """Many tensors (the header is what the scan reads and validates)."""
    try:
        import numpy as np
        from safetensors.numpy import save_file
    except ImportError:
        return False
    count = max(1, megabytes) * 4
    tensor = np.ones(256 * 1024 // 4, dtype=np.float32)  # 256 KiB each
    save_file({f"layers.{i}.weight": tensor for i in range(count)}, str(path))
    return True


def build_joblib(path: Path, megabytes: int) -> bool:
    """A joblib dump of arrays (raw data stepped over) and a dict of plain values."""
    try:
        import joblib
        import numpy as np
    except ImportError:
        return False
    arrays = [np.ones(1024 * 1024 // 8) * i for i in range(max(1, megabytes))]
    joblib.dump({"arrays": arrays, "meta": {"names": [f"n{i}" for i in range(1000)]}}, path)
    return True


def build_text(path: Path, megabytes: int) -> bool:
    """A tokenizer vocabulary: text, walked as opcodes until it certainly is not a pickle."""
    line = "".join(f"token{i}\n" for i in range(100_000)).encode()
    with open(path, "wb") as handle:
        for _ in range(max(1, megabytes * 1_000_000 // len(line))):
            handle.write(line)
    return True


def read_all(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(16 * 1024 * 1024):
            pass


def best_of(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(label: str, path: Path, repeat: int) -> None:
    size_mb = path.stat().st_size / 1e6
    report = scan_file(path)
    assert report.safe, [str(f) for f in report.findings]
    scan_s = best_of(repeat, lambda: scan_file(path))
    read_s = best_of(repeat, lambda: read_all(path))
    print(
        f"{label:<22} {size_mb:8.1f} MB  scan {scan_s * 1000:8.1f} ms = {size_mb / scan_s:10.0f} MB/s"
        f"  |  read-once baseline {size_mb / read_s:7.0f} MB/s  |  scan is "
        f"{read_s / scan_s:6.1f}x the baseline  (kind {report.kind})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="checkpoint size (MB)")
    parser.add_argument("--legacy", action="store_true", help="also the legacy torch format")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            import torch  # noqa: F401
        except ImportError:
            path = folder / "synthetic.pt"
            build_synthetic(path, args.mb)
            bench("synthetic torch zip", path, args.repeat)
            path.unlink()
            bench_others(folder, args.mb, args.repeat)
            return
        path = folder / "model.pt"
        build_torch(path, args.mb, legacy=False)
        bench("torch zip", path, args.repeat)
        path.unlink()
        synthetic = folder / "synthetic.pt"
        build_synthetic(synthetic, args.mb)
        bench("synthetic torch zip", synthetic, args.repeat)
        synthetic.unlink()
        if args.legacy:
            legacy = folder / "legacy.pt"
            build_torch(legacy, args.mb, legacy=True)
            bench("torch legacy", legacy, args.repeat)
            legacy.unlink()
        bench_others(folder, args.mb, args.repeat)


def bench_others(folder: Path, megabytes: int, repeat: int) -> None:
    for label, name, build in (
        ("safetensors", "model.safetensors", build_safetensors),
        ("joblib", "model.joblib", build_joblib),
        ("text (vocabulary)", "vocab.txt", build_text),
    ):
        path = folder / name
        if build(path, megabytes):
            bench(label, path, repeat)
            path.unlink()


if __name__ == "__main__":
    main()

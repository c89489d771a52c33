"""Time the safetensors header check on sparse 1 GiB files.

Usage: python tools/bench_formats.py [--runs N]

The baseline is the safetensors library's own header parse (`safe_open` and listing
the keys), measured in the same run on the same files; the target is under 10 ms per
file whatever its size, because only the header is read. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from safetensors import safe_open

from registry.artifacts.identify import sniff
from registry.artifacts.safetensors import validate_safetensors

GIB = 1024**3


def sparse_safetensors(path: Path, tensors: int) -> Path:
    """A valid 1 GiB (data section) safetensors file whose data is a hole on disk."""
    per_tensor = GIB // tensors // 4  # F32 elements
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for index in range(tensors):
        size = per_tensor * 4
        header[f"layers.{index}.weight"] = {
            "dtype": "F32",
            "shape": [per_tensor],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(body)) + body)
        handle.truncate(8 + len(body) + offset)
    return path


def best_ms(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Best and median wall time of `action`, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


def reference(path: Path) -> None:
    with safe_open(str(path), "np") as loaded:
        list(loaded.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    print(f"{'file':<28}{'validate ms':>12}{'median':>9}{'baseline ms':>13}{'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for tensors in (1, 1000, 20_000):
            path = sparse_safetensors(Path(tmp) / f"{tensors}.safetensors", tensors)
            validate_safetensors(path)  # warm the page cache for both sides
            ours, ours_median = best_ms(partial(validate_safetensors, path), runs)
            base, _ = best_ms(partial(reference, path), runs)
            label = f"1 GiB, {tensors} tensor(s)"
            print(f"{label:<28}{ours:>12.3f}{ours_median:>9.3f}{base:>13.3f}{ours / base:>7.2f}")
            if tensors == 1:
                sniffed, _ = best_ms(partial(sniff, path), runs)
                print(f"{'  sniff, same file':<28}{sniffed:>12.3f}")


if __name__ == "__main__":
    main()

"""Convert a pickled checkpoint to safetensors without executing it.

Reads PyTorch checkpoints (``torch.save``: the zip format and the legacy format) and
pickled dicts of NumPy arrays, and writes a safetensors file. Nothing in the input is
ever run and torch is never imported:

1. The security scan (`scan.scan_file`) reads the file first; anything it
   finds refuses the file, naming each finding.
2. A restricted unpickler reads it. ``find_class`` answers an exact allow-list of
   ``module.qualname`` strings, and never with the real object: each name maps to a
   stand-in defined here (torch's rebuild functions become functions that record a
   tensor's storage, dtype, shape, stride and offset; storage types and dtypes become
   inert markers; NumPy's reconstructors are wrapped to take plain data only).
   ``persistent_load`` turns a torch storage id into a reference to raw bytes: a
   ``data/<key>`` member of the zip, or a record of the legacy file's storage section.
3. Each tensor becomes a NumPy array over its storage bytes
   (`np.lib.stride_tricks.as_strided` after a bounds check, then a copy), so views,
   transposes and offsets come out as torch would show them.

Decisions:

- The safetensors file is written here (8-byte length, JSON header padded to 8 bytes,
  raw little-endian bytes, tensors ordered by alignment then name, as the reference
  writer does). NumPy has no bfloat16 or float8, and the `safetensors` package's raw
  writer changed its API incompatibly in 0.8 (dicts of bytes became pointer specs),
  so bytes are carried in same-width integer arrays and the dtype is the safetensors
  code (``BF16``, ``F8_E4M3``...). The output is verified tensor by tensor against the
  source (dtype, shape, bytes) and its header by `safetensors.validate_safetensors`
  before it is moved into place.
- Nested dicts are flattened with ``.`` (``{"model": {"fc.weight": t}}`` gives
  ``model.fc.weight``). Leaves that are ``str``, ``int``, ``float`` or ``bool`` go to
  ``__metadata__`` under their flattened name (strings as they are, the rest as JSON:
  ``3``, ``0.001``, ``true``). Any other leaf (lists, tuples, None, NumPy scalars,
  optimizer state) refuses the file, naming the key: safetensors holds tensors only.
- Tensors that share a storage (tied weights, views) are written as separate copies:
  safetensors has no aliasing. The result lists them under ``shared_storage``.
- Refused: joblib dumps (their arrays live outside the pickle), quantized, sparse,
  nested and meta tensors, lazily conjugated or negated tensors, complex128 and other
  dtypes safetensors cannot hold, big-endian checkpoints, and anything whose tensors
  would take more than `EXPANSION_LIMIT` times the file's size (a few bytes of pickle
  can name one large tensor a million times).

The output is written to a temporary file beside it, fsynced and renamed into place;
an existing output is replaced only with ``force``.

The package: `tensors` (the stand-ins), `storages` (where the bytes are), `unpickler`
(the restricted unpickler and the input readers), `entries` (objects to tensors),
`writer` (the file, its read-back and its move into place) and `api` (`convert`).
"""

from __future__ import annotations

from registry.artifacts.convert.api import (
    EXPANSION_FLOOR,
    EXPANSION_LIMIT,
    convert,
    default_output,
)
from registry.artifacts.convert.results import Conversion, TensorInfo, UnsafeInputError

__all__ = [
    "EXPANSION_FLOOR",
    "EXPANSION_LIMIT",
    "Conversion",
    "TensorInfo",
    "UnsafeInputError",
    "convert",
    "default_output",
]

"""How a model's child process is confined on this machine: namespaces, Landlock, a non-dumpable parent.

On Linux, this process is not dumpable while a child runs (`not_dumpable`), so the
child cannot read its `/proc/<pid>/environ` or memory nor ptrace it; the child starts
in new user and network namespaces (`unshare`: no network at all, not even loopback),
sets no-new-privileges, drops every capability and, with Landlock, may write only below
its own temporary folder (the version folder, the registry's work tree and everything
else are read-only to it), may not open TCP connections, nor ptrace or signal any
process outside its sandbox (the child applies these itself: `registry/runner/child.py`).
What the OS does not allow here is named in the gate's message (`with_notes`:
`sandbox: network not isolated: ...`); what the parent found available and the child
then cannot apply fails the gate.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["LANDLOCK_NET_ABI", "PR_GET_DUMPABLE", "UNSHARE", "Sandbox", "last_line", "not_dumpable", "sandbox",
           "with_notes"]


# New user and network namespaces for the child: it is root of a namespace that owns
# nothing, and it has only a loopback interface that is down.
UNSHARE = ("unshare", "--user", "--map-root-user", "--net", "--")
LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_NET_ABI = 4  # TCP bind/connect rules
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4


@dataclass(frozen=True)
class Sandbox:
    """How children are confined on this machine, decided once per process."""

    prefix: tuple[str, ...]  # prepended to the child's command: UNSHARE, or nothing
    landlock_abi: int  # the kernel's Landlock ABI version; 0 when there is none
    notes: tuple[str, ...]  # what is not confined here, said in every gate message


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _landlock_abi() -> tuple[int, str]:
    libc = _libc()
    if libc is None:
        return 0, f"no Landlock on {sys.platform}"
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if abi <= 0:
        return 0, f"Landlock unavailable ({os.strerror(ctypes.get_errno())})"
    return int(abi), ""


def _unshare_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"no network namespaces on {sys.platform}"
    if shutil.which(UNSHARE[0]) is None:
        return f"{UNSHARE[0]} not found on PATH"
    try:
        probe = subprocess.run([*UNSHARE, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{UNSHARE[0]} could not run: {exc}"
    if probe.returncode != 0:
        return last_line(probe.stderr) or f"{UNSHARE[0]} exited with code {probe.returncode}"
    return None


@functools.cache
def sandbox() -> Sandbox:
    """Probe what this machine allows: unshare (user + network namespaces) and Landlock."""
    notes: list[str] = []
    unshare_problem = _unshare_problem()
    abi, landlock_problem = _landlock_abi()
    if unshare_problem is None:
        prefix: tuple[str, ...] = UNSHARE
    elif abi >= LANDLOCK_NET_ABI:
        prefix = ()
        notes.append(f"network partly isolated: TCP refused by Landlock, not UDP ({unshare_problem})")
    else:
        prefix = ()
        notes.append(f"network not isolated: {unshare_problem}")
    if abi == 0:
        notes.append(f"writes not confined to the child's temporary folder: {landlock_problem}")
    if _libc() is None:
        notes.append(f"parent environment not protected: no prctl on {sys.platform}")
    return Sandbox(prefix, abi, tuple(notes))


_dumpable_lock = threading.Lock()
_dumpable_holders = 0
_dumpable_before = 1


@contextlib.contextmanager
def not_dumpable() -> Iterator[None]:
    """While a child runs, no process of the same user can read this one's
    /proc/<pid>/environ or memory, nor ptrace it (PR_SET_DUMPABLE 0)."""
    global _dumpable_holders, _dumpable_before
    libc = _libc()
    if libc is None:
        yield
        return
    with _dumpable_lock:
        if _dumpable_holders == 0:
            _dumpable_before = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        _dumpable_holders += 1
    try:
        yield
    finally:
        with _dumpable_lock:
            _dumpable_holders -= 1
            if _dumpable_holders == 0 and _dumpable_before > 0:
                libc.prctl(PR_SET_DUMPABLE, _dumpable_before, 0, 0, 0)


def with_notes(message: str) -> str:
    """A gate's message, with what this machine does not confine appended."""
    notes = sandbox().notes
    return f"{message}; sandbox: {'; '.join(notes)}" if notes else message



def last_line(data: bytes) -> str:
    """The last non-blank line of a process's output, cut at 300 characters."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= 300 else line[:299] + "…"

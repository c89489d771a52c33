"""Text written by others (cards, model.yaml, commit authors and messages, file names),
made safe to show to people: the one place that decides which characters are.

A terminal acts on control characters: ESC starts sequences that move the cursor, clear
the screen, recolour, set the window title or make hyperlinks (OSC 8), CR and BS
overwrite what was printed, and the bidirectional overrides reorder what is shown. Every
human-readable output of the command goes through `printable`; JSON output stays exact
(JSON escapes these characters itself). The REST API refuses them in the reasons it takes
(`first_control`), since a reason ends up in a commit message.
"""

from __future__ import annotations

import re

# C0 except tab and newline (ESC, CR, BS, BEL among them), DEL, C1 (CSI, OSC, ST among them),
# and the Unicode bidirectional controls (ALM, LRM, RLM, LRE…RLO, LRI…PDI) and line separators.
# A regular expression character class that Python and JSON Schema (ECMA 262) read alike.
CONTROL_CLASS = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{CONTROL_CLASS}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """text with each control or bidirectional-override character shown as its escape
    (ESC as ``\\x1b``, RLO as ``\\u202e``): visible, and inert in a terminal."""
    return _CONTROL.sub(_escape, text)


def first_control(text: str) -> int | None:
    """Where the first character that printable() would change is, if any."""
    found = _CONTROL.search(text)
    return found.start() if found else None

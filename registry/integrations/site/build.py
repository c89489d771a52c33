"""`registry site`: a static HTML catalog of one registry commit (read, render, write).

Everything is read from the committed tree at ``--at`` (one ``git ls-tree`` and one
``git cat-file --batch``), never from the work tree, so the catalog shows what is on
main and nothing half-edited. The output is plain files (HTML, one stylesheet, a
few lines of search script) that work offline and on GitHub Pages; every page is
usable without JavaScript, and a Content-Security-Policy forbids inline scripts, so
a card that slips a ``<script>`` past the escaping still could not run it.

Reading builds frozen values (`read.Catalog`), rendering turns them into text (pure, no
I/O; the stylesheet, script and page shell are package data under ``assets/``), writing
swaps the whole folder in at once. The output depends only on the commit: building
twice gives identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.integrations.site.read import read_catalog
from registry.integrations.site.render import render
from registry.integrations.site.write import write
from registry.repo.registry import Registry


@dataclass(frozen=True)
class Built:
    out: Path
    commit: str
    files: tuple[str, ...]


def build(reg: Registry, out: Path, at: str = "HEAD") -> Built:
    catalog = read_catalog(reg, at)
    files = render(catalog)
    write(files, out)
    return Built(out, catalog.commit, tuple(sorted(files)))

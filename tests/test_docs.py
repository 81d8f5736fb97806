"""The documents' links resolve: every ``](#anchor)`` names a heading of its file (as GitHub renders
the anchor) and every relative ``](path)`` names a file or folder of the repository. A README of
2,000 lines is read through its links; a section renamed without its links leaves readers at the top."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/design.md", "training/README.md", *map(str, sorted(p.relative_to(ROOT) for p in ROOT.glob("pretrained/*/*.md")))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, everything but letters, digits, spaces, ``-``
    and ``_`` dropped, spaces turned into ``-``."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, outside code fences; a repeated heading's gets ``-1``, ``-2`` … as on GitHub."""
    seen: dict[str, int] = {}
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = re.match(r"#+ (.*)", line)
        if in_fence or not heading:
            continue
        anchor = github_anchor(heading.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        if count:
            seen[f"{anchor}-{count}"] = 1
    return set(seen)


def test_github_anchor() -> None:
    assert github_anchor("Sweep: four agents × three λ × three seeds") == "sweep-four-agents--three-λ--three-seeds"
    assert github_anchor("Deciding only at the heads (`decide_at=\"head\"`)") == "deciding-only-at-the-heads-decide_athead"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_resolve(document: str) -> None:
    path = ROOT / document
    text = path.read_text()
    headings = anchors(text)
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        if file and not (path.parent / file).exists():
            broken.append(target)
        elif not file and anchor not in headings:
            broken.append(target)
    assert not broken, f"{document}: links to no heading or file: {broken}"

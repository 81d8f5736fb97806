"""The documents' links resolve: every ``](#anchor)`` names a heading of its file (as GitHub renders
the anchor), every relative ``](path)`` names a file or folder of the repository, and a
``](file.md#anchor)`` names a heading of that file. The README, ``docs/results.md`` and
``docs/speed.md`` are read through their links; a section renamed or moved without its links leaves
readers at the top of a page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *map(str, sorted(p.relative_to(ROOT) for p in ROOT.glob("docs/*.md"))), "training/README.md", *map(str, sorted(p.relative_to(ROOT) for p in ROOT.glob("pretrained/*/*.md")))]
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


def broken_links(path: Path) -> list[str]:
    """The links of the Markdown file at ``path`` that name no file, or no heading of the file they name."""
    text = path.read_text()
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = path.parent / file
        if file and not linked.exists():
            broken.append(target)
        elif anchor and anchor not in anchors(linked.read_text() if file else text):
            broken.append(target)
    return broken


def test_broken_links_names_a_missing_heading_in_another_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("# Results\n## Sweep\n")
    readme = tmp_path / "README.md"
    readme.write_text("# Top\n[a](#top) [b](docs/results.md#sweep) [c](docs/results.md#moved) [d](gone.md) [e](#nowhere)\n")
    assert broken_links(readme) == ["docs/results.md#moved", "gone.md", "#nowhere"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_resolve(document: str) -> None:
    broken = broken_links(ROOT / document)
    assert not broken, f"{document}: links to no heading or file: {broken}"


def test_the_citation_file_names_this_version_and_the_two_papers() -> None:
    """Read as lines (no YAML parser among the dependencies): top-level keys start a line."""
    citation = (ROOT / "CITATION.cff").read_text()
    top = dict(re.findall(r"^([a-z-]+): (.+)$", citation, flags=re.MULTILINE))
    project = (ROOT / "pyproject.toml").read_text()
    assert top["cff-version"] == "1.2.0" and f'license = "{top["license"]}"' in project
    assert f'version = "{top["version"]}"' in project  # bumped with the package, or the citation names another release
    assert "Cascaded Deep Classifiers" in citation and "Fully Dynamic Inference with Deep Neural Networks" in citation

"""Every relative link of README.md and docs/*.md reaches a file of the repository, and a
``#section`` part reaches a heading of that file (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.runtime import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text outside code blocks and inline code, where links are links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The ``#fragment`` of each heading as GitHub makes it: the heading's text lower-cased, without
    punctuation, spaces as hyphens; a repeated one gets ``-1``, ``-2``..."""
    seen: dict[str, int] = {}
    out = set()
    for title in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text(encoding="utf-8"))) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_the_anchor_rule_matches_github():
    text = "# Showroom — visual search\n## Hard negatives, and one round of the loop\n## `flask` run\n## Run it\n## Run it\n"
    assert anchors(text) == {"showroom--visual-search", "hard-negatives-and-one-round-of-the-loop", "flask-run", "run-it", "run-it-1"}


# the pages the README's details live in: a reader must find each of them from it
GUIDES = ("training", "serving", "evaluation", "scale_out", "benchmarks", "architecture")


def test_the_readme_links_every_guide():
    linked = {(PROJECT_ROOT / t.split("#")[0]).resolve() for t in relative_links(PROJECT_ROOT / "README.md")}
    missing = [g for g in GUIDES if (PROJECT_ROOT / "docs" / f"{g}.md").resolve() not in linked]
    assert not missing, f"README.md does not link docs/{missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)

"""The README's shape: an intro under 60 lines that a newcomer reads whole (what it is, the two commands,
links to the rest), then linked reference sections."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_intro_is_short_and_links_every_section():
    text = README.read_text()
    intro = text[: text.index("\n## ")]
    assert len(intro.splitlines()) < 60
    assert "bash scripts/install.sh && " in intro and "bash scripts/install.sh test && " in intro
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    linked = set(re.findall(r"\]\(#([\w-]+)\)", intro))
    assert {_anchor(section) for section in sections} <= linked, sorted(
        {_anchor(section) for section in sections} - linked)


def test_every_link_inside_the_readme_lands_on_a_heading():
    text = README.read_text()
    anchors = {_anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for target in re.findall(r"\]\(#([\w-]+)\)", text):
        assert target in anchors, target

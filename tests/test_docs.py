"""The theory the docstrings cite ships in the project, and every cited section exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"


def _sources():
    here = Path(__file__).resolve()
    return [p for d in ("src", "tests") for p in (ROOT / d).rglob("*.py") if p != here]


def test_no_citation_of_a_file_outside_the_project():
    stale = [str(p) for p in _sources() if "THEORY.md" in p.read_text()]
    assert stale == []


def test_every_cited_section_of_docs_theory_exists():
    sections = set(re.findall(r"^## (.+)$", THEORY.read_text(), flags=re.M))
    cited = set()
    for p in _sources():
        # docs/theory.md, "Section"  or  docs/theory.md ("Section")
        cited |= set(re.findall(r'docs/theory\.md,? \(?"([^"]+)"', p.read_text()))
    assert cited, "no docstring cites a section of docs/theory.md"
    assert cited <= sections, cited - sections
    assert {"Claims", "Numerical signatures", "Toy problems"} <= cited

"""Every document the code and docs cite is in the repository, and every cited section exists."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = [p for d in ("pvnas", "tests", "benchmarks", "experiments", "docs") for p in (ROOT / d).rglob("*")
           if p.suffix in (".py", ".md", ".sh")] + [ROOT / "README.md"]
CITED_FILE = re.compile(r"\b((?:docs|benchmarks|experiments|tests)/[\w./-]+\.(?:md|py|sh|png))")
CITED_SECTION = re.compile(r"docs/design\.md §\s?(\d+)")
MD_LINK = re.compile(r"\]\(((?!https?:|#)[^)#\s]+)")


def test_every_cited_file_and_design_section_exists():
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", design, re.M))
    missing = []
    for path in SOURCES:
        text = path.read_text(errors="replace")
        missing += [f"{path.relative_to(ROOT)}: {f}" for f in CITED_FILE.findall(text)
                    if not (ROOT / f.rstrip(".")).exists() and "*" not in f]
        missing += [f"{path.relative_to(ROOT)}: §{n}" for n in CITED_SECTION.findall(text) if n not in sections]
        if path.suffix == ".md":
            missing += [f"{path.relative_to(ROOT)}: link {link}" for link in MD_LINK.findall(text)
                        if not (path.parent / link).exists()]
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def test_no_citation_of_a_document_outside_the_repository():
    outside = [f"{p.relative_to(ROOT)}" for p in SOURCES if p.name != "test_docs.py"
               and re.search(r"\bDESIGN §|\.\./shared/|\.\./seed/", p.read_text(errors="replace"))]
    assert not outside, outside

"""Every document the code and docs cite is in the repository, and every cited section exists."""

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = [p for d in ("pvnas", "tests", "benchmarks", "experiments", "docs") for p in (ROOT / d).rglob("*")
           if p.suffix in (".py", ".md", ".sh") and p.name != "test_docs.py"] + [ROOT / "README.md"]  # ours: examples
CITED_FILE = re.compile(r"\b((?:pvnas|docs|benchmarks|experiments|tests)/[\w./-]+\.(?:md|py|sh|png))")
CITED_SECTION = re.compile(r"docs/design\.md §\s?(\d+)")
MD_LINK = re.compile(r"\]\(((?!https?:|#)[^)#\s]+)")
# a section cited by its heading: `docs/performance.md, "Threads"`, `README's "Searching at a small budget"` (quotes
# escaped or not, inside a Python string or not), or bare inside parentheses: `(README, troubleshooting)`
CITED_HEADING = (re.compile(r"""\b(README(?:\.md)?|docs/[\w-]+\.md)(?:,|'s|:)?[ \t]+\\?["“]([^"”\\\n]+)\\?["”]"""),
                 re.compile(r"\((README(?:\.md)?|docs/[\w-]+\.md), ([A-Za-z][^()\"\n]*)\)"))


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
    outside = [f"{p.relative_to(ROOT)}" for p in SOURCES
               if re.search(r"\bDESIGN §|\.\./shared/|\.\./seed/", p.read_text(errors="replace"))]
    assert not outside, outside




def test_every_api_name_the_docs_give_exists():
    """`pvnas.x.y` in README and docs/ names a module or an attribute of one (the package's layout moves)."""
    missing = []
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for name in set(re.findall(r"`(pvnas(?:\.\w+)+)", doc.read_text())):
            obj, *attrs = name.split(".")
            obj = importlib.import_module(obj)
            for attr in attrs:  # a submodule is imported, an attribute looked up
                prefix = f"{obj.__name__}.{attr}" if hasattr(obj, "__path__") else None
                obj = importlib.import_module(prefix) if prefix and importlib.util.find_spec(prefix) \
                    else getattr(obj, attr, None)
                if obj is None:
                    break
            if obj is None:
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, missing


def _headings(doc: Path) -> set[str]:
    """A markdown file's headings, outside fenced code, lower-cased and without backticks."""
    headings, fenced = set(), False
    for line in doc.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (m := re.match(r"#{1,6}\s+(.+?)\s*#*$", line)):
            headings.add(_norm(m[1]))
    return headings


def _norm(heading: str) -> str:
    return " ".join(heading.replace("`", "").lower().split())


def missing_headings(sources: list[Path], root: Path = ROOT) -> tuple[int, list[str]]:
    """How many sections the sources cite by their headings, and `file:line: ...` for each that is not there."""
    headings: dict[str, set[str]] = {}
    cited, missing = 0, []
    for path in sources:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for doc, heading in (c for pattern in CITED_HEADING for c in pattern.findall(line)):
                doc, cited = "README.md" if doc.startswith("README") else doc, cited + 1
                if not (root / doc).exists():
                    missing.append(f"{path.relative_to(root)}:{n}: {doc} does not exist")
                elif _norm(heading) not in headings.setdefault(doc, _headings(root / doc)):
                    missing.append(f'{path.relative_to(root)}:{n}: {doc} has no section "{heading}"')
    return cited, missing


def test_every_section_cited_by_its_heading_exists():
    """Docstrings, help texts, comments and docs that send a reader to a section name one that is there."""
    cited, missing = missing_headings(SOURCES)
    assert cited >= 10, cited  # the quoting forms in use are still recognised
    assert not missing, "cited sections that do not exist:\n" + "\n".join(missing)


def test_a_citation_of_a_missing_section_is_reported_with_its_place(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Tool\n\n## Troubleshooting\n\n```bash\n# Not a heading\n```\n")
    (tmp_path / "docs" / "perf.md").write_text("# Perf\n\n### `--threads` and cores\n")
    src = tmp_path / "mod.py"
    src.write_text('"""Why (docs/perf.md, "--threads and cores")."""\n'
                   'HELP = "see the README\'s \\"Troubleshooting\\" or (README, troubleshooting)"\n'
                   '# a bare citation (docs/perf.md, search quality)\n'
                   '# `docs/nothing.md: "Anything"`, README: "Not a heading"\n')
    cited, missing = missing_headings([src], tmp_path)
    assert cited == 6
    assert missing == ['mod.py:3: docs/perf.md has no section "search quality"',
                       "mod.py:4: docs/nothing.md does not exist",
                       'mod.py:4: README.md has no section "Not a heading"']

"""`repro new`: write a new paper's config, code, tests, README and notebook from templates."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from repro.errors import PaperError
from repro.project import Project, check_paper_name

# template file -> destination, relative to the project root
LAYOUT = {
    "conf.yaml": "conf/paper/{paper}.yaml",
    "README.md": "papers/{paper}/README.md",
    "__init__.py": "papers/{paper}/__init__.py",
    "model.py": "papers/{paper}/model.py",
    "data.py": "papers/{paper}/data.py",
    "tests/test_model.py": "papers/{paper}/tests/test_{paper}_model.py",
    "notes.md": "notes/{paper}.md",
}


def scaffold_paper(
    project: Project, paper: str, title: str | None = None, arxiv: str | None = None
) -> list[Path]:
    """Write every file for `paper`; refuse before writing anything if one exists already."""
    check_paper_name(paper)
    values = {"paper": paper, "title": title or paper, "arxiv": arxiv or "TODO"}
    targets = {src: project.root / dst.format(paper=paper) for src, dst in LAYOUT.items()}
    existing = [p for p in targets.values() if p.exists()]
    if existing:
        names = ", ".join(str(p.relative_to(project.root)) for p in existing)
        raise PaperError(
            f"refusing to overwrite existing files: {names} (choose another name or move them)"
        )
    templates = resources.files("repro") / "templates" / "paper"
    written = []
    for src, dst in targets.items():
        text = (templates / src).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
        written.append(dst)
    (project.root / "papers" / "__init__.py").touch()
    return written

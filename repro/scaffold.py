"""`repro new`: write a new paper's config, code, tests, README and notebook from templates."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from repro.errors import PaperError
from repro.project import Project, check_paper_name

# template file -> destination, relative to the project root: "paper/" files are every task's,
# "task/" files the chosen task's (repro/templates/tasks/<task>/)
LAYOUT = {
    "task/conf.yaml": "conf/paper/{paper}.yaml",
    "paper/README.md": "papers/{paper}/README.md",
    "paper/__init__.py": "papers/{paper}/__init__.py",
    "task/model.py": "papers/{paper}/model.py",
    "task/data.py": "papers/{paper}/data.py",
    "task/test_model.py": "papers/{paper}/tests/test_{paper}_model.py",
    "paper/notes.md": "notes/{paper}.md",
}
TASKS = ("classification", "regression", "sequence", "ranking")  # a template for each


def scaffold_paper(
    project: Project,
    paper: str,
    title: str | None = None,
    arxiv: str | None = None,
    task: str = "classification",
) -> list[Path]:
    """Write every file for `paper`, a tiny working example of `task`, each created exclusively:
    if any exists (or appears while writing: another `repro new` at the same time), nothing of
    this call is left behind."""
    check_paper_name(paper)
    if task not in TASKS:
        raise PaperError(
            f"--task {task!r}: expected one of {', '.join(TASKS)} (a paper with its own loss and "
            "metrics starts from the closest one and adds papers/<paper>/task.py: repro/paper.py)"
        )
    values = render_values(paper, title or paper, arxiv or "TODO")
    targets = {src: project.root / dst.format(paper=paper) for src, dst in LAYOUT.items()}
    existing = [p for p in targets.values() if p.exists()]
    if existing:
        raise _refusal(project, existing)
    root = resources.files("repro") / "templates"
    folders = {"paper": root / "paper", "task": root / "tasks" / task}
    written: list[Path] = []
    try:
        for src, dst in targets.items():
            folder, name = src.split("/", 1)
            text = (folders[folder] / name).read_text(encoding="utf-8")
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with dst.open("x", encoding="utf-8") as f:  # exclusive: never over another's file
                written.append(dst)
                f.write(text)
    except FileExistsError as e:  # e.filename: the one that appeared; `written` holds only ours
        for path in written:
            path.unlink(missing_ok=True)
        raise _refusal(project, [Path(e.filename)]) from None
    (project.root / "papers" / "__init__.py").touch()
    return written


def render_values(paper: str, title: str, arxiv: str) -> dict[str, str]:
    """The placeholders, each written for where it goes: YAML through a serializer (quotes and
    backslashes survive), Python docstrings escaped, Markdown as typed."""
    for name, value in (("title", title), ("arxiv", arxiv)):
        bad = [c for c in value if ord(c) < 32 or c == "\x7f"]
        if bad or not value.strip():
            raise PaperError(
                f"--{name}: expected one line of text, found {value!r}; drop the newline or control characters"
            )
    return {
        "paper": paper,
        "title": title,
        "arxiv": arxiv,
        "title_yaml": json.dumps(title, ensure_ascii=False),  # a JSON string is a YAML scalar
        "arxiv_yaml": json.dumps(arxiv, ensure_ascii=False),
        "title_py": title.replace("\\", "\\\\").replace('"', '\\"'),
    }


def _refusal(project: Project, paths: list[Path]) -> PaperError:
    names = ", ".join(str(p.relative_to(project.root)) for p in paths)
    return PaperError(
        f"{names}: expected no such file, found one; refusing to overwrite (choose another name or move it)"
    )

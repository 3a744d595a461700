"""A warm handle on one paper for notebooks and `# %%` cells: its composed config, set-up
datamodule, a batch, a freshly built model, and gate checks on a model in memory that write no
record.

    from repro import lab
    s = lab.open("bimpm")              # config, datamodule and batch built once (~seconds)
    model = s.new_model()              # papers/bimpm/model.py imported afresh: edit, re-run
    s.check("shapes", model)           # the shapes gate's measurements and verdict, NOT recorded

Nothing here writes under runs/ or notes/ or counts toward `repro status`: a verdict that counts
comes from `repro stage` (or `repro dev`, which records the same way).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from repro.config.compose import Resolved, compose
from repro.config.schema import RunConfig
from repro.context import StageContext
from repro.dev.fresh import forget_paper_modules, pin_bytecode_to_source
from repro.dev.warm import WarmData, build_warm_data
from repro.errors import ReproError
from repro.project import Project, find_project

CHECKS = ("data", "shapes", "overfit")  # full and experiments train for real: `repro stage`
NOT_RECORDED = (
    "not recorded: lab.check ran the {stage} gate in this process and wrote no run record "
    "(`repro stage {stage}` records it and counts toward progression)"
)


@dataclass
class Session:
    """One paper's warm objects. `model` is built at open; `new_model()` builds another from the
    model code on disk now."""

    project: Project
    paper: str
    resolved: Resolved
    warm: WarmData
    batch: dict[str, Any]  # the first training batch, as the shapes gate takes it
    model: Any = None
    console: Console = field(default_factory=Console)

    @property
    def config(self) -> RunConfig:
        """The composed, typed config (`resolved.config` is the plain dict a run records)."""
        return self.resolved.cfg

    @property
    def datamodule(self) -> Any:
        return self.warm.datamodule

    def new_model(self, seed: int | None = None) -> Any:
        """A freshly built and initialised model, the way a gate builds it (seeded, repro's default
        init where the paper is silent), from the paper's model code as it is on disk now."""
        from repro.paper_code import PaperCode

        forget_paper_modules(self.project.package(self.paper), keep=self.warm.modules)
        pin_bytecode_to_source(self.project.paper_dir(self.paper))
        PaperCode.read(self.project.paper_dir(self.paper)).install()  # disk, now
        return self._context().build_model(self.datamodule, seed)

    def check(self, stage: str, model: Any = None, quiet: bool = False):
        """Run `stage`'s measurements and judgement on `model` (default: `self.model`) and return
        the Verdict. NOT RECORDED: no run directory, no notebook line, no effect on progression.
        `overfit` trains a copy, so `model` keeps its weights."""
        from repro.display import print_checks
        from repro.gates import gate
        from repro.records.record import as_recorded

        if stage not in CHECKS:
            raise ReproError(
                f"lab.check runs {', '.join(CHECKS)}, not '{stage}': full and experiments "
                f"train for real, run `repro stage {stage} --paper {self.paper}`"
            )
        model = self.model if model is None else model
        if stage == "overfit":
            model = copy.deepcopy(model)
        verdict = gate(stage).run(self._context(model))
        if not quiet:
            print_checks(self.console, stage, as_recorded(verdict))
            self.console.print(f"[yellow]{NOT_RECORDED.format(stage=stage)}[/yellow]")
        return verdict

    def _context(self, model: Any = None) -> StageContext:
        """The context a gate gets from the runner, with no run (ctx.run is None: gates write no
        files) and, when given, the model in memory instead of a freshly built one."""
        return StageContext(
            self.project,
            self.paper,
            self.resolved,
            self.console,
            datamodules={self.warm.seed: self.datamodule},
            given_model=model,
        )


def open(  # noqa: A001 - `lab.open(...)` reads like opening a notebook session
    paper: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    project: Project | None = None,
    console: Console | None = None,
) -> Session:
    """Compose the paper's config (with Hydra `overrides`), build and set up its datamodule, take
    the first training batch and build a model. The project is the one around the working
    directory unless given."""
    project = project or find_project()
    paper = project.resolve_paper(paper)
    resolved = compose(project, paper, list(overrides))
    warm = build_warm_data(project, paper, resolved)
    batch = next(iter(warm.datamodule.train_dataloader()))
    session = Session(project, paper, resolved, warm, batch, console=console or Console())
    session.model = session.new_model()
    return session

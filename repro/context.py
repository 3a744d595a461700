"""What a gate gets: the typed config, the run being recorded, and builders for data and model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rich.console import Console

from repro.config.compose import Resolved
from repro.config.schema import DataConfig, RunConfig
from repro.errors import ConfigError, PaperError, ReproError
from repro.project import Project, import_paper_module


@dataclass
class ModelInfo:
    """What building the model recorded: the init repro applied and the parameter summary."""

    init: dict[str, str]
    summary: dict[str, Any]


@dataclass
class StageContext:
    project: Project
    paper: str
    resolved: Resolved
    console: Console
    run: Any = None  # repro.records.Run (None in tests that call gates directly)
    forced: bool = False
    resume: bool = False  # full --resume: continue each seed from its checkpoint
    model_info: ModelInfo | None = None  # set by build_model, recorded by the runner
    datamodules: dict[int, Any] = field(default_factory=dict)  # warm, already set up (repro dev)
    # The paper's files as this run imports and records them (repro/paper_code.py): installed by
    # the runner before anything of the paper is imported.
    code: Any = None
    # A model in memory that build_model returns instead of building one (repro.lab checks a
    # notebook's model with the gates; a recorded run always builds its own).
    given_model: Any = None

    @property
    def cfg(self) -> RunConfig:
        return self.resolved.cfg

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def task_class(self):
        """The paper's Task class (paper.task: a built-in task, or the paper's own)."""
        from repro.tasks import load_task_class

        return load_task_class(self.cfg.paper.task, self.project, self.paper)

    def check_paper_config(self) -> None:
        """The paper's own keys checked against the dataclasses its code declares (MODEL_CONFIG in
        model.py for `model:`, DATA_CONFIG in data.py for its `data:` keys), and the metrics the
        config names against the paper's own task (built-in tasks are checked at compose), before
        a run starts: a typo or a bad value is a one-line error, not a failed run."""
        from repro.config.typed import from_dict
        from repro.tasks import check_metrics_config, is_builtin

        if not is_builtin(self.cfg.paper.task):
            cls = self.task_class()
            check_metrics_config(self.cfg, cls.metric_specs(), cls.name, self.resolved.describe)
        for module, attr, values, where in (
            ("model", "MODEL_CONFIG", self.cfg.model, "model"),
            ("data", "DATA_CONFIG", self.cfg.data.options, "data"),
        ):
            try:
                schema = getattr(
                    import_paper_module(self.project, self.paper, module, None), attr, None
                )
            except ReproError:
                raise
            except Exception:  # the paper's code is broken: the gate records it with its traceback
                continue
            if schema is None:
                continue
            try:
                from_dict(schema, values, where, self.resolved.describe)
            except ConfigError as e:
                if where != "data" or "unknown key" not in str(e):
                    raise
                own = sorted(f.name for f in fields(DataConfig) if f.name != "options")
                raise ConfigError(f"{e}; repro's own data keys: {own}") from None

    def build_datamodule(self, seed: int | None = None, fresh: bool = False):
        """The paper's datamodule for `seed` (default: the config's). A warm worker hands over one
        it set up already, unless `fresh` (the data gate measures a build of its own)."""
        seed = self.seed if seed is None else seed
        if not fresh and seed in self.datamodules:
            return self.datamodules[seed]
        build = import_paper_module(self.project, self.paper, "data", "build_datamodule")
        dm = build(self.cfg.data, seed)
        dm.task_class = self.task_class()
        return dm

    def build_model(self, dm, seed: int | None = None):
        """Seeded build, then repro's default init where the paper is silent (`given_model`, when
        set, as it is)."""
        if self.given_model is not None:
            return self.given_model
        from repro.train.init import apply_init
        from repro.train.seeding import seed_everything

        build = import_paper_module(self.project, self.paper, "model", "build_model")
        config = self.model_config(build)
        seed_everything(self.seed if seed is None else seed, self.cfg.deterministic)
        try:
            model = build(config, **dm.model_kwargs())
        except (TypeError, ValueError) as e:
            raise PaperError(
                f"papers/{self.paper}/model.py: build_model failed with the model config "
                f"{self.cfg.model}: {e}"
            ) from e
        self.model_info = ModelInfo(apply_init(model, self.cfg.init.scheme), model_summary(model))
        return model

    def model_config(self, build) -> Any:
        """What build_model's first argument gets (see typed_model_config)."""
        return typed_model_config(build, self.cfg.model, self.resolved.describe)


def typed_model_config(build, model: dict[str, Any], describe=None) -> Any:
    """The `model:` section as the paper's MODEL_CONFIG dataclass when build_model annotates its
    first parameter with it (model.py then needs nothing from repro), else the plain dict (papers
    written before)."""
    import inspect

    from repro.config.typed import from_dict

    schema = getattr(inspect.getmodule(build), "MODEL_CONFIG", None)
    params = list(inspect.signature(build).parameters.values())
    if schema is None or not params:
        return model
    note = params[0].annotation
    if note is schema or note == schema.__name__:
        return from_dict(schema, model, "model", describe)
    return model


def model_summary(model) -> dict[str, Any]:
    """Parameter names, shapes and counts: what `repro diff` compares between two runs."""
    from repro.train.params import count_params

    return {
        "class": type(model).__name__,
        "params": {n: list(p.shape) for n, p in model.named_parameters()},
        **count_params(model),
    }

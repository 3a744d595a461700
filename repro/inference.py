"""A full run's trained model, ready to use: the run's recorded config, the paper's code (as it is
now, or the run's own snapshot), the datamodule with the data state fitted in training, and the
checkpoint's weights. What `repro predict` and `repro eval` start from.

Nothing here reads the project's conf/: a run directory copied into another project (with repro
and the paper's code, or with `--code recorded` not even that) is enough.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from repro.errors import ConfigError, GateRefused, PaperError, ReproError
from repro.project import Project

Code = Literal["current", "recorded"]
CODES = ("current", "recorded")
CHECKPOINTS = ("best", "last")


@dataclass
class Trained:
    """One seed of a full run, loaded."""

    run: Any  # repro.records.Run: the full run
    seed: int
    where: Path  # the seed's directory: the run's own, or seed_<s>/ of a run with several seeds
    config: dict[str, Any]  # the run's recorded config
    package: str  # the import name of the paper's code (papers.<name>)
    dm: Any  # the paper's datamodule: fitted state restored (or rebuilt from the data)
    task: Any  # repro.tasks.base.Task
    model: Any  # torch.nn.Module, eval mode, the checkpoint's weights
    checkpoint: Path
    fitted: str  # where the datamodule's fitted state came from, in words
    code: Code


def full_run(project: Project, run_id: str):
    """The full run `run_id` (id or unique prefix), which holds trained checkpoints."""
    from repro.records import load_run

    run = load_run(project.runs_dir, run_id)
    if run.stage != "full":
        raise GateRefused(
            f"run {run.id}: expected a full run (it holds the trained checkpoints), found a "
            f"{run.stage} run; see `repro log -s full`"
        )
    return run


def recorded_config(run) -> dict[str, Any]:
    """The run's resolved config as recorded, with the keys using it needs checked: a one-line
    ReproError naming a missing one."""
    config = run.record.config or {}
    for key in ("seed", "seeds", "deterministic", "data", "model", "paper"):
        if key not in config:
            raise ReproError(
                f"run {run.id}: record.json config: expected the key {key!r} (a full run's "
                "resolved config), found none; the record was edited or cut off"
            )
    return config


def task_of(config: dict[str, Any]) -> str:
    """paper.task of a recorded config; records written before tasks existed were classifiers'
    (the schema's default says so)."""
    from dataclasses import fields

    from repro.config.schema import PaperMeta

    default = next(f.default for f in fields(PaperMeta) if f.name == "task")
    return config["paper"].get("task") or default


def seeds_of(run) -> list[int]:
    """The seeds a full run trained, from its recorded config (seed, seeds)."""
    config = recorded_config(run)
    return [int(config["seed"]) + i for i in range(int(config["seeds"]))]


def seed_dir(run, seed: int) -> Path:
    """Where a seed's checkpoints and files are: the run directory, or seed_<s>/ for several."""
    return run.dir if len(seeds_of(run)) == 1 else run.dir / f"seed_{seed}"


def checkpoint_path(run, seed: int, which: str = "best") -> Path:
    """checkpoints/best.ckpt (or last.ckpt) of a seed; a GateRefused naming what is missing."""
    if which not in CHECKPOINTS:
        raise ReproError(f"--checkpoint: expected one of {', '.join(CHECKPOINTS)}, found {which!r}")
    path = seed_dir(run, seed) / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        raise GateRefused(
            f"{path}: expected the {which} checkpoint of seed {seed} of run {run.id}, found no "
            f"file (status {run.effective_status}); a full run that stopped before its first "
            "epoch ended has none: resume it (`repro stage full --resume`)"
        )
    return path


def data_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The recorded config with `data.<key>=<value>` overrides applied (another file, another
    folder, a batch size); any other key is a ConfigError: the model must stay the checkpoint's."""
    from omegaconf import OmegaConf

    bad = [o for o in overrides if not o.startswith("data.") or "=" not in o]
    if bad:
        raise ConfigError(
            f"override {bad[0]!r}: expected data.<key>=<value> (evaluating a trained model may "
            "change its data, never its model or training); e.g. data.sample_dir=other/"
        )
    if not overrides:
        return config
    merged = OmegaConf.merge(OmegaConf.create(config), OmegaConf.from_dotlist(overrides))
    return OmegaConf.to_container(merged, resolve=True)


def load_trained(
    project: Project,
    run,
    seed: int | None = None,
    code: Code = "current",
    checkpoint: str = "best",
) -> Trained:
    """Seed `seed` (default: the run's first) of the full run `run`, ready to predict: built with
    the run's recorded config, whatever the project's conf/ says now."""
    from repro.context import typed_model_config
    from repro.storage import shown_path
    from repro.train.evaluate import CheckpointMismatch, load_weights
    from repro.train.fitted_state import FILE, restore_fitted_state
    from repro.train.seeding import seed_everything

    if code not in CODES:
        raise ReproError(f"--code: expected one of {', '.join(CODES)}, found {code!r}")
    seeds = seeds_of(run)
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ReproError(
            f"--seed {seed}: expected a seed run {run.id} trained ({', '.join(map(str, seeds))})"
        )
    ckpt = checkpoint_path(run, seed, checkpoint)
    config = recorded_config(run)
    package = paper_package(project, run, config["paper"].get("code") or run.paper, code)
    model_mod = _import(f"{package}.model", run, code)
    dm = build_datamodule(project, run, package, code, config, seed)
    where = seed_dir(run, seed)
    if restore_fitted_state(dm, where):
        fitted = shown_path(where / FILE)
    else:
        dm.setup("fit")
        fitted = (
            "rebuilt from the training data (the run holds no fitted_state.pt: its datamodule "
            "defines no fitted_state(), or an older repro trained it)"
        )
    build = getattr(model_mod, "build_model", None)
    if build is None:
        raise PaperError(f"{package}.model: expected a function build_model(), found none")
    seed_everything(seed, bool(config["deterministic"]))
    model = build(typed_model_config(build, dict(config["model"])), **dm.model_kwargs())
    try:
        load_weights(model, ckpt)
    except CheckpointMismatch as e:
        raise ReproError(f"{e}; {_why_mismatch(project, run, package, code)}") from e
    model.eval()
    return Trained(run, seed, where, config, package, dm, dm.task, model, ckpt, fitted, code)


def build_datamodule(project: Project, run, package: str, code: Code, config: dict, seed: int):
    """The paper's datamodule for a config (the run's, or it with data overrides), not set up."""
    from repro.config.schema import DataConfig
    from repro.config.typed import from_dict
    from repro.tasks import load_task_class

    data_mod = _import(f"{package}.data", run, code)
    dm = _call(data_mod, "build_datamodule", from_dict(DataConfig, config["data"], "data"), seed)
    dm.task_class = load_task_class(task_of(config), project, run.paper)
    return dm


def paper_package(project: Project, run, name: str, code: Code) -> str:
    """The import name of the paper's code: `papers.<name>` from the project (current), or the
    run's snapshot (`code/` in its directory) installed under that name (recorded)."""
    project.activate()
    package = f"papers.{name}"
    if code == "recorded":
        install_snapshot(package, run.dir / "code", project.papers_dir)
    elif not (project.papers_dir / name).is_dir():
        raise PaperError(
            f"papers/{name}/: expected the paper's code (model.py, data.py) in this project, "
            f"found no folder; copy it here, or run with --code recorded (the code run {run.id} "
            "trained with)"
        )
    return package


def install_snapshot(package: str, snapshot: Path, papers_dir: Path) -> None:
    """Make `package` (papers.<name>) import from a run's code snapshot: its modules, and what
    they import of their own package (`from papers.bimpm import fast_matching`), come from there.
    Modules of that package imported before are forgotten first."""
    if not snapshot.is_dir():
        raise ReproError(
            f"{snapshot}: expected the run's code snapshot, found no folder; --code recorded "
            "needs it (runs recorded by repro keep one)"
        )
    for mod in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[mod]
    if "papers" not in sys.modules:
        try:
            importlib.import_module("papers")
        except ImportError:  # a project without papers/__init__.py
            root = types.ModuleType("papers")
            root.__path__ = [str(papers_dir)]
            sys.modules["papers"] = root
    init = snapshot / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(snapshot)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    else:
        module = types.ModuleType(package)
        module.__path__ = [str(snapshot)]
        sys.modules[package] = module


def code_changes(project: Project, run, package: str) -> list[str]:
    """The paper's code files that differ between the run's fingerprint and the project now."""
    from repro.fingerprint import file_digest

    folder = package.replace(".", "/") + "/"
    recorded = {
        f: h
        for f, h in (run.record.fingerprint.files if run.record.fingerprint else {}).items()
        if f.startswith(folder) and is_code_file(f)
    }
    here = project.root / folder
    now = {
        folder + p.name: file_digest(p)
        for p in sorted(here.glob("*.py"))
        if p.name != "__init__.py"
    }
    return [f for f in sorted(set(recorded) | set(now)) if recorded.get(f) != now.get(f)]


def is_code_file(path: str) -> bool:
    """A fingerprint's file that is the paper's code (papers/<name>/<module>.py), not data (the
    BiMPM sample's papers/bimpm/sample/train.tsv is data)."""
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == "papers" and parts[2].endswith(".py")


def _why_mismatch(project: Project, run, package: str, code: Code) -> str:
    if code == "recorded":
        return (
            f"this is run {run.id}'s own code snapshot, so its checkpoint or code/ folder was "
            "altered since it was written"
        )
    changed = code_changes(project, run, package)
    since = (
        f"changed since run {run.id}: {', '.join(changed)}"
        if changed
        else f"the paper's code is as run {run.id} recorded it (repro's code changed?)"
    )
    return (
        f"{since}; run with --code recorded to rebuild the model from the run's code snapshot, "
        "or make the model's parameter names and shapes the checkpoint's again"
    )


def _import(name: str, run, code: Code):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):
            where = "the run's code snapshot" if code == "recorded" else "this project"
            raise PaperError(
                f"{name.replace('.', '/')}.py: expected the paper's module in {where}, found none"
            ) from e
        raise


def _call(module, attr: str, *args):
    fn = getattr(module, attr, None)
    if fn is None:
        raise PaperError(f"{module.__name__}: expected a function {attr}(), found none")
    return fn(*args)

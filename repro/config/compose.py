"""Compose a run's config: conf/ + the paper's YAML + the command line, tagged and typed once.

Provenance of each leaf key (dotted path):
  override      given on the command line
  paper / authors-code / default   as declared in the paper config's `paper.provenance` map
                (e.g. "paper: Table 1"), for values the paper config sets
  unsourced     set by the paper config without a provenance entry (say where it comes from!)
  default       not set by the paper config: repro filled it in (conf/defaults.yaml, conf/stage/)

The composed dict is validated once against repro.config.schema; code below the CLI reads the
typed `Resolved.cfg`, never the dict with a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repro.config.schema import RunConfig
from repro.config.typed import from_dict
from repro.config.upgrade import upgrade
from repro.config.yamlfile import load_yaml as _load_yaml
from repro.config.yamlfile import parse_yaml as _parse_yaml
from repro.config.yamlfile import read_text as _read
from repro.errors import ConfigError
from repro.project import Project

GATE_SECTIONS = (
    "stage.",
    "logger.",
    "launcher.",
    "dev.",
)  # how repro runs, not assumptions about the paper
PROVENANCE_KINDS = ("paper", "authors-code", "default", "override", "unsourced")


@dataclass
class Resolved:
    """A composed, validated config: the plain dict (recorded), the typed view, and provenance."""

    paper: str
    config: dict[str, Any]
    overrides: list[str]
    cfg: RunConfig
    provenance: dict[str, str] = field(default_factory=dict)  # dotted key -> "kind: where"

    def value(self, dotted: str) -> Any:
        """The composed value at a dotted key (KeyError if the config has no such key)."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(dotted)
            node = node[part]
        return node

    def describe(self, key: str) -> str | None:
        """Where the value at `key` came from, in words, for error messages."""
        overridden = {o.split("=", 1)[0].lstrip("+~") for o in self.overrides}
        if any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in overridden):
            return "set on the command line"
        kind = kind_of(self.provenance.get(key, ""))
        if kind in ("paper", "authors-code", "unsourced") or key.startswith("paper."):
            return f"set in conf/paper/{self.paper}.yaml"
        if kind == "default":
            return "set in conf/"
        return None

    def defaults(self) -> dict[str, Any]:
        """Every value repro filled in because the paper is silent."""
        flat = flatten(self.config)
        return {
            k: flat[k]
            for k, p in self.provenance.items()
            if kind_of(p) == "default" and k in flat and not k.startswith(GATE_SECTIONS)
        }


def kind_of(provenance: str) -> str:
    return provenance.split(":", 1)[0].strip()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def compose(project: Project, paper: str, overrides: list[str] | tuple[str, ...] = ()) -> Resolved:
    """Compose conf/config.yaml + conf/paper/<paper>.yaml + overrides, tag provenance, validate.

    Without overrides and interpolations the composition is a plain merge of YAML files in the
    defaults-list order, done without importing Hydra (0.4 s here) so `repro status` starts fast;
    tests/test_compose_paths.py checks it equals Hydra's on every config of the repo and template.
    """
    overrides = list(overrides)
    _check_overrides(overrides)
    config = None if overrides else _compose_plain(project, paper)
    if config is None:
        try:
            config = compose_hydra(project, paper, _paper_keys_added(project, paper, overrides))
        except UnicodeDecodeError:  # Hydra read a file that is not UTF-8: name it
            for path in sorted(project.conf_dir.rglob("*.yaml")):
                _read(path)
            raise
        except yaml.YAMLError as e:  # e.g. a key twice in a mapping (Hydra's loader refuses it)
            mark = getattr(e, "problem_mark", None)
            where = f"{mark.name}:{mark.line + 1}" if mark is not None else "a file under conf/"
            problem = (getattr(e, "problem", None) or str(e).splitlines()[0]).removeprefix("found ")
            raise ConfigError(
                f"{where}: expected valid YAML, found {problem}; fix the file"
            ) from None
    config, filled = upgrade(project, config, overrides)  # a conf/ from an older `repro init`
    paper_file = project.conf_dir / "paper" / f"{paper}.yaml"
    provenance = _provenance(config, _load_yaml(paper_file), overrides, paper_file)
    provenance.update(_leaves(config, filled))
    resolved = Resolved(paper, config, overrides, None, provenance)  # type: ignore[arg-type]
    resolved.cfg = from_dict(RunConfig, config, "", resolved.describe)
    _check_provenance_kinds(resolved.cfg.paper.provenance, paper_file)
    _check_task(project, resolved)
    return resolved


def _leaves(config: dict, filled: dict[str, str]) -> dict[str, str]:
    """The provenance of every leaf under the keys filled in from repro's own conf/."""
    out = {}
    for key, where in filled.items():
        if key.startswith("paper."):
            continue  # the paper section's keys are not tagged (see _provenance)
        node: Any = config
        for part in key.split("."):
            node = node[part]
        leaves = flatten(node, key + ".") if isinstance(node, dict) and node else {key: node}
        out.update(dict.fromkeys(leaves, where))
    return out


def _check_task(project: Project, resolved: Resolved) -> None:
    """The task is one repro knows (or the paper's own class), and every metric the config names
    is one a built-in task measures (a paper's own task is checked once its code is imported,
    before the run starts: repro.context.StageContext.check_paper_config)."""
    from repro.tasks import builtin_metrics, check_metrics_config, check_task_name

    task = check_task_name(resolved.cfg.paper.task, project.package(resolved.paper))
    specs = builtin_metrics(task)
    if specs is not None:
        check_metrics_config(resolved.cfg, specs, task, resolved.describe)


def _check_overrides(overrides: list[str]) -> None:
    """Overrides repro cannot honour fail before anything is composed."""
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" not in o and not o.startswith("~"):
            raise ConfigError(f"override '{o}': expected key=value (e.g. optim.lr=0.001)")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(
                f"override '{o}': hydra.* settings are not used: repro owns run directories "
                "(runs/<paper>/<stage>/<run-id>) and logging; drop the override"
            )
        if key == "paper":
            raise ConfigError(f"override '{o}': choose the paper with --paper, not paper=")


PAPER_SECTIONS = ("model.", "data.")  # keys a paper's own code declares (MODEL_CONFIG, DATA_CONFIG)


def _paper_keys_added(project: Project, paper: str, overrides: list[str]) -> list[str]:
    """Overrides of the paper's own `model:`/`data:` keys that its YAML leaves to the defaults of
    its dataclasses (`data.quora_dir=...`) are added, as Hydra's `++key=value` does, instead of
    being refused as unknown: the paper's code declares them, and the paper's dataclass checks
    them (a typo is one line naming the valid keys) before any run starts."""
    tree = _compose_plain(project, paper)
    if tree is None:
        return overrides
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if key.startswith(PAPER_SECTIONS) and not _has_key(tree, key):
            o = "++" + o
        out.append(o)
    return out


def _has_key(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _package_of(path: Path, default: str) -> str:
    first = _read(path).splitlines()[:3]
    for line in first:
        if line.startswith("# @package"):
            return line.split(None, 2)[2].strip()
    return default


def _compose_plain(project: Project, paper: str) -> dict | None:
    """The defaults list of conf/config.yaml merged in order, or None if Hydra is needed."""
    conf = project.conf_dir
    top = _load_yaml(conf / "config.yaml")
    merged: dict = {}
    for entry in top.get("defaults", []):
        if entry == "_self_":
            rest = {k: v for k, v in top.items() if k != "defaults"}
            merged = _merge(merged, rest)
            continue
        if isinstance(entry, str):
            path, package = conf / f"{entry}.yaml", "_global_"
        elif isinstance(entry, dict) and len(entry) == 1:
            group, option = next(iter(entry.items()))
            option = paper if group == "paper" else option
            path, package = conf / group / f"{option}.yaml", group
        else:
            return None
        if not path.exists():
            return None
        text = _read(path)
        if "${" in text:
            return None
        node = _parse_yaml(path, text)
        package = _package_of(path, package)
        if package != "_global_":
            for part in reversed(package.split(".")):
                node = {part: node}
        merged = _merge(merged, node)
    return merged


def compose_hydra(project: Project, paper: str, overrides: list[str]) -> dict[str, Any]:
    """The same composition through Hydra (command-line overrides use Hydra's grammar)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(project.conf_dir), version_base="1.3"):
            cfg = hydra_compose("config", overrides=[f"paper={paper}", *overrides])
    except (HydraException, OmegaConfBaseException) as e:
        hint = _valid_keys_hint(project, paper, overrides, str(e))
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        first = "; ".join(lines[:2]) if lines else type(e).__name__  # Hydra's hint is its 2nd line
        raise ConfigError(
            f"could not compose the config for paper '{paper}' with overrides {overrides}: "
            f"{first}{hint}"
        ) from e
    finally:
        GlobalHydra.instance().clear()
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config for paper '{paper}' does not resolve: {e}") from e
    assert isinstance(config, dict)
    return config


def _valid_keys_hint(project: Project, paper: str, overrides: list[str], message: str) -> str:
    """For "Could not override 'a.b'": the keys that do exist under 'a'."""
    import re

    m = re.search(r"Could not override '([^']+)'", message)
    groups = {d.name for d in project.conf_dir.iterdir() if d.is_dir()}
    if not m or any(o.split("=", 1)[0].lstrip("+~") in groups for o in overrides):
        return ""  # a group was chosen (launcher=slurm): the plain tree is not what was composed
    tree = _compose_plain(project, paper)
    if tree is None:
        return ""
    parent, _, _ = m.group(1).rpartition(".")
    node: Any = tree
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return ""
    return f"; valid keys under '{parent or '<top>'}': {sorted(node)}"


def _check_provenance_kinds(provenance: dict[str, str], paper_file: Path) -> None:
    for key, prov in provenance.items():
        if kind_of(str(prov)) not in PROVENANCE_KINDS:
            raise ConfigError(
                f"{paper_file}: paper.provenance.{key}: expected 'paper: <where>', "
                f"'authors-code: <where>' or 'default: <why>', found {prov!r}; one of "
                f"{list(PROVENANCE_KINDS[:3])} followed by ': where' (e.g. 'paper: Table 1')"
            )


def _provenance(
    config: dict, paper_cfg: dict, overrides: list[str], paper_file: Path
) -> dict[str, str]:
    declared = {
        k: str(v) for k, v in ((paper_cfg.get("paper") or {}).get("provenance") or {}).items()
    }
    paper_keys = set(flatten({k: v for k, v in paper_cfg.items() if k != "paper"}))
    overridden = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    prov: dict[str, str] = {}
    for key in flatten({k: v for k, v in config.items() if k != "paper"}):
        if key in overridden or any(key.startswith(o + ".") for o in overridden):
            prov[key] = "override: command line"
        elif key in paper_keys:
            prov[key] = declared.get(
                key, f"unsourced: set in {paper_file.name} without a provenance entry"
            )
        else:
            prov[key] = (
                "default: repro (conf/defaults.yaml)"
                if not key.startswith("stage.")
                else "default: repro (conf/stage/)"
            )
    return prov

"""A project made by an older `repro init` keeps its own copy of repro's conf/. When the installed
repro adds a setting, that copy lacks it; when it retires one, the copy still sets it. Either
stopped every command of the project ("stage.overfit.lr: expected a number, found no such key").

Here, after composition and before the config is typed: a key the project's conf/ lacks is filled
in from the installed repro's own conf/ (its one default), and recorded as such in the
provenance; a retired key is dropped, with a note saying what replaced it and to delete the line.
Keys the project sets are never changed. In repro's own checkout the two conf/ are one folder and
nothing happens.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from repro.config.yamlfile import load_yaml, parse_yaml
from repro.project import Project

# dotted key -> (what replaced it, the key that takes its value when the project leaves that one
# null or unset); said once per process when a project still sets it
RETIRED = {
    "stage.overfit.fallback_lr": (
        "the overfit gate's learning rate is optim.lr, else stage.overfit.lr (one key, one default)",
        "stage.overfit.lr",
    ),
}
GROUPS = ("launcher", "logger")  # chosen per run (launcher=slurm); only the chosen file fills in
_SAID: set[str] = set()  # notes already printed by this process


def upgrade(
    project: Project, config: dict[str, Any], overrides: list[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(config with retired keys dropped and missing keys filled, {filled dotted key: where})."""
    for key, (why, heir) in RETIRED.items():
        found, value = _pop(config, key)
        if not found:
            continue
        moved = ""
        if heir and _get(config, heir) is None:
            _set(config, heir, value)
            moved = f"; its value {value} now sets {heir}"
        _note(f"{key} (set in {project.conf_dir}) is retired: {why}{moved}; delete the line")
    package = _package_conf()
    if package is None or _same_dir(project.conf_dir, package[0]):
        return config, {}
    filled: dict[str, str] = {}
    chosen = _chosen_options(project, overrides)
    for rel, text in sorted(package[1].items()):
        parts = rel.split("/")
        if parts[0] in GROUPS and chosen.get(parts[0]) != Path(parts[-1]).stem:
            continue
        if rel == "config.yaml":
            continue
        node = _nested(rel, text)
        for key in _fill_missing(config, node, ""):
            filled[key] = f"default: repro's conf/{rel} (this project's conf/ predates the key)"
    return config, filled


def _note(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        print(f"Note: {message}", file=sys.stderr)


def _parent(config: dict, dotted: str, make: bool = False) -> tuple[dict | None, str]:
    *parents, last = dotted.split(".")
    node: Any = config
    for part in parents:
        if make and isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def _pop(config: dict, dotted: str) -> tuple[bool, Any]:
    node, last = _parent(config, dotted)
    if node is None or last not in node:
        return False, None
    return True, node.pop(last)


def _get(config: dict, dotted: str) -> Any:
    node, last = _parent(config, dotted)
    return None if node is None else node.get(last)


def _set(config: dict, dotted: str, value: Any) -> None:
    node, last = _parent(config, dotted, make=True)
    assert node is not None
    node[last] = value


def _package_conf() -> tuple[Path, dict[str, str]] | None:
    """The installed repro's conf/ folder and its YAML files {path relative to conf/: text}."""
    from repro.init_project import DEFAULTS_PACKAGE, default_conf

    try:
        from importlib import resources

        root = Path(str(resources.files(DEFAULTS_PACKAGE)))
    except (ModuleNotFoundError, TypeError):
        return None
    files = {
        rel.removeprefix("conf/"): data.decode("utf-8") for rel, data in default_conf().items()
    }
    return root, files


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _chosen_options(project: Project, overrides: list[str]) -> dict[str, str]:
    """{group: option} as the project's config.yaml chooses them, then the command line."""
    chosen: dict[str, str] = {}
    top = project.conf_dir / "config.yaml"
    for entry in load_yaml(top).get("defaults", []) if top.exists() else []:
        if isinstance(entry, dict) and len(entry) == 1:
            group, option = next(iter(entry.items()))
            chosen[str(group)] = str(option)
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") in GROUPS:
            chosen[key.lstrip("+~")] = value
    return chosen


def _nested(rel: str, text: str) -> dict[str, Any]:
    """A conf file's mapping placed at its package (`# @package a.b`, else its group)."""
    node = parse_yaml(Path("conf") / rel, text)
    package = "_global_" if "/" not in rel else rel.split("/")[0]
    for line in text.splitlines()[:3]:
        if line.startswith("# @package"):
            package = line.split(None, 2)[2].strip()
    if package != "_global_":
        for part in reversed(package.split(".")):
            node = {part: node}
    return node


def _fill_missing(config: dict, node: dict, prefix: str) -> list[str]:
    """Add to `config` every key of `node` it lacks (recursively); the dotted keys added."""
    added = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        if k not in config:
            config[k] = v
            added.append(key)
        elif isinstance(v, dict) and isinstance(config[k], dict):
            added += _fill_missing(config[k], v, key + ".")
    return added

"""Reading conf/ YAML as Hydra reads it, with errors that name the file, line and problem (shared by
the composer and the upgrade of an older project's conf/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from repro.errors import ConfigError


# libyaml's C parser when PyYAML was built with it: parsing conf/ is most of `repro status`
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's C parser when built
    """YAML as Hydra reads it: a key given twice in one mapping is an error (PyYAML keeps the
    last one silently, so a paper config appending a second `trainer:` section lost the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"found duplicate key {key}",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_LOADER = _Loader


def read_text(path: Path) -> str:
    """A config file's text; a byte that is not UTF-8 is a ConfigError naming the file, line and
    byte (was a UnicodeDecodeError traceback from every command: issue 20)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: expected UTF-8 text, found the byte {data[e.start]:#04x} "
            f"({e.reason}); save the file as UTF-8"
        ) from None


def load_yaml(path: Path) -> dict[str, Any]:
    return parse_yaml(path, read_text(path))


def parse_yaml(path: Path, text: str) -> dict[str, Any]:
    """A YAML mapping, or a ConfigError naming the file, line and problem."""
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if problem.startswith("found duplicate key"):  # _Loader, in Hydra's words
            raise ConfigError(f"{where}: expected valid YAML, {problem}; fix the file") from None
        raise ConfigError(
            f"{where}: expected valid YAML, found a syntax error ({problem}); fix the file "
            "(quote values that contain ': ', '#', or start with a special character)"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping (key: value lines), found {type(data).__name__}"
        )
    return data

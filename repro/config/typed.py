"""Plain dicts (composed YAML, JSON records) -> typed dataclasses, checked once, with one-line errors.

`from_dict(Cls, data, where)` walks the dataclass's type hints: it rejects unknown keys (listing
the valid ones), reports missing keys, checks each value's type (int, float, bool, str, None,
Literal choices, tuples, lists, dicts, nested dataclasses) and the bounds a field declares in
its metadata (`field(metadata=bound(ge=1))`). Every error names the dotted key, what was
expected and what was found. A dataclass may name one `EXTRA_FIELD`: unknown keys are then kept
there (a section shared by repro and the paper) instead of rejected.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from repro.errors import ConfigError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def bound(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> dict[str, float]:
    """Field metadata for a numeric bound: `field(metadata=bound(gt=0))`."""
    return {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}


class Invalid(ValueError):
    """Raised by a dataclass's __post_init__: `field` is the offending key, relative to it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def from_dict(cls: type[T], data: Any, where: str = "", describe: Any = None) -> T:
    """`data` as an instance of the dataclass `cls`; a ConfigError names the key on any mismatch.

    where: dotted path of `data` in the config ("" at the top). describe(key) -> a note on where
    the value came from (e.g. "set on the command line"), appended to errors; optional.
    """
    return _Converter(describe)._dataclass(cls, data, where)


def describe_value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return repr(value)


class _Converter:
    def __init__(self, describe: Any = None):
        self.describe = describe

    def key(self, where: str) -> str:
        """The dotted key, with where its value came from when known."""
        came = self.describe(where) if self.describe and where else None
        return f"{where} ({came})" if came else where or "<config>"

    def fail(self, where: str, expected: str, value: Any, hint: str = "") -> ConfigError:
        msg = f"{self.key(where)}: expected {expected}, found {describe_value(value)}"
        return ConfigError(msg + (f"; {hint}" if hint else ""))

    def _dataclass(self, cls: type[T], data: Any, where: str) -> T:
        if not isinstance(data, dict):
            raise self.fail(where, f"a mapping with keys {_names(cls)}", data)
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        extra_field = getattr(cls, "EXTRA_FIELD", None)
        unknown = [k for k in data if k not in fields or k == extra_field]
        if unknown and extra_field is None:
            key = self.key(_join(where, str(unknown[0])))
            raise ConfigError(
                f"{key}: unknown key; valid keys under '{where or '<top>'}': "
                f"{sorted(fields)}" + _flow_hint(unknown[0])
            )
        values: dict[str, Any] = {}
        for name, f in fields.items():
            if name == extra_field:
                values[name] = {k: data[k] for k in unknown}
                continue
            key = _join(where, name)
            if name not in data:
                if f.default is _MISSING and f.default_factory is _MISSING:
                    raise ConfigError(
                        f"{key}: expected {_expect(hints[name])}, found no such key; every repro "
                        "key has its default in conf/ (compare yours with a fresh `repro init`)"
                    )
                continue
            values[name] = self.value(hints[name], data[name], key)
            self._check_bounds(f, values[name], key)
        try:
            return cls(**values)
        except Invalid as e:  # a __post_init__ check across fields
            raise ConfigError(f"{self.key(_join(where, e.field))}: {e.message}") from None
        except ValueError as e:  # a paper's own dataclass (model.py imports nothing from repro)
            raise ConfigError(f"{self.key(where)}: {e}") from None

    def value(self, tp: Any, v: Any, where: str) -> Any:
        origin = get_origin(tp)
        if tp is Any:
            return v
        if origin in (Union, types.UnionType):
            return self._union(tp, v, where)
        if origin is Literal:
            if v in get_args(tp) and type(v) in {type(a) for a in get_args(tp)}:
                return v
            raise self.fail(where, f"one of {list(get_args(tp))}", v)
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, v, where)
        if origin in (list, tuple) or tp in (list, tuple):
            return self._sequence(tp, v, where)
        if origin is dict or tp is dict:
            if not isinstance(v, dict):
                raise self.fail(where, "a mapping", v)
            args = get_args(tp)
            vt = args[1] if args else Any
            return {k: self.value(vt, x, _join(where, str(k))) for k, x in v.items()}
        return self._scalar(tp, v, where)

    def _scalar(self, tp: Any, v: Any, where: str) -> Any:
        if tp is bool:
            if isinstance(v, bool):
                return v
            raise self.fail(where, "true or false", v)
        if tp is int:
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            raise self.fail(where, "an integer", v)
        if tp is float:
            if isinstance(v, int | float) and not isinstance(v, bool):
                if not math.isfinite(v):
                    raise self.fail(where, "a finite number", v)
                return float(v)
            raise self.fail(where, "a number", v)
        if tp is str:
            if isinstance(v, str):
                return v
            raise self.fail(where, "a string", v)
        if tp is type(None):
            if v is None:
                return None
            raise self.fail(where, "null", v)
        raise TypeError(f"from_dict cannot convert to {tp!r} (at {where})")  # a schema bug

    def _union(self, tp: Any, v: Any, where: str) -> Any:
        args = get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return self.value(arg, v, where)
            except ConfigError as e:
                errors.append(e)
        expected = " or ".join(_expect(a) for a in args)
        # One alternative that is a structure (e.g. a nested dataclass) explains itself better.
        structured = [e for e, a in zip(errors, args, strict=False) if not _is_scalar(a)]
        if len(args) - (type(None) in args) == 1 and structured:
            raise structured[0]
        raise self.fail(where, expected, v)

    def _sequence(self, tp: Any, v: Any, where: str) -> Any:
        if not isinstance(v, list | tuple):
            raise self.fail(where, _expect(tp), v)
        args = get_args(tp)
        if get_origin(tp) is tuple and args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise self.fail(where, _expect(tp), v)
            return tuple(
                self.value(a, x, f"{where}[{i}]")
                for i, (a, x) in enumerate(zip(args, v, strict=True))
            )
        item = args[0] if args else Any
        items = [self.value(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
        return tuple(items) if get_origin(tp) is tuple or tp is tuple else items

    def _check_bounds(self, f: dataclasses.Field, value: Any, where: str) -> None:
        meta = f.metadata
        if not meta or not isinstance(value, int | float) or isinstance(value, bool):
            return
        checks = (
            ("ge", ">=", value >= meta.get("ge", -math.inf)),
            ("gt", ">", value > meta.get("gt", -math.inf)),
            ("le", "<=", value <= meta.get("le", math.inf)),
            ("lt", "<", value < meta.get("lt", math.inf)),
        )
        kind = "an integer" if isinstance(value, int) else "a number"
        for name, op, ok in checks:
            if name in meta and not ok:
                raise self.fail(where, f"{kind} {op} {meta[name]:g}", value)


@functools.lru_cache(maxsize=512)
def _hints(cls: type) -> dict[str, Any]:
    """The field types, resolved in the namespace the class was defined in (its generated
    __init__'s globals): tests that re-import a paper's package must not break the lookup.
    Cached per class: resolving them is most of the cost of checking a record's shape, and
    `status` checks every record of a paper."""
    init = getattr(cls, "__init__", None)
    return get_type_hints(cls, globalns=getattr(init, "__globals__", None))


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _names(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.name != getattr(cls, "EXTRA_FIELD", None)
    ]


def _is_scalar(tp: Any) -> bool:
    return tp in (int, float, bool, str, type(None)) or get_origin(tp) is Literal


def _expect(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return f"one of {list(get_args(tp))}"
    if origin in (Union, types.UnionType):
        return " or ".join(_expect(a) for a in get_args(tp))
    if origin is tuple and get_args(tp) and get_args(tp)[-1] is not Ellipsis:
        return f"a list of {len(get_args(tp))} ({', '.join(_expect(a) for a in get_args(tp))})"
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_expect(args[0])}" if args else "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _flow_hint(key: Any) -> str:
    """YAML flow mappings split at commas: `{name: a (b, c)}` gives a stray key 'c)'."""
    text = str(key)
    if any(ch in text for ch in "()[] ") or text.endswith(")"):
        return (
            f" (a stray key like {text!r} often comes from an unquoted comma in a flow-style "
            "mapping such as {name: a (b, c)}: quote the value)"
        )
    return ""

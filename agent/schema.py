"""A small typed-schema engine: TOML tables onto frozen dataclasses, every problem named."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field
from typing import Any, TypeVar

T = TypeVar("T")

Check = Callable[[Any], str | None]


class ConfigError(Exception):
    """Raised with every problem found in a configuration, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    check: Check | None = None,
    choices: tuple[str, ...] | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a config field with its description and optional validation."""
    meta = {"doc": doc, "check": check, "choices": choices}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def pattern(regex: str, what: str) -> Check:
    """A check that the value fully matches a regular expression."""
    compiled = re.compile(regex)

    def check(value: Any) -> str | None:
        return None if compiled.fullmatch(str(value)) else f"expected {what}"

    return check


def in_range(low: float | None = None, high: float | None = None) -> Check:
    """A check that a number lies within [low, high]."""

    def check(value: Any) -> str | None:
        if low is not None and value < low:
            return f"expected a number >= {low}"
        if high is not None and value > high:
            return f"expected a number <= {high}"
        return None

    return check


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, dict | list) else type(value).__name__


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is dict:
        return "a table of strings"
    if origin is list:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _coerce_scalar(tp: Any, value: Any) -> tuple[bool, Any]:
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    return False, value


def _convert(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where} = {_show(value)}: expected a table")
            return None
        return build(tp, value, where, problems)  # type: ignore[arg-type]
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where} = {_show(value)}: expected a list")
            return None
        return [_convert(item_tp, v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            problems.append(f"{where} = {_show(value)}: expected a table of strings")
            return None
        return dict(value)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value, where, problems)
    ok, converted = _coerce_scalar(tp, value)
    if not ok:
        problems.append(f"{where} = {_show(value)}: expected {_type_name(tp)}")
        return None
    return converted


def _check_field(f: Field[Any], value: Any, where: str, problems: list[str]) -> None:
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        problems.append(f"{where} = {value!r}: expected one of {', '.join(choices)}")
        return
    check = f.metadata.get("check")
    message = check(value) if check else None
    if message:
        problems.append(f"{where} = {_show(value)}: {message}")


def build(cls: type[T], data: dict[str, Any], where: str, problems: list[str]) -> T | None:
    """Build dataclass `cls` from a TOML table, appending each problem to `problems`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{prefix}{key}: unknown key (known keys: {known})")
    for name, f in fields.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{prefix}{name}: missing; {f.metadata.get('doc', 'required')}")
            continue
        value = _convert(hints[name], data[name], f"{prefix}{name}", problems)
        if value is not None:
            _check_field(f, value, f"{prefix}{name}", problems)
            kwargs[name] = value
    if len(problems) != before:
        return None
    return cls(**kwargs)


def describe(cls: type[Any]) -> dict[str, str]:
    """Field name -> description, for documentation and `--help` output."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def parse(cls: type[T], data: dict[str, Any], cross: Callable[[T], list[str]]) -> T:
    """Build `cls` from a TOML document, then run the cross-field checks; ConfigError on any."""
    problems: list[str] = []
    cfg = build(cls, data, "", problems)
    if cfg is None:
        raise ConfigError(problems)
    problems = cross(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg

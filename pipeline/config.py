"""YAML configuration: loading, inheritance, overrides and validation against constructors.

A configuration file has one section per stage kind plus ``source``, ``runner`` and ``export``.
A stage section names its ``backend``; every other key is a keyword argument of that backend's
constructor, so the file maps one-to-one onto code. Validation reads the constructor's signature:
an unknown key, a missing required key or a value of the wrong type is a one-line `ConfigError`
naming the key. A section set to ``null`` (or ``backend: none``) disables that stage.

``_base_: other.yaml`` inherits from another file (path relative to this one); sections merge
key by key, and a section that changes ``backend`` replaces the inherited section.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import UserError
from pipeline.registry import Registry, UnknownBackendError


class ConfigError(UserError, ValueError):
    """A configuration problem the user can fix; the message names the offending key (one bounded line)."""


@dataclass(frozen=True)
class StageSpec:
    """A configured stage: its kind, backend name and constructor keyword arguments."""

    kind: str
    backend: str
    params: dict[str, Any]


@dataclass(frozen=True)
class PipelineConfig:
    """A validated configuration.

    stages: the configured stages by kind, in file order; disabled kinds are absent.
    source, runner, export: raw sections, validated against their option classes by their users
    (see `check_arguments`).
    """

    stages: dict[str, StageSpec]
    source: dict[str, Any] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


_PLAIN_SECTIONS = ("source", "runner", "export")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping with ``_base_`` inheritance resolved."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    return merge_sections(read_yaml(path.parent / base), data)


def merge_sections(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge section by section; a section whose backend changes is replaced, not merged."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and value.get("backend", old.get("backend")) == old.get("backend"):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw mapping."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        section, key = dotted.split(".", 1)
        value = yaml.safe_load(raw)
        if key == "enabled" and value is False:
            data[section] = None
            continue
        current = data.get(section)
        data[section] = {**(current or {}), key: value}
    return data


def load_config(
    path: str | Path | None,
    kinds: Mapping[str, Registry],
    overrides: list[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Read, merge and validate a configuration.

    kinds: the stage kinds in chain order, each with the registry of its backends.
    defaults: a raw mapping used when ``path`` is None.
    """
    data = read_yaml(path) if path is not None else dict(defaults or {})
    data = apply_overrides(data, overrides or [])
    unknown = sorted(set(data) - set(kinds) - set(_PLAIN_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown config section {unknown[0]!r}; known: {', '.join([*_PLAIN_SECTIONS, *kinds])}"
        )
    stages: dict[str, StageSpec] = {}
    for kind, registry in kinds.items():
        section = data.get(kind)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{kind}: expected a mapping with a 'backend' key, got {section!r}")
        params = dict(section)
        backend = params.pop("backend", None)
        if backend in (None, "none"):
            continue
        if not isinstance(backend, str):
            raise ConfigError(f"{kind}.backend: expected a name, got {backend!r}")
        if backend not in registry and backend != "auto":
            try:
                registry.target(backend)
            except UnknownBackendError as exc:
                raise ConfigError(f"{kind}.backend: {exc}") from None
        stages[kind] = StageSpec(kind, backend, params)
    plain = {}
    for name in _PLAIN_SECTIONS:
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a mapping, got {section!r}")
        plain[name] = section
    return PipelineConfig(stages=stages, path=None if path is None else str(path), **plain)


def check_arguments(target: Any, params: Mapping[str, Any], where: str) -> None:
    """Check keyword arguments against a callable's signature and type hints.

    Raises ConfigError naming ``where.key`` for an unknown key, a missing required argument or a
    value whose type does not match the annotation.
    """
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    accepted = {
        name: p
        for name, p in signature.parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    for key in params:
        if key not in accepted:
            choices = ", ".join(accepted) or "none"
            raise ConfigError(f"{where}: unknown key {key!r} (accepted: {choices})")
    for name, parameter in accepted.items():
        if name not in params:
            if parameter.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}: missing required key {name!r}")
            continue
        hint = hints.get(name)
        if hint is not None and not _matches(params[name], hint):
            raise ConfigError(
                f"{where}.{name}: expected {_describe(hint)}, got {params[name]!r}"
            )


def build(target: Any, params: Mapping[str, Any], where: str) -> Any:
    """Validate ``params`` and call ``target(**params)``."""
    check_arguments(target, params, where)
    return target(**params)


def options_from(cls: type, section: Mapping[str, Any], where: str) -> Any:
    """Build an options dataclass from a config section (validated)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    return build(cls, section, where)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, (str, Path))
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
        return True
    if inspect.isclass(hint):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is not None:
        return repr(hint).replace("typing.", "")
    return getattr(hint, "__name__", repr(hint))

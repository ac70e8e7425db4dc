"""YAML configuration: loading, inheritance, overrides and validation against constructors.

A configuration file has one section per stage kind plus ``source``, ``runner`` and ``export``.
A stage section names its ``backend``; every other key is a keyword argument of that backend's
constructor, so the file maps one-to-one onto code. Validation reads the constructor's signature:
an unknown key, a missing required key or a value of the wrong type is a one-line `ConfigError`
naming the key. A section set to ``null`` (or ``backend: none``) disables that stage.

``_base_: other.yaml`` inherits from another file (path relative to this one); sections merge
key by key, and a section that changes ``backend`` replaces the inherited section.

``detector_settings: {yolox: {track: {...}, gallery: {...}}}`` holds stage settings measured for one
detector's tracks: they apply, merged as ``_base_`` merges, only when that detector runs (the
configured ``detect.backend`` or what ``auto`` chooses; `PipelineConfig.with_detector`), and
``--set`` overrides win over them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from pipeline.domains import Range
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
    detector_settings: detector backend -> every stage as configured when that detector runs (the
        file's ``detector_settings`` applied, then the overrides); empty once `with_detector` chose.
    """

    stages: dict[str, StageSpec]
    source: dict[str, Any] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    detector_settings: dict[str, dict[str, StageSpec]] = field(default_factory=dict)

    @property
    def detector_chosen(self) -> bool:
        """Whether the detector is fixed and its settings applied (`with_detector`): what runs is ``stages``."""
        detect = self.stages.get("detect")
        return not self.detector_settings and (detect is None or detect.backend != "auto")

    def changed_by_settings(self, backend: str) -> list[str]:
        """The stage sections ``backend``'s detector settings change (sorted; none without settings)."""
        stages = self.detector_settings.get(backend, {})
        return sorted(k for k, spec in stages.items() if k != "detect" and self.stages.get(k) != spec)

    def with_detector(self, backend: str, options: Mapping[str, Any]) -> PipelineConfig:
        """This configuration as it runs with the detector ``backend`` built from ``options`` (what
        ``detect: auto`` chose, or the configured backend): that backend's detector settings in place
        of the stage sections they change, and nothing left to choose."""
        stages = dict(self.detector_settings.get(backend, self.stages))
        stages["detect"] = StageSpec("detect", backend, dict(options))
        return dataclasses.replace(self, stages=stages, detector_settings={})


_PLAIN_SECTIONS = ("source", "runner", "export")
# Stage settings measured for one detector's tracks (``detector_settings: {yolox: {track: {...}}}``):
# used in place of the file's sections when that detector runs (`PipelineConfig.with_detector`).
DETECTOR_SETTINGS = "detector_settings"


MAX_CONFIG_BYTES = 1 << 20  # a configuration is a few kilobytes; anything this large is a mistake
MAX_YAML_NODES = 10_000  # values after expanding aliases: a "billion laughs" document is refused early
MAX_YAML_DEPTH = 64


def parse_yaml(text: str, where: str) -> Any:
    """Safe YAML, refusing documents whose aliases expand past MAX_YAML_NODES values or nest too deep.

    The node graph is measured before anything is built, so a tiny hostile document costs little
    time and memory; every error is one line naming ``where``.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{where}: not valid YAML{line}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except ConfigError:
        raise
    except ValueError as exc:  # a scalar the constructor cannot convert (e.g. an integer of 5000 digits)
        raise ConfigError(f"{where}: not valid YAML: {str(exc).splitlines()[0] if str(exc) else 'bad value'}") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Count the values ``root`` stands for once aliases are expanded (shared nodes measured once)."""
    sizes: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if finished:
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise ConfigError(f"{where}: YAML aliases expand to more than {MAX_YAML_NODES} values; refused")
            continue
        if key in sizes:
            continue
        if key in started:
            raise ConfigError(f"{where}: a YAML alias refers to a value that contains it; refused")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{where}: YAML nested more than {MAX_YAML_DEPTH} levels deep; refused")
        started.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping with ``_base_`` inheritance resolved."""
    path = Path(path)
    try:
        resolved = path.resolve()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is not a configuration (limit {MAX_CONFIG_BYTES})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on resolve()
        raise ConfigError(f"config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if resolved in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, resolved))
        raise ConfigError(f"{path}: _base_ cycle ({cycle})")
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: _base_ must be a file name, got {short_repr(base)}")
    return merge_sections(read_yaml(path.parent / base, (*_chain, resolved)), data)


def read_recipe(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """A training recipe (``_base_`` resolved) with the command line's flat ``KEY=VALUE`` overrides, each
    value parsed as YAML."""
    recipe = read_yaml(path)
    for item in overrides:
        key, _, value = item.partition("=")
        recipe[key] = parse_yaml(value, f"--set {short_repr(key)}")
    return recipe


def short_repr(value: Any) -> str:
    """A bounded repr of a config value for messages (never expands a large or shared structure)."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


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
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw mapping; a dotted key
    reaches into nested mappings (``detect.classic.split_by_size=false``).

    ``section.backend=NAME`` on a section whose backend is ``auto`` replaces the section with the branch
    ``auto`` holds for that backend (``detect.classic: {...}`` becomes the classic detector's options):
    the others are ``auto``'s own. Backend overrides apply before the rest, so ``--set
    detect.warmup_frames=5 --set detect.backend=classic`` keeps both."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    parsed = []
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"override {short_repr(item)}: expected section.key=value")
        section, key = dotted.split(".", 1)
        parsed.append((section, key, dotted, parse_yaml(raw, f"override {short_repr(dotted)}")))
    parsed.sort(key=lambda p: p[1] != "backend")  # stable: backends first, the rest in the order given
    for section, key, dotted, value in parsed:
        if key == "enabled" and value is False:
            data[section] = None
            continue
        current = data.get(section)
        if current is not None and not isinstance(current, dict):
            raise ConfigError(f"override {short_repr(dotted)}: section {short_repr(section)} is not a mapping")
        if key == "backend" and current and current.get("backend") == "auto" and value != "auto":
            branch = current.get(value) if isinstance(value, str) else None
            data[section] = {"backend": value, **(branch if isinstance(branch, dict) else {})}
            continue
        data[section] = _with_nested(current or {}, key.split("."), value, dotted)
    return data


def _with_nested(mapping: dict[str, Any], keys: list[str], value: Any, dotted: str) -> dict[str, Any]:
    """A copy of ``mapping`` with ``value`` at the path ``keys`` (mappings on the way made or copied)."""
    head, *rest = keys
    if not rest:
        return {**mapping, head: value}
    inner = mapping.get(head)
    if inner is not None and not isinstance(inner, dict):
        raise ConfigError(f"override {short_repr(dotted)}: {short_repr(head)} is not a mapping")
    return {**mapping, head: _with_nested(inner or {}, rest, value, dotted)}


def load_config(
    path: str | Path | None,
    kinds: Mapping[str, Registry],
    overrides: list[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Read, merge and validate a configuration.

    kinds: the stage kinds in chain order, each with the registry of its backends.
    defaults: a raw mapping used when ``path`` is None.
    overrides: ``section.key=value`` items; they win over the file and over its detector settings
        (``detector_settings.yolox=null`` drops a detector's settings).
    """
    data = read_yaml(path) if path is not None else dict(defaults or {})
    overrides = overrides or []
    own = [o for o in overrides if o.partition("=")[0].split(".", 1)[0].strip() == DETECTOR_SETTINGS]
    settings = apply_overrides({DETECTOR_SETTINGS: data.pop(DETECTOR_SETTINGS, None) or {}}, own)[DETECTOR_SETTINGS]
    overrides = [o for o in overrides if o not in own]
    config = _parse_sections(apply_overrides(data, overrides), kinds, path)
    by_detector = {}
    for backend, sections in _check_detector_settings(settings, kinds).items():
        # The detector's settings replace what the file says; the command line's overrides still win.
        with_settings = _parse_sections(apply_overrides(merge_sections(data, sections), overrides), kinds, path)
        by_detector[backend] = with_settings.stages
    return dataclasses.replace(config, detector_settings=by_detector)


def _check_detector_settings(settings: Any, kinds: Mapping[str, Registry]) -> dict[str, dict[str, Any]]:
    """``detector_settings`` validated: {detector backend: {stage section: its settings}}; a backend
    set to null has none."""
    if not isinstance(settings, dict):
        raise ConfigError(f"{DETECTOR_SETTINGS}: expected a mapping of detector backends, got {short_repr(settings)}")
    detectors = kinds.get("detect")
    checked = {}
    for backend, sections in settings.items():
        where = f"{DETECTOR_SETTINGS}.{backend}"
        if detectors is None or not isinstance(backend, str) or backend not in detectors:
            known = ", ".join(detectors.names()) if detectors is not None else "none"
            raise ConfigError(f"{DETECTOR_SETTINGS}: {short_repr(backend)} is not a detector backend (known: {known})")
        if sections is None:
            continue
        if not isinstance(sections, dict):
            raise ConfigError(f"{where}: expected a mapping of stage sections, got {short_repr(sections)}")
        for kind, section in sections.items():
            if kind == "detect" or kind not in kinds:
                others = ", ".join(k for k in kinds if k != "detect")
                raise ConfigError(f"{where}: {short_repr(kind)} is not a stage section it can set (accepted: {others})")
            if not isinstance(section, dict):
                raise ConfigError(f"{where}.{kind}: expected a mapping, got {short_repr(section)}")
        checked[backend] = sections
    return checked


def _parse_sections(data: dict[str, Any], kinds: Mapping[str, Registry], path: str | Path | None) -> PipelineConfig:
    unknown = [k for k in data if k not in kinds and k not in _PLAIN_SECTIONS]
    if unknown:
        raise ConfigError(
            f"unknown config section {short_repr(unknown[0])}; known: {', '.join([*_PLAIN_SECTIONS, *kinds])}"
        )
    stages: dict[str, StageSpec] = {}
    for kind, registry in kinds.items():
        section = data.get(kind)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{kind}: expected a mapping with a 'backend' key, got {short_repr(section)}")
        params = dict(section)
        backend = params.pop("backend", None)
        if backend in (None, "none"):
            continue
        if not isinstance(backend, str):
            raise ConfigError(f"{kind}.backend: expected a name, got {short_repr(backend)}")
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
            raise ConfigError(f"{name}: expected a mapping, got {short_repr(section)}")
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
        hints = typing.get_type_hints(function, include_extras=True)
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
            raise ConfigError(f"{where}: unknown key {short_repr(key)} (accepted: {choices})")
    for name, parameter in accepted.items():
        if name not in params:
            if parameter.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}: missing required key {name!r}")
            continue
        hint = hints.get(name)
        if hint is not None and not _matches(params[name], hint):
            raise ConfigError(
                f"{where}.{name}: expected {_describe(hint)}{_finite_note(params[name])}, got {short_repr(params[name])}"
            )


def build(target: Any, params: Mapping[str, Any], where: str) -> Any:
    """Validate ``params`` and call ``target(**params)``.

    A ValueError of the constructor (a combination of values it refuses) is a ConfigError naming
    ``where``; the original stays chained for ``--debug``.
    """
    check_arguments(target, params, where)
    try:
        return target(**params)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def check_fields(options: Any, where: str) -> None:
    """Check a dataclass instance's fields against their annotated domains (for ``__post_init__``)."""
    check_arguments(type(options), {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}, where)


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
    if origin is Annotated:
        ranges = [m for m in hint.__metadata__ if isinstance(m, Range)]
        return _matches(value, args[0]) and all(r.contains(value) for r in ranges)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is float:  # finite: a NaN or infinite time-out, rate or threshold is never meant
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
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


def _finite_note(value: Any) -> str:
    return " (finite)" if isinstance(value, float) and not math.isfinite(value) else ""


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        return " ".join([_describe(args[0]), *(str(m) for m in hint.__metadata__ if isinstance(m, Range))])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is not None:
        return repr(hint).replace("typing.", "")
    return getattr(hint, "__name__", repr(hint))

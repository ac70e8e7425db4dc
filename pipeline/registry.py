"""Explicit, lazy registries of backends.

Each registry maps a backend name to ``"package.module:ClassName"``. The module is imported only when
that backend is built, so one backend's optional dependency (paddle, ultralytics, ...) never breaks
the others, and importing the registry does no work.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping


class UnknownBackendError(ValueError):
    """A configuration names a backend that no registry entry provides."""


class Registry:
    """Backends of one kind (detector, tracker, segmenter, ...), by name."""

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        for name, target in entries.items():
            if ":" not in target:
                raise ValueError(f"{kind} backend {name!r}: target {target!r} is not 'module:Class'")
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def target(self, name: str) -> str:
        """The ``module:Class`` string of a backend, or an error listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownBackendError(
                f"unknown {self.kind} backend {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def load(self, name: str) -> type:
        """Import and return the backend class (imports its module on first use)."""
        module_name, _, attr = self.target(name).partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ImportError(f"{self.kind} backend {name!r}: {module_name} has no {attr}") from None

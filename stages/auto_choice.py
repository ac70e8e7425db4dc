"""``backend: auto`` for stages with several model-file backends: build the best one that works here.

A stage package lists its candidates best first (`AutoCandidates`), noting the better options it had
to leave out (a model file not in the models directory, weights the user has not opted in to).
`build_first_usable` builds them in turn; one that cannot be used here (corrupt file, wrong input
shape, missing runtime) is one warning line, then the next is tried. It logs once which backend was
chosen and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.registry import Registry

log = logging.getLogger("gaitscope")


@dataclass(frozen=True)
class BackendCandidate:
    """One backend an ``auto`` stage may build: its name, the options to build it with, and why.

    reason: a short phrase for the log line that says which backend was chosen.
    """

    backend: str
    options: dict[str, Any]
    reason: str


@dataclass
class AutoCandidates:
    """The candidates of an ``auto`` stage, best first, and notes on the options left out.

    Each note remembers how many candidates came before it, so the log line of a choice mentions
    only what was better than the choice and why it was not taken.
    """

    candidates: list[BackendCandidate] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)

    def add(self, candidate: BackendCandidate) -> None:
        self.candidates.append(candidate)

    def skip(self, note: str) -> None:
        """A better option than the next candidate that cannot be used (a missing file, no opt-in)."""
        self.notes.append((len(self.candidates), note))

    def notes_before(self, index: int) -> list[str]:
        """The notes on options better than candidate ``index``."""
        return [note for position, note in self.notes if position <= index]


def split_options(
    kind: str, registry: Registry, params: Mapping[str, Any], accepted: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """An auto section -> (its own options, {backend: that backend's options}), all validated.

    accepted: the auto section's own keys (besides one mapping per backend name).
    """
    from pipeline.config import ConfigError, check_arguments

    own, branches = {}, {}
    for key, value in params.items():
        if key in registry:
            if not isinstance(value, dict):
                raise ConfigError(f"{kind}.{key}: expected a mapping of {key} options")
            check_arguments(registry.load(key), value, f"{kind}.{key}")
            branches[key] = dict(value)
        elif key in accepted:
            own[key] = value
        else:
            choices = ", ".join([*accepted, *(f"{name} (its options)" for name in registry.names())])
            raise ConfigError(f"{kind}: unknown key {key!r} for backend auto (accepted: {choices})")
    models_dir = own.get("models_dir")
    if models_dir is not None and not isinstance(models_dir, str):
        raise ConfigError(f"{kind}.models_dir: expected a path, got {models_dir!r}")
    return own, branches


def build_first_usable(kind: str, registry: Registry, found: AutoCandidates) -> tuple[str, Any]:
    """(backend name, built stage) of the first candidate that builds; logs the choice once."""
    from pipeline.config import ConfigError, build
    from stages.model_files import ModelFileError

    unusable = []
    for index, candidate in enumerate(found.candidates):
        try:
            stage = build(registry.load(candidate.backend), candidate.options, f"{kind}.{candidate.backend}")
        except (ModelFileError, FileNotFoundError, ImportError) as error:
            log.warning("%s: %s; trying the next choice", kind, error)
            unusable.append(f"{candidate.backend} unusable")
            continue
        notes = [*found.notes_before(index), *unusable]
        log.info("%s: %s (%s%s)", kind, candidate.backend, candidate.reason, f"; {'; '.join(notes)}" if notes else "")
        return candidate.backend, stage
    notes = [*found.notes_before(len(found.candidates)), *unusable]
    raise ConfigError(f"{kind}: no backend could be built ({'; '.join(notes)})")

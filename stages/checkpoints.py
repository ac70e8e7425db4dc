"""What every stage's weights files share: their digest (manifests and model version strings), and the
vetting of pickled checkpoints from a path a user gives before a library unpickles them."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



class UnsafeCheckpointError(UserError):
    """A weights file refused before any library unpickles it (it could run code while loading)."""


@dataclass(frozen=True)
class PickleAllowlist:
    """What a checkpoint format may reference, as ``module.name`` strings.

    callables: may be called while loading (tensor rebuilders, plain containers).
    data: referenced only, never called (storage types, dtypes).
    module_packages: ``torch.nn.Module`` subclasses under these packages may be created the way
        pickle restores objects (``cls.__new__`` and a state dict), never by calling the class.
    """

    callables: frozenset[str]
    data: frozenset[str] = frozenset()
    module_packages: tuple[str, ...] = ()


TORCH_TENSORS = PickleAllowlist(
    callables=frozenset({
        "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state", "collections.OrderedDict", "builtins.set",
        "builtins.frozenset", "torch.Size", "torch.device",
        # numpy scalars and arrays in training metrics
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar", "numpy.dtype", "_codecs.encode",
    }),
    data=frozenset({"numpy.ndarray"}),
)

_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol-2 pickles written the Python 2 way


def vet_torch_pickle(path: str | Path, allow: PickleAllowlist, what: str = "weights") -> None:
    """Refuse a torch ``.pt``/``.pth`` file unless its pickle references only what ``allow`` permits.

    The pickle is walked with stand-ins for every global: nothing of the file is imported, called or
    built, so a malicious file runs nothing here. Accepted: torch's zip format holding one
    ``data.pkl``. Refused (UnsafeCheckpointError, one line): any other global (``os.system``,
    ``builtins.eval``, ...), a class called instead of restored, TorchScript archives, the legacy
    format, files that are not torch checkpoints.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith(".pkl")]
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                raise UnsafeCheckpointError(f"{what} {path} refused: a TorchScript archive (it carries code); "
                                            "give a checkpoint saved with torch.save or an exported model")
            if [n.rsplit("/", 1)[-1] for n in pickles] != ["data.pkl"]:
                raise UnsafeCheckpointError(f"{what} {path} refused: not a torch checkpoint (expected one data.pkl)")
            data = archive.read(pickles[0])
    except zipfile.BadZipFile:
        raise UnsafeCheckpointError(f"{what} {path} refused: not a zip-format torch checkpoint (pickled files of the "
                                    "legacy format are not loaded); re-save it with torch.save") from None
    except OSError as exc:
        raise UnsafeCheckpointError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    problems: list[str] = []
    try:
        _VettingUnpickler(io.BytesIO(data), allow, problems).load()
    except _Refused as exc:
        problems.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a malformed pickle: report, never crash
        problems.append(f"malformed pickle ({type(exc).__name__})")
    if problems:
        raise UnsafeCheckpointError(f"{what} {path} refused: it {problems[0]}, which this format never needs "
                                    "(unpickling it could run code); use a trusted file or an exported model")


class _Refused(Exception):
    pass


class _Value(dict):
    """Stand-in for anything a pickle builds: takes items, appends, attributes and state, does nothing."""

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def add(self, item: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _stand_in(full_name: str, role: str, problems: list[str]) -> type:
    """A class standing for the global ``full_name``; calling it is checked against its role."""

    class _Meta(type):
        def __call__(cls, *args: object, **kwargs: object) -> object:
            if role != "callable":
                problems.append(f"calls {full_name}")
            return _Value()

    return _Meta(full_name, (_Value,), {})


class _VettingUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, allow: PickleAllowlist, problems: list[str]) -> None:
        super().__init__(file)
        self.allow = allow
        self.problems = problems

    def find_class(self, module: str, name: str) -> object:
        module = _ALIASES.get(module, module)
        full = f"{module}.{name}"
        if full in self.allow.callables:
            return _stand_in(full, "callable", self.problems)
        if full in self.allow.data or _is_torch_data(module, name):
            return _stand_in(full, "data", self.problems)
        if any(module == p or module.startswith(p + ".") for p in self.allow.module_packages) and _is_module_class(
                module, name):
            return _stand_in(full, "module", self.problems)
        raise _Refused(f"references {full}")

    def persistent_load(self, pid: object) -> object:
        return _Value()


def _is_torch_data(module: str, name: str) -> bool:
    """torch storage types and dtypes (``torch.FloatStorage``, ``torch.float16``)."""
    if module != "torch":
        return False
    import torch

    value = getattr(torch, name, None)
    return isinstance(value, torch.dtype) or (name.endswith("Storage") and isinstance(value, type))


def _is_module_class(module: str, name: str) -> bool:
    """Whether ``module.name`` is a torch.nn.Module subclass (the module is imported: an allowed package)."""
    import importlib

    import torch

    try:
        value = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(value, type) and issubclass(value, torch.nn.Module)

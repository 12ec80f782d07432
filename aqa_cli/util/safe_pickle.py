"""Load annotation pickles without letting them run code.

A pickle can call any importable function while it loads (`os.system`, `builtins.eval`, ...). The
MTL-AQA annotation files need none: they are dicts, lists and tuples of numbers and strings, and the
optional third-party files and FineDiving's annotations add numpy arrays and scalars. `load_pickle`
admits exactly those globals, by name, and refuses everything else before it is imported or called;
`numpy_names` narrows the numpy ones to the few a given file needs (FineDiving's coarse file: `scalar`
and `dtype` only).
"""

from __future__ import annotations

import builtins
import collections
import importlib
import pickle
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from aqa_cli.util.errors import AqaError

# The builtin types that pickles of plain data reference by name (sets and frozensets before protocol 4,
# bytearray, complex); "__builtin__" is how protocol 0-2 pickles written by Python 2 spell the module.
# Deliberately not the whole builtins module: it also holds eval, exec, getattr, __import__ and open.
_BUILTIN_NAMES = ("set", "frozenset", "bytearray", "complex")
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (module, name): getattr(builtins, name)
        for module in ("builtins", "__builtin__")
        for name in _BUILTIN_NAMES
    },
    ("collections", "OrderedDict"): collections.OrderedDict,
}

# What numpy's own pickles of arrays and scalars reference, in numpy 1 (`numpy.core`) and numpy 2
# (`numpy._core`) spellings; either is resolved in the installed numpy's own package, so loading never
# imports numpy 2's deprecated `numpy.core` alias.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *{
        (f"numpy.{package}.{module}", name)
        for package in ("core", "_core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    },
}


def _numpy_global(module: str, name: str) -> Any:
    import numpy  # only the optional third-party files need it

    installed_core = "numpy._core" if int(numpy.__version__.split(".")[0]) >= 2 else "numpy.core"
    module = re.sub(r"^numpy\._?core(?=\.)", installed_core, module)
    return getattr(importlib.import_module(module), name)


def _numpy_1(module: str, name: str) -> tuple[str, str]:
    """A numpy global in its numpy 1 spelling (`numpy._core.x` is `numpy.core.x`)."""
    return re.sub(r"^numpy\._core(?=\.)", "numpy.core", module), name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose `find_class` resolves only allow-listed data types, never arbitrary code."""

    def __init__(
        self,
        file: Any,
        path: Path,
        allow_numpy: bool = False,
        numpy_names: Collection[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(file)
        self._path = path
        self._allow_numpy = allow_numpy
        self._numpy_names = None if numpy_names is None else {_numpy_1(*pair) for pair in numpy_names}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if (module, name) in _NUMPY_GLOBALS:
            named = self._numpy_names is None or _numpy_1(module, name) in self._numpy_names
            if self._allow_numpy and named:
                return _numpy_global(module, name)
            if self._allow_numpy:
                raise AqaError(
                    f"refusing to load {self._path}: it references {module}.{name}, which this kind of file "
                    "never needs; use the annotation files of the official release"
                )
            raise AqaError(
                f"refusing to load {self._path}: it holds numpy data ({module}.{name}), which this kind of "
                "file never does; use the annotation files of the official release"
            )
        raise AqaError(
            f"refusing to load {self._path}: it references {module}.{name}, which an annotation file "
            "never needs; it may be malicious (use the annotation files of the official release)"
        )


def load_pickle(
    path: Path | str, allow_numpy: bool = False, numpy_names: Collection[tuple[str, str]] | None = None
) -> Any:
    """Unpickle `path` admitting only builtin data (and numpy arrays/scalars with `allow_numpy`: all of
    them, or only the `(module, name)` pairs in `numpy_names`, in either numpy spelling).

    Every failure is an `AqaError` naming the file: missing, unreadable, not a pickle, truncated, or
    referencing anything outside the allow-list.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return RestrictedUnpickler(file, path, allow_numpy, numpy_names).load()
    except AqaError:
        raise
    except FileNotFoundError:
        raise AqaError(f"{path} does not exist: check the path") from None
    except IsADirectoryError:
        raise AqaError(f"{path} is a folder, not a pickle file: point at the .pkl file inside it") from None
    except PermissionError:
        raise AqaError(f"cannot read {path}: permission denied; check the file's permissions") from None
    except EOFError:
        problem = "empty" if path.stat().st_size == 0 else "truncated (it ends mid-pickle)"
        raise AqaError(f"{path} is {problem}: copy or download it again") from None
    except Exception as error:  # the unpickler raises many types on malformed input
        problem = "truncated" if "truncated" in str(error) else "not a valid pickle"
        raise AqaError(f"{path} is {problem} ({error}): copy or download it again") from None

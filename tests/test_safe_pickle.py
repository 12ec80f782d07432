"""The restricted unpickler: real annotation files load as plain pickle loads them; code never runs."""

from __future__ import annotations

import collections
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_pickle import load_pickle
from tests.helpers import SHARED_MTL_AQA

needs_shared = pytest.mark.skipif(
    not SHARED_MTL_AQA.is_dir(), reason=f"real MTL-AQA annotations not found at {SHARED_MTL_AQA}"
)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def global_call(module: str, name: str, argument: str) -> bytes:
    """A protocol-0 pickle that calls `module.name(argument)` on load, spelled exactly as given."""
    return f"c{module}\n{name}\n(V{argument}\ntR.".encode()


@needs_shared
@pytest.mark.parametrize("name", ["final_annotations_dict.pkl", "train_split_0.pkl", "test_split_0.pkl"])
def test_real_annotation_files_load_as_plain_pickle_does(name: str) -> None:
    path = SHARED_MTL_AQA / name
    with path.open("rb") as file:
        expected = pickle.load(file)
    assert load_pickle(path) == expected


@needs_shared
def test_real_third_party_file_needs_and_gets_numpy() -> None:
    path = SHARED_MTL_AQA / "third_party" / "MUSDL" / "augmented_final_annotations_dict.pkl"
    with pytest.raises(AqaError, match="numpy"):
        load_pickle(path)
    records = load_pickle(path, allow_numpy=True)
    with warnings.catch_warnings(), path.open("rb") as file:
        warnings.simplefilter("ignore", DeprecationWarning)  # plain pickle imports numpy.core
        expected = pickle.load(file)
    assert records.keys() == expected.keys()
    assert all(
        np.array_equal(records[key]["judge_scores"], expected[key]["judge_scores"]) for key in expected
    )


def _command(kind: str, marker: Path) -> str:
    """Code in the language `kind` of callable understands that creates `marker`."""
    return f"touch {marker}" if kind == "shell" else f"open({str(marker)!r}, 'w')"


@pytest.mark.parametrize(
    ("module", "name", "kind"),
    [
        ("os", "system", "shell"),
        ("posix", "system", "shell"),
        ("subprocess", "getoutput", "shell"),
        ("builtins", "exec", "python"),
        ("builtins", "eval", "python"),
        ("__builtin__", "eval", "python"),
    ],
)
def test_code_in_a_pickle_is_refused_and_never_runs(
    tmp_path: Path, module: str, name: str, kind: str
) -> None:
    marker = tmp_path / "marker"
    payload = global_call(module, name, _command(kind, marker))
    path = write(tmp_path / "final_annotations_dict.pkl", payload)
    for allow_numpy in (False, True):
        with pytest.raises(AqaError, match=rf"refusing to load {path}: it references {module}\.{name}\b"):
            load_pickle(path, allow_numpy=allow_numpy)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: plain pickle runs it
    assert marker.exists()


class _Exploit:
    """What an attacker pickles: an object whose reduction is a call to os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def test_a_reduce_exploit_nested_in_real_looking_data_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    records = {(1, 1): {"final_score": 88.0, "difficulty": 3.2, "end_frame": _Exploit(f"touch {marker}")}}
    path = write(tmp_path / "final_annotations_dict.pkl", pickle.dumps(records, protocol=3))
    with pytest.raises(AqaError, match=r"system, which an annotation file never needs; it may be malicious"):
        load_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["getattr", "__import__", "open", "compile", "globals", "type"])
def test_dangerous_builtins_are_refused_though_they_are_builtins(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "x.pkl", global_call("builtins", name, "os"))
    with pytest.raises(AqaError, match=rf"builtins\.{name}"):
        load_pickle(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AqaError, match=r"missing\.pkl does not exist"):
        load_pickle(tmp_path / "missing.pkl")


def test_a_folder_is_not_a_pickle(tmp_path: Path) -> None:
    with pytest.raises(AqaError, match="is a folder"):
        load_pickle(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"dive,score\n1,88.0\n", "is not a valid pickle"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is not a valid pickle"),
    ],
)
def test_files_that_are_not_pickles(tmp_path: Path, content: bytes, problem: str) -> None:
    path = write(tmp_path / "final_annotations_dict.pkl", content)
    with pytest.raises(AqaError, match=f"{path} {problem}"):
        load_pickle(path)


def test_every_truncation_of_an_annotation_pickle_is_reported(tmp_path: Path) -> None:
    records = {
        (event, dive): {"final_score": 50.0 + dive, "difficulty": 3.0} for event in (1, 2) for dive in (1, 2)
    }
    whole = pickle.dumps(records, protocol=3)
    for length in range(1, len(whole)):
        path = write(tmp_path / f"cut{length}.pkl", whole[:length])
        with pytest.raises(AqaError, match=f"{path} is truncated"):
            load_pickle(path)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([9.5, 8.0, 7.5]),
        np.array(["a", "bc"]),
        np.float64(3.2),
        np.int64(7),
    ],
    ids=repr,
)
@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_data_only_with_allow_numpy(tmp_path: Path, value: object, protocol: int) -> None:
    path = write(tmp_path / "third_party.pkl", pickle.dumps({"judge_scores": value}, protocol=protocol))
    with pytest.raises(AqaError, match="it holds numpy data"):
        load_pickle(path)
    loaded = load_pickle(path, allow_numpy=True)["judge_scores"]
    assert type(loaded) is type(value)
    np.testing.assert_array_equal(loaded, value)


def test_numpy_1_spelling_loads_without_importing_the_deprecated_alias(tmp_path: Path) -> None:
    numpy_2_pickle = pickle.dumps(np.array([1.5, 2.5]), protocol=3)
    assert b"numpy._core.multiarray" in numpy_2_pickle
    path = write(tmp_path / "old.pkl", numpy_2_pickle.replace(b"numpy._core.", b"numpy.core."))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        np.testing.assert_array_equal(load_pickle(path, allow_numpy=True), [1.5, 2.5])


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
_hashables = st.recursive(_scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3))
_data = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_hashables, inner, max_size=4)
        | st.builds(collections.OrderedDict, st.dictionaries(st.text(), inner, max_size=3))
        | st.sets(_hashables, max_size=4)
        | st.builds(bytearray, st.binary(max_size=8))
        | st.builds(complex, st.floats(allow_nan=False), st.floats(allow_nan=False))
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=_data, protocol=st.integers(3, pickle.HIGHEST_PROTOCOL))
def test_builtin_data_round_trips(
    tmp_path_factory: pytest.TempPathFactory, value: object, protocol: int
) -> None:
    path = write(tmp_path_factory.mktemp("round") / "data.pkl", pickle.dumps(value, protocol=protocol))
    loaded = load_pickle(path)
    assert loaded == value
    assert type(loaded) is type(value)

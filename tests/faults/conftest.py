import pytest

from tests.faults.stages import Inputs, Stage, all_stages


def pytest_collection_modifyitems(items):
    """Every test here is part of the fault suite: `pytest -m faults` runs it alone, `-m "not faults"` the rest."""
    here = str(__file__).rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def stages(tmp_path_factory) -> dict[str, Stage]:
    """Every stage under test, sharing one set of real inputs (built on first use)."""
    root = tmp_path_factory.mktemp("faults")
    return all_stages(Inputs(root / "inputs"), root)

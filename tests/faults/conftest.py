import pytest
from stages import Inputs, Stage, all_stages


@pytest.fixture(scope="session")
def stages(tmp_path_factory) -> dict[str, Stage]:
    """Every stage under test, sharing one set of real inputs (built on first use)."""
    root = tmp_path_factory.mktemp("faults")
    return all_stages(Inputs(root / "inputs"), root)

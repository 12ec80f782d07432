import pytest
from helpers import run_aqa


@pytest.fixture
def aqa():
    return run_aqa


from mtl_aqa_trees import small_annotations  # noqa: E402, F401 - a fixture shared by the MTL-AQA tests

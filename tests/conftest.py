import signal

import pytest

from tests.helpers import run_aqa


@pytest.fixture(autouse=True)
def ctrl_c_as_from_a_terminal():
    """Commands under test inherit SIGINT's disposition from pytest: if it were ignored (pytest started in
    the background by a shell, or after an in-process `aqa_cli.cli.main`, which ignores a late Ctrl-C),
    they would be deaf to the Ctrl-C the tests send, and those tests would pass without testing."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def aqa():
    return run_aqa


from tests.mtl_aqa_trees import small_annotations  # noqa: E402, F401 - a fixture shared by the MTL-AQA tests

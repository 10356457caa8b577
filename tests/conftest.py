import pytest
from helpers import REPO


@pytest.fixture(scope="session")
def repo():
    return REPO

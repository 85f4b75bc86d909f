from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import faults
from tests.reliability._report import Report


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Where a reliability test records its figures (see `_report`)."""
    target = os.environ.get("ES_REPORT")
    return Report(request.node.nodeid, Path(target) if target else None)


@pytest.fixture(autouse=True)
def no_faults_left() -> Iterator[None]:
    """In-process fault rules never leak from one test into the next."""
    yield
    faults.configure(None)
